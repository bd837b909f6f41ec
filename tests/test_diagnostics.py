"""fastnorm.diagnostics and ``python -m fastnorm demo``: the lecture's findings, the statistics against NumPy, the
backward pass against a float64 re-derivation, the recorder, the figures, bad input."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastnorm
from fastnorm import demo
from fastnorm.diagnostics import ACTIVATIONS, INITS, Recorder, activation_stats, tensor_stats


def stds(stats, what="activations"):
    return np.array([getattr(layer, what).std for layer in stats.layers])


# -- the lecture's findings, at its size (6 layers of 4096) -------------------------------------------------------

def test_small_weights_collapse_activations_to_zero():
    s = stds(activation_stats(activation="tanh", init="small", std=0.01))
    # tanh is linear near 0: each layer scales the std by 0.01 * sqrt(4096) = 0.64
    ratios = s[1:] / s[:-1]
    assert np.all(ratios < 0.7) and np.all(ratios[1:] > 0.55)
    assert s[-1] < 0.1 * s[0]
    # the "below 1e-3 of the first layer's" needs a deeper or narrower net than 6 x 4096 (0.64^5 = 0.1):
    # the 2016 lecture's 10 layers of 500 (0.22 per layer)
    deep = stds(activation_stats(depth=10, width=500, batch_size=1000, activation="tanh", init="small", std=0.01))
    assert deep[-1] < 1e-3 * deep[0]


def test_large_weights_saturate_tanh():
    big = activation_stats(activation="tanh", init="small", std=0.05)
    xavier = activation_stats(activation="tanh", init="xavier_normal")
    for b, x in zip(big.layers, xavier.layers):
        assert b.activations.saturated > 0.3  # |tanh| > 0.99: a third of all units in every layer
        assert x.activations.saturated < 0.01
        assert b.activations.std > 0.84  # mass piled at -1 and +1


def test_xavier_with_tanh_and_he_with_relu_keep_the_scale():
    tanh_xavier = stds(activation_stats(activation="tanh", init="xavier_normal"))
    assert tanh_xavier.max() / tanh_xavier.min() < 2.5  # 2.14 measured: tanh still contracts slowly
    assert tanh_xavier[1:].max() / tanh_xavier[1:].min() < 2.0
    relu_he = stds(activation_stats(activation="relu", init="kaiming_normal"))
    assert relu_he.max() / relu_he.min() < 1.1


def test_xavier_with_relu_shrinks_layer_by_layer():
    s = stds(activation_stats(activation="relu", init="xavier_normal"))
    ratios = s[1:] / s[:-1]
    assert np.all((ratios > 0.65) & (ratios < 0.75))  # ReLU halves the second moment: 1/sqrt(2) per layer


@pytest.mark.parametrize("activation,init,std", [("tanh", "small", 0.01), ("tanh", "small", 0.05),
                                                 ("relu", "xavier_normal", None), ("relu", "small", 0.01)])
def test_batch_norm_makes_every_layer_unit_scale(activation, init, std):
    stats = activation_stats(activation=activation, init=init, std=std, norm="batch", width=1024)
    np.testing.assert_allclose(stds(stats, "preactivations"), 1.0, atol=1e-3)


# -- correctness of the statistics and of the backward pass --------------------------------------------------------

def test_tensor_stats_against_numpy(rng):
    x = np.maximum(rng.standard_normal((100, 30)), 0).astype(np.float32)
    x[:, 3] = 0  # a dead unit
    s = tensor_stats(x, activation="relu", bins=10)
    x64 = x.astype(np.float64)
    assert s.mean == pytest.approx(x64.mean(), rel=1e-12) and s.std == pytest.approx(x64.std(), rel=1e-10)
    assert s.dead == pytest.approx(1 / 30) and s.zero == pytest.approx(np.mean(x == 0))
    assert s.saturated is None and s.counts.sum() == x.size and len(s.edges) == 11
    h = np.tanh(3 * rng.standard_normal((50, 8)))
    t = tensor_stats(h, activation="tanh")
    assert t.edges[0] == -1 and t.edges[-1] == 1 and t.dead is None
    assert t.saturated == np.mean(np.abs(h) > 0.99) and 0 < t.saturated < 1


def test_saturation_fraction_is_counted_exactly():
    h = np.array([[-0.995, 0.5, 0.991, 0.2]])
    assert tensor_stats(h, activation="tanh").saturated == 0.5
    assert tensor_stats(np.array([[0.005, 0.5, 0.999, 0.3]]), activation="sigmoid").saturated == 0.5


@pytest.mark.parametrize("norm", [None, "batch", "layer"])
def test_backward_matches_a_float64_derivation(norm):
    """activation_stats' gradients against the same net re-derived in float64 NumPy from its weights."""
    depth, width, batch, seed = 3, 16, 8, 4
    stats = activation_stats(depth=depth, width=width, batch_size=batch, activation="tanh", init="xavier_normal",
                             norm=norm, backward=True, seed=seed)
    g = fastnorm.random.Generator(seed)  # the same draws, in the same order
    h = g.standard_normal((batch, width)).astype(np.float64)
    ws, cache = [], []
    for _ in range(depth):
        w = fastnorm.init.xavier_normal((width, width), layout="in_out", rng=g).astype(np.float64)
        z = h @ w
        if norm is None:
            a = z
        else:
            ax = 0 if norm == "batch" else 1
            mu, var = z.mean(axis=ax, keepdims=True), z.var(axis=ax, keepdims=True)
            a = (z - mu) / np.sqrt(var + 1e-5)
        cache.append((h, z, a))
        ws.append(w)
        h = np.tanh(a)
    dh = g.standard_normal((batch, width)).astype(np.float64)
    for layer in range(depth, 0, -1):
        h_in, z, a = cache[layer - 1]
        np.testing.assert_allclose(stats[layer - 1].gradients.std, dh.std(), rtol=1e-4)
        da = dh * (1 - np.tanh(a) ** 2)
        if norm is None:
            dz = da
        else:
            ax = 0 if norm == "batch" else 1
            n = z.shape[ax]
            rstd = 1 / np.sqrt(z.var(axis=ax, keepdims=True) + 1e-5)
            dz = rstd / n * (n * da - da.sum(axis=ax, keepdims=True) - a * (da * a).sum(axis=ax, keepdims=True))
        dw = h_in.T @ dz
        assert stats[layer - 1].weight_grad_norm == pytest.approx(np.linalg.norm(dw), rel=1e-4)
        dh = dz @ ws[layer - 1].T


def test_recorder_on_a_user_network(rng):
    rec = Recorder(activation="relu", bins=20)
    h = rng.standard_normal((64, 32)).astype(np.float32)
    weights = [rng.standard_normal((32, 32)).astype(np.float32) * np.sqrt(2 / 32) for _ in range(3)]
    outputs = []
    for i, w in enumerate(weights):
        z = h @ w
        h = fastnorm.relu(z)
        rec.record(f"fc{i}", h, preactivations=z)
        outputs.append(h)
    rec.record_gradient("fc2", np.ones_like(h), weight_gradient=np.ones((32, 32)))
    result = rec.result({"model": "mine"})
    assert [layer.name for layer in result.layers] == ["fc0", "fc1", "fc2"]
    for layer, h in zip(result.layers, outputs):
        assert layer.activations.std == pytest.approx(h.astype(np.float64).std(), rel=1e-10)
    assert result[2].weight_grad_norm == pytest.approx(32.0) and result[0].gradients is None
    text = result.table()
    assert "fc1" in text and "dW_norm" in text and "grad_std" in text
    frame = result.to_dataframe()
    assert list(frame.index) == ["fc0", "fc1", "fc2"] and "act_std" in frame.columns
    assert result.config == {"model": "mine"}


def test_same_seed_same_statistics_and_thread_count_does_not_matter():
    a = activation_stats(depth=2, width=256, activation="gelu", init="kaiming_uniform", backward=True, seed=7,
                         num_threads=1)
    b = activation_stats(depth=2, width=256, activation="gelu", init="kaiming_uniform", backward=True, seed=7,
                         num_threads=2)
    assert a.rows() == b.rows()


@pytest.mark.parametrize("activation", [a for a in ACTIVATIONS])
def test_every_activation_runs(activation):
    s = activation_stats(depth=2, width=64, batch_size=16, activation=activation, backward=True)
    assert all(np.isfinite(layer.activations.std) and layer.weight_grad_norm is not None for layer in s.layers)


@pytest.mark.parametrize("init", INITS)
def test_every_init_runs(init):
    s = activation_stats(depth=2, width=64, batch_size=16, init=init, norm="layer")
    assert len(s) == 2


def test_bad_input():
    for name in ("depth", "width", "batch_size"):
        with pytest.raises(ValueError, match=f"{name}: expected an integer >= 1"):
            activation_stats(**{name: 0})
    with pytest.raises(ValueError, match="activation: unknown 'swish'; valid: 'tanh', 'sigmoid'"):
        activation_stats(activation="swish")
    with pytest.raises(ValueError, match="init: unknown 'he'; valid: 'small', 'normal'"):
        activation_stats(init="he")
    with pytest.raises(ValueError, match="norm: unknown 'group'"):
        activation_stats(norm="group")
    with pytest.raises(ValueError, match="std: expected > 0"):
        activation_stats(init="small", std=0)
    with pytest.raises(ValueError, match="bins"):
        Recorder(bins=0)
    with pytest.raises(ValueError, match="NaN"):
        tensor_stats(np.array([[1.0, np.nan]]))


# -- the demo -------------------------------------------------------------------------------------------------------

def test_figure_has_one_panel_per_layer(tmp_path):
    pytest.importorskip("matplotlib")
    stats = activation_stats(depth=4, width=128, activation="relu", init="xavier_normal")
    fig = stats.plot(tmp_path / "f.png")
    assert len(fig.axes) == 4
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def run_demo(*args):
    return subprocess.run([sys.executable, "-m", "fastnorm", "demo", *args], capture_output=True, text=True)


def test_demo_prints_tables_and_writes_figures(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "figs"
    r = run_demo("--width", "256", "--depth", "5", "--config", "tanh-std0.01", "--config", "relu-he+bn",
                 "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "== tanh-std0.01" in r.stdout and "== relu-he+bn" in r.stdout and "layer5" in r.stdout
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["relu-he+bn.png", "tanh-std0.01.png"]
    # a row of 5 panels: the figure is 2.2 inches per panel at 80 dpi
    width = int.from_bytes((out / "tanh-std0.01.png").read_bytes()[16:20], "big")
    assert width == pytest.approx(5 * 2.2 * 80, abs=2)
    assert (out / "tables.txt").read_text().count("== ") == 2


def test_demo_without_matplotlib_prints_how_to_get_figures(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "_have_matplotlib", lambda: False)
    assert demo.main(["--width", "64", "--config", "tanh-xavier", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "== tanh-xavier" in out and "pip install 'fastnorm[plot]'" in out
    assert not list(tmp_path.glob("*.png"))


def test_demo_default_runs_every_configuration():
    assert len(demo.all_configs()) == 10
    assert demo.config_kwargs("relu-he+bn") == {"activation": "relu", "init": "kaiming_normal", "std": None,
                                                "norm": "batch"}


def test_demo_refuses_an_unwritable_folder_before_working(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    r = run_demo("--out", str(blocker / "figs"))
    assert r.returncode != 0 and "cannot be written" in r.stderr
    assert "fastnorm demo:" not in r.stdout  # no work started
    r = run_demo("--depth", "0", "--out", str(tmp_path))
    assert r.returncode == 2 and "--depth" in r.stderr
    r = run_demo("--config", "tanh-huge", "--out", str(tmp_path))
    assert r.returncode == 2 and "invalid choice" in r.stderr
