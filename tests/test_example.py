"""examples/train_mlp.py as an integration test: its gradients are right, the loss goes down, and batch norm learns
faster than the bad initialization."""
import importlib.util
import pathlib

import numpy as np
import pytest

import fastnorm

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "train_mlp.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("train_mlp", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("batch_norm", [False, True])
def test_backward_passes_gradcheck(example, batch_norm):
    """The network's backward (fastnorm's cross-entropy, linear, fastnorm's ReLU and BatchNorm) against centered
    differences, in float64."""
    model = example.MLP([2, 6, 5, 3], init="he", batch_norm=batch_norm, seed=3)
    for p in model.params:
        for k in p:
            p[k] = p[k].astype(np.float64) + 0.1  # biases away from 0: no ReLU sits on its kink
    for bn in model.bns:
        bn.gamma, bn.beta = bn.gamma.astype(np.float64) * 1.3, bn.beta.astype(np.float64) + 0.2
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((7, 2)), rng.integers(0, 3, 7)

    def loss_of(w0, w2):
        saved = model.params[0]["w"], model.params[2]["w"]
        model.params[0]["w"], model.params[2]["w"] = w0, w2
        try:
            return np.array(example.softmax_cross_entropy(model.forward(x), y)[0])
        finally:
            model.params[0]["w"], model.params[2]["w"] = saved

    _, dlogits = example.softmax_cross_entropy(model.forward(x), y)
    grads = model.backward(dlogits)
    report = fastnorm.gradcheck(loss_of, [model.params[0]["w"], model.params[2]["w"]],
                                [grads[0]["w"], grads[2]["w"]], dy=np.array(1.0), tol=1e-5)
    assert report.ok and max(report.max_rel_error) < 1e-5


def test_training_loss_goes_down_and_batch_norm_beats_bad_init(example):
    runs = {run: example.train(run, epochs=6, points_per_class=400) for run in ("small", "he", "small+bn")}
    he, small, bn = runs["he"]["loss"], runs["small"]["loss"], runs["small+bn"]["loss"]
    assert min(he) < 0.7 * he[0]                     # He init trains (at lr 0.05 its loss can spike back up)
    assert abs(small[-1] - np.log(3)) < 0.01         # std 0.01: stuck at chance, as the lecture says
    assert bn[-1] < 0.5 * small[-1] and bn[0] < small[0]  # batch norm learns faster than the bad init
    assert runs["small+bn"]["test_acc"] > 0.8 > runs["small"]["test_acc"]


def test_example_runs_from_the_command_line(example, capsys):
    assert example.main(["--epochs", "2", "--depth", "3"]) == 0
    out = capsys.readouterr().out
    assert "small+bn" in out and "test acc" in out
