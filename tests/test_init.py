"""fastnorm.init: each initializer's empirical standard deviation against its formula, orthogonality, the
data-dependent schemes on a small network, and bad input."""
import math

import numpy as np
import pytest

import fastnorm
from fastnorm import init

SHAPE = (512, 256, 3, 3)  # conv weight: fan_in = 256 * 9, fan_out = 512 * 9
FAN_IN, FAN_OUT = 256 * 9, 512 * 9


def test_compute_fans_and_layouts():
    assert init.compute_fans(SHAPE) == (FAN_IN, FAN_OUT)
    assert init.compute_fans((10, 20), layout="out_in") == (20, 10)
    assert init.compute_fans((16, 16)) == (16, 16)  # square: either layout
    assert init.compute_fans((20, 10), layout="in_out") == (20, 10)
    assert init.compute_fans((4, 8, 3, 3), layout="in_out") == (36, 72)  # ConvTranspose (in, out, kh, kw)


@pytest.mark.parametrize("fn,kw,std", [
    (init.xavier_normal, {}, math.sqrt(2 / (FAN_IN + FAN_OUT))),
    (init.xavier_uniform, {"gain": 2.0}, 2 * math.sqrt(6 / (FAN_IN + FAN_OUT)) / math.sqrt(3)),
    (init.kaiming_normal, {"nonlinearity": "relu"}, math.sqrt(2 / FAN_IN)),
    (init.kaiming_normal, {"mode": "fan_out", "nonlinearity": "relu"}, math.sqrt(2 / FAN_OUT)),
    (init.kaiming_uniform, {"a": 0.2}, math.sqrt(2 / (1 + 0.04)) / math.sqrt(FAN_IN)),
    (init.lecun_normal, {}, math.sqrt(1 / FAN_IN)),
    (init.lecun_uniform, {}, math.sqrt(1 / FAN_IN)),
    (init.variance_scaling, {"scale": 2.0, "mode": "fan_avg", "distribution": "normal"},
     math.sqrt(2.0 / ((FAN_IN + FAN_OUT) / 2))),
    (init.variance_scaling, {"scale": 3.0, "distribution": "uniform"}, math.sqrt(3.0 / FAN_IN)),
    (init.normal, {"std": 0.01}, 0.01),
    (init.trunc_normal, {"std": 0.02, "a": -0.04, "b": 0.04}, 0.02 * 0.8796),
])
def test_empirical_std_matches_the_formula(fn, kw, std):
    w = fn(SHAPE, **kw, rng=0)
    assert w.shape == SHAPE and w.dtype == np.float32
    assert abs(w.std() / std - 1) < 0.01
    assert abs(w.mean()) < 0.01 * std


def test_gains():
    assert init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))
    assert init.calculate_gain("selu") == 0.75 and init.calculate_gain("conv2d") == 1.0


@pytest.mark.parametrize("shape", [(64, 256), (256, 64), (32, 16, 3, 3)])
def test_orthogonal(shape):
    w = init.orthogonal(shape, gain=1.0, rng=1).reshape(shape[0], -1).astype(np.float64)
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    np.testing.assert_allclose(gram, np.eye(gram.shape[0]), atol=1e-5)
    assert np.allclose(init.orthogonal(shape, gain=2.0, rng=1).reshape(shape[0], -1), 2 * w, atol=1e-6)


@pytest.mark.parametrize("dtype, tol", [(np.float32, 2e-6), (np.float64, 1e-13)])
def test_orthogonal_large_in_each_precision(dtype, tol):
    w = init.orthogonal((512, 512), dtype=dtype, rng=2).astype(np.float64)
    assert np.abs(w @ w.T - np.eye(512)).max() < tol


def test_orthogonal_is_haar_distributed():
    """Under the Haar law on O(3) every entry is uniform on [-1, 1], the trace has mean 0 and mean square 1, and
    the determinant is +1 or -1 with probability 1/2 (the Q of QR without the sign fix fails these)."""
    rng = fastnorm.random.Generator(7)
    n = 4000
    q = np.array([init.orthogonal((3, 3), dtype=np.float64, rng=rng) for _ in range(n)])
    crit = 1.63 / math.sqrt(n)  # Kolmogorov-Smirnov at the 1% level
    for i, j in [(0, 0), (1, 2), (2, 2)]:
        x = np.sort(q[:, i, j])
        u = (x + 1) / 2
        k = np.arange(1, n + 1) / n
        assert max(np.max(k - u), np.max(u - (k - 1 / n))) < crit, (i, j)
    tr = np.trace(q, axis1=1, axis2=2)
    assert abs(tr.mean()) < 4 / math.sqrt(n) and abs((tr ** 2).mean() - 1) < 6 * math.sqrt(2 / n)
    assert abs((np.linalg.det(q) > 0).mean() - 0.5) < 4 * 0.5 / math.sqrt(n)


def test_orthogonal_columns_with_no_reflection():
    """A Gaussian column of zeros has no reflection (probability 0, but 2**-24 for a float32 1x1 tail)."""
    for g in (np.zeros((3, 3)), np.array([[1.0, 2, 3], [0, 0, 0], [0, 0, 0]]), np.zeros((4, 2), np.float32)):
        q = init._haar_columns(g)
        np.testing.assert_allclose(q.T @ q, np.eye(q.shape[1]), atol=1e-6)


def test_identity_dirac_sparse_constant():
    assert np.array_equal(init.identity((3, 4)), np.eye(3, 4, dtype=np.float32))
    d = init.dirac((4, 2, 3, 3), groups=2)
    x = np.random.default_rng(0).standard_normal((2, 5, 5))
    assert d[0, 0, 1, 1] == 1 and d[2, 0, 1, 1] == 1 and d.sum() == 4
    s = init.sparse((10, 6), sparsity=0.3, std=0.1, rng=0)
    assert ((s == 0).sum(axis=0) >= 3).all()
    out = np.empty((2, 3), np.float64)
    assert init.constant(value=2.5, out=out) is out and (out == 2.5).all()
    assert init.zeros((2,)).sum() == 0 and init.ones((2,), dtype=np.float64).dtype == np.float64
    del x


def test_rng_forms_and_out():
    a = init.kaiming_normal((64, 32), nonlinearity="relu", layout="out_in", rng=3)
    b = init.kaiming_normal((64, 32), nonlinearity="relu", layout="out_in", rng=fastnorm.random.Generator(3))
    assert a.tobytes() == b.tobytes()
    c = init.kaiming_normal((64, 32), nonlinearity="relu", layout="out_in", rng=np.random.default_rng(3))
    assert c.shape == (64, 32)
    out = np.empty((64, 32), np.float64)
    assert init.xavier_uniform(out=out, rng=0) is out


def test_bad_input():
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        init.xavier_normal((10,))
    with pytest.raises(ValueError, match="nonlinearity.*tanh"):
        init.kaiming_normal((4, 4), nonlinearity="swoosh")
    with pytest.raises(ValueError, match="mode.*fan_in"):
        init.kaiming_normal((4, 4), mode="fan")
    with pytest.raises(ValueError, match="a, b"):
        init.trunc_normal((4, 4), a=1, b=-1)
    with pytest.raises(ValueError, match="scale"):
        init.variance_scaling((4, 4), scale=0)
    with pytest.raises(ValueError, match="distribution"):
        init.variance_scaling((4, 4), distribution="cauchy")
    with pytest.raises(ValueError, match="layout"):
        init.compute_fans((4, 4), layout="oi")


def _mlp(rng, widths=(64, 128, 128, 128, 10)):
    x = rng.standard_normal((512, widths[0])).astype(np.float32) * 3 + 1
    W = [np.zeros((o, i), np.float32) for i, o in zip(widths[:-1], widths[1:])]
    b = [np.zeros(o, np.float32) for o in widths[1:]]

    def forward(x):
        outs, h = [], x
        for k, (w, bias) in enumerate(zip(W, b)):
            z = h @ w.T + bias
            outs.append(z)
            h = fastnorm.tanh(z)
        return outs
    return x, W, b, forward


def test_lsuv_gives_unit_variance_per_layer():
    x, W, _, forward = _mlp(np.random.default_rng(0))
    variances = init.lsuv(W, forward, x, tol=0.01, rng=0)
    assert all(abs(v - 1) <= 0.01 for v in variances)
    assert all(abs(o.var() - 1) <= 0.01 for o in forward(x))


def test_data_dependent_normalizes_every_unit():
    x, W, b, forward = _mlp(np.random.default_rng(1))
    for k, w in enumerate(W):
        init.normal(std=0.5, out=w, rng=k)
    report = init.data_dependent(W, b, forward, x)
    assert all(m < 1e-4 and s < 1e-3 for m, s in report)


def test_a_non_square_2d_weight_needs_its_layout_said():
    # x @ W with W (in=784, out=100): the other convention's fan_in (100) would give std 0.141 instead of 0.0505
    for f in (init.kaiming_normal, init.kaiming_uniform, init.lecun_normal, init.lecun_uniform,
              init.variance_scaling):
        with pytest.raises(ValueError, match="layout: a weight of shape \\(784, 100\\)"):
            f((784, 100), rng=0)
        assert f((784, 100), layout="in_out", rng=0).shape == (784, 100)
    with pytest.raises(ValueError, match="layout"):
        init.compute_fans((784, 100))
    w = init.kaiming_normal((784, 100), nonlinearity="relu", layout="in_out", rng=0)
    assert abs(w.std() - math.sqrt(2 / 784)) < 0.002
    # no ambiguity: square matrices, convolutions, and Xavier's average of the fans
    assert init.kaiming_normal((64, 64), rng=0).shape == (64, 64)
    assert init.kaiming_normal((8, 4, 3, 3), rng=0).shape == (8, 4, 3, 3)
    assert abs(init.xavier_normal((784, 100), rng=0).std() - math.sqrt(2 / 884)) < 0.002


@pytest.mark.parametrize("call,name", [
    (lambda: fastnorm.init.kaiming_normal((4, 4), a="x", layout="out_in"), "a"),
    (lambda: fastnorm.init.kaiming_uniform((4, 4), a="x", layout="out_in"), "a"),
    (lambda: fastnorm.init.xavier_normal((4, 4), gain="x"), "gain"),
    (lambda: fastnorm.init.xavier_uniform((4, 4), gain="x"), "gain"),
    (lambda: fastnorm.init.orthogonal((4, 4), gain="x"), "gain"),
    (lambda: fastnorm.init.identity((4, 4), gain="x"), "gain"),
    (lambda: fastnorm.init.sparse((4, 4), sparsity="x"), "sparsity"),
    (lambda: fastnorm.init.sparse((4, 4), sparsity=1.5), "sparsity"),
    (lambda: fastnorm.init.constant((4, 4), value="x"), "value"),
    (lambda: fastnorm.init.calculate_gain("leaky_relu", "x"), "param"),
    (lambda: fastnorm.init.lsuv([np.zeros((4, 4), np.float32)], lambda x: [x], np.ones((2, 4)), tol="x"), "tol"),
    (lambda: fastnorm.init.lsuv([np.zeros((4, 4), np.float32)], lambda x: [x], np.ones((2, 4)), max_iter=1.5),
     "max_iter"),
    (lambda: fastnorm.init.data_dependent([np.ones((4, 4), np.float32)], [None], lambda x: [x], np.ones((2, 4)),
                                          eps="x"), "eps"),
])
def test_every_scalar_argument_is_refused_by_its_name(call, name):
    with pytest.raises((TypeError, ValueError), match=f"^{name}: "):
        call()
