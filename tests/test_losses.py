"""Softmax, log-softmax, cross-entropy and NLL: against the float64 reference, PyTorch where installed, gradient
checks, extreme and masked logits, any axis, dtypes, thread counts, bad input."""
import numpy as np
import pytest

import fastnorm
import reference as ref
from helpers import half_dtype

TOL = {np.dtype(np.float32): 2e-6, np.dtype(np.float64): 1e-14}


def _logits(shape, dtype=np.float32, scale=3.0, seed=0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", [((7, 10), -1), ((3, 1000), -1), ((4, 5, 3, 70), 1), ((2, 6, 130), 1),
                                        ((9,), 0), ((5, 4, 3), 0), ((), -1), ((0, 4), -1), ((3, 0), -1)])
@pytest.mark.parametrize("log", [False, True])
def test_forward_and_backward_against_the_reference(shape, axis, dtype, log):
    x = _logits(shape, dtype)
    f, fb = (fastnorm.log_softmax, fastnorm.log_softmax_backward) if log else (fastnorm.softmax,
                                                                               fastnorm.softmax_backward)
    want = (ref.log_softmax if log else ref.softmax)(x, axis) if x.ndim else np.float64(0.0 if log else 1.0)
    y = f(x, axis)
    assert y.dtype == dtype and y.shape == x.shape
    np.testing.assert_allclose(y, want, rtol=TOL[np.dtype(dtype)], atol=TOL[np.dtype(dtype)])
    dy = _logits(shape, dtype, 1.0, seed=1)
    dx = fb(dy, y, axis)
    if x.ndim:  # the Jacobian-vector product from the float64 definitions
        s = ref.softmax(x, axis)
        d64 = dy.astype(np.float64)
        want_dx = (d64 - s * d64.sum(axis=axis, keepdims=True)) if log else \
            s * (d64 - (d64 * s).sum(axis=axis, keepdims=True))
        np.testing.assert_allclose(dx, want_dx, rtol=20 * TOL[np.dtype(dtype)], atol=20 * TOL[np.dtype(dtype)])


@pytest.mark.parametrize("log", [False, True])
def test_gradcheck(log):
    x = _logits((3, 5), np.float64, 1.0)
    y_of = fastnorm.log_softmax if log else fastnorm.softmax
    back = fastnorm.log_softmax_backward if log else fastnorm.softmax_backward
    dy = _logits((3, 5), np.float64, 1.0, seed=2)
    report = fastnorm.gradcheck(lambda a: y_of(a, 1), x, lambda d, a: back(d, y_of(a, 1), 1), dy=dy)
    assert max(report.max_rel_error) < 1e-6


def test_extreme_and_masked_logits():
    big = np.finfo(np.float32).max
    x = np.array([[big, -big, 0.0], [1e4, -1e4, 0.0], [-np.inf, 1.0, 2.0], [-np.inf] * 3, [np.nan, 1.0, 2.0],
                  [np.inf, 1.0, 2.0]], np.float32)
    y, ly = fastnorm.softmax(x), fastnorm.log_softmax(x)
    np.testing.assert_array_equal(y[0], [1, 0, 0])
    np.testing.assert_array_equal(ly[1], np.array([0.0, -2e4, -1e4], np.float32))
    assert y[2, 0] == 0.0 and ly[2, 0] == -np.inf and abs(y[2].sum() - 1) < 1e-6  # masked: exactly 0
    assert np.isnan(y[3]).all() and np.isnan(y[4]).all()  # all -inf (as PyTorch) and NaN rows
    assert np.isnan(y[5, 0])
    # log-softmax keeps probabilities far below the smallest float
    z = np.array([[0.0, -200.0]], np.float32)
    assert fastnorm.log_softmax(z)[0, 1] == np.float32(-200.0) and fastnorm.softmax(z)[0, 1] == 0.0


def test_log_softmax_accuracy_in_ulps():
    # rows spread over 1e4 and probabilities down to 1e-30: within 4 ulps of the float64 reference where normal
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.uniform(-1e4, 1e4, (200, 64)), rng.uniform(-69, 0, (200, 64))]).astype(np.float32)
    got, want = fastnorm.log_softmax(x).astype(np.float64), ref.log_softmax(x)
    ulp = np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)
    normal = np.abs(want) >= np.finfo(np.float32).tiny
    assert (np.abs(got - want)[normal] <= 4 * ulp[normal]).all()
    s = fastnorm.softmax(x).astype(np.float64).sum(axis=1)
    assert np.abs(s - 1).max() <= 8 * np.finfo(np.float32).eps


@pytest.mark.parametrize("threads", [1, 2])
def test_same_bits_for_any_thread_count(threads):
    x = _logits((300, 513), np.float32)
    x4 = _logits((8, 40, 9, 70), np.float32)
    for a, axis in ((x, -1), (x4, 1)):
        for f in (fastnorm.softmax, fastnorm.log_softmax):
            assert f(a, axis, num_threads=threads).tobytes() == f(a, axis, num_threads=1).tobytes()
    t = np.random.default_rng(0).integers(0, 513, 300)
    assert fastnorm.cross_entropy_backward(x, t, num_threads=threads).tobytes() == \
        fastnorm.cross_entropy_backward(x, t, num_threads=1).tobytes()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_dtypes_computed_in_float32(dtype):
    dt = half_dtype(dtype)
    x = _logits((6, 9), np.float32).astype(dt)
    y = fastnorm.softmax(x)
    assert y.dtype == dt
    np.testing.assert_array_equal(y, fastnorm.softmax(x.astype(np.float32)).astype(dt))


CE_CASES = [dict(), dict(label_smoothing=0.1), dict(weight="w"), dict(weight="w", label_smoothing=0.25),
            dict(reduction="sum"), dict(reduction="none"), dict(ignore_index=2), dict(ignore_index=2, weight="w")]


@pytest.mark.parametrize("kw", CE_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_against_the_reference(kw, dtype):
    rng = np.random.default_rng(3)
    x = _logits((11, 7), dtype)
    t = rng.integers(0, 7, 11)
    t[[1, 4]] = 2
    kw = dict(kw, weight=rng.uniform(0.5, 2, 7)) if kw.get("weight") else kw
    want = ref.cross_entropy(x, t, **kw)
    loss, lse = fastnorm.cross_entropy(x, t, return_lse=True, **kw)
    np.testing.assert_allclose(loss, want, rtol=1e-6 if dtype == np.float32 else 1e-13)
    # the gradient: central differences of the float64 definition
    g = np.ones(11) if kw.get("reduction") == "none" else 1.0
    d = fastnorm.cross_entropy_backward(x, t, grad=g, lse=lse, **kw)
    assert d.dtype == dtype and d.shape == x.shape
    x64, h = x.astype(np.float64), 1e-6
    num = np.zeros_like(x64)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x64)
        e[i] = h
        num[i] = (np.sum(ref.cross_entropy(x64 + e, t, **kw)) - np.sum(ref.cross_entropy(x64 - e, t, **kw))) / (2 * h)
    np.testing.assert_allclose(d, num, rtol=1e-5, atol=1e-6 if dtype == np.float32 else 1e-8)
    np.testing.assert_array_equal(fastnorm.cross_entropy_backward(x, t, grad=g, **kw), d)  # lse recomputed


@pytest.mark.parametrize("kw", CE_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("C", [9, 16, 17, 32, 40, 48, 49])  # rows of one to three blocks of 16 classes and past
def test_cross_entropy_with_its_gradient_in_one_call(kw, dtype, C):
    rng = np.random.default_rng(7)
    x = _logits((40, C), dtype)
    t = rng.integers(0, C, 40)
    t[[0, 5]] = 2
    kw = dict(kw, weight=rng.uniform(0.5, 2, C)) if kw.get("weight") else kw
    loss, d = fastnorm.cross_entropy(x, t, return_grad=True, **kw)
    np.testing.assert_array_equal(loss, fastnorm.cross_entropy(x, t, **kw))
    g = np.ones(40) if kw.get("reduction") == "none" else 1.0
    tol = 4 * np.finfo(dtype).eps
    np.testing.assert_allclose(d, fastnorm.cross_entropy_backward(x, t, grad=g, **kw), rtol=tol, atol=tol)
    assert d.dtype == dtype and d.shape == x.shape


def test_cross_entropy_on_a_class_axis_in_the_middle_and_probability_targets():
    rng = np.random.default_rng(4)
    x = _logits((2, 5, 3, 4), np.float64)
    t = rng.integers(0, 5, (2, 3, 4))
    rows = np.moveaxis(x, 1, -1).reshape(-1, 5)
    np.testing.assert_allclose(fastnorm.cross_entropy(x, t, axis=1), ref.cross_entropy(rows, t.reshape(-1)),
                               rtol=1e-13)
    d = fastnorm.cross_entropy_backward(x, t, axis=1)
    d_rows = fastnorm.cross_entropy_backward(rows, t.reshape(-1))
    np.testing.assert_allclose(np.moveaxis(d, 1, -1).reshape(-1, 5), d_rows, rtol=1e-14, atol=1e-17)
    p = rng.dirichlet(np.ones(5), (2, 3, 4))
    p = np.moveaxis(p, -1, 1)
    logp = ref.log_softmax(x, 1)
    np.testing.assert_allclose(fastnorm.cross_entropy(x, p, axis=1), -(p * logp).sum(axis=1).mean(), rtol=1e-13)
    dp = fastnorm.cross_entropy_backward(x, p, axis=1)
    np.testing.assert_allclose(dp, (np.exp(logp) - p) / 24, rtol=1e-12, atol=1e-15)
    _, dp2 = fastnorm.cross_entropy(x, p, axis=1, return_grad=True)
    np.testing.assert_array_equal(dp2, dp)
    _, d2 = fastnorm.cross_entropy(x, t, axis=1, return_grad=True)
    np.testing.assert_allclose(d2, d, rtol=1e-14, atol=1e-17)


def test_against_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    x = _logits((64, 10), np.float32)
    t = rng.integers(0, 10, 64)
    t[3] = -100
    w = rng.uniform(0.5, 2, 10).astype(np.float32)
    for kw in (dict(), dict(label_smoothing=0.2, weight=w), dict(reduction="sum")):
        tx = torch.tensor(x, requires_grad=True)
        tkw = {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
        loss = torch.nn.functional.cross_entropy(tx, torch.tensor(t), **tkw)
        loss.backward()
        np.testing.assert_allclose(fastnorm.cross_entropy(x, t, **kw), loss.item(), rtol=2e-6)
        np.testing.assert_allclose(fastnorm.cross_entropy_backward(x, t, **kw), tx.grad.numpy(), rtol=1e-5,
                                   atol=1e-7)
    lp = fastnorm.log_softmax(x)
    np.testing.assert_allclose(fastnorm.nll_loss(lp, t), torch.nn.functional.nll_loss(torch.tensor(lp),
                                                                                      torch.tensor(t)).item(),
                               rtol=1e-6)
    np.testing.assert_allclose(fastnorm.softmax(x, 0), torch.softmax(torch.tensor(x), 0).numpy(), rtol=1e-6,
                               atol=1e-7)


def test_nll_loss_and_its_gradient():
    lp = fastnorm.log_softmax(_logits((5, 4), np.float64))
    t = np.array([0, 3, -100, 1, 1])
    np.testing.assert_allclose(fastnorm.nll_loss(lp, t), -lp[[0, 1, 3, 4], [0, 3, 1, 1]].mean(), rtol=1e-15)
    d = fastnorm.nll_loss_backward(lp, t)
    want = np.zeros((5, 4))
    want[[0, 1, 3, 4], [0, 3, 1, 1]] = -0.25
    np.testing.assert_array_equal(d, want)


def test_all_rows_ignored_is_nan_as_pytorch():
    assert np.isnan(fastnorm.cross_entropy(np.zeros((2, 3)), np.array([-100, -100])))


BAD = [
    (lambda: fastnorm.cross_entropy(np.zeros((2, 3)), np.array([0, 3])), ValueError, "target: class index 3"),
    (lambda: fastnorm.cross_entropy(np.zeros((2, 3)), np.array([0, -1])), ValueError, "target: class index -1"),
    (lambda: fastnorm.cross_entropy(np.zeros((2, 3)), np.array([0, 1, 2])), ValueError, r"target: expected shape"),
    (lambda: fastnorm.cross_entropy(np.zeros((2, 3)), np.array([0.0, 1.0])), ValueError,
     "probability targets need the logits' shape"),
    (lambda: fastnorm.cross_entropy(np.zeros((2, 3)), np.array([0, 1]), reduction="avg"), ValueError, "reduction"),
    (lambda: fastnorm.cross_entropy(np.zeros((2, 3)), np.array([0, 1]), label_smoothing=2), ValueError,
     "label_smoothing"),
    (lambda: fastnorm.cross_entropy(np.zeros((2, 3)), np.array([0, 1]), weight=np.ones(2)), ValueError, "weight"),
    (lambda: fastnorm.cross_entropy(np.zeros((2, 3)), np.array(["a", "b"])), TypeError, "target"),
    (lambda: fastnorm.softmax(np.zeros((2, 3)), axis=2), ValueError, "axis"),
    (lambda: fastnorm.softmax_backward(np.zeros((2, 3)), np.zeros((3, 2))), ValueError, "shape"),
    (lambda: fastnorm.cross_entropy_backward(np.zeros((2, 3)), np.array([0, 1]), grad=np.ones(2)), ValueError,
     "grad: expected a scalar"),
]


@pytest.mark.parametrize("call,error,message", BAD)
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()
