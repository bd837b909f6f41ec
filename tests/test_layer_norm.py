"""layer_norm / rms_norm and their backwards: against the float64 references, gradients, layouts of the
normalized axes, determinism, bad input, and PyTorch when it is installed."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastnorm
import reference as ref
from helpers import assert_stats_close, assert_within_one_ulp, half_dtype, numeric_partial

TOL = {np.float16: (5e-3, 5e-3), np.float32: (2e-5, 2e-5), np.float64: (1e-11, 1e-11)}


@st.composite
def ln_inputs(draw):
    dtype = draw(st.sampled_from([np.float16, np.float32, np.float64]))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=7))
    k = draw(st.integers(1, len(shape)))
    x = draw(hnp.arrays(dtype, shape, elements=st.floats(-8, 8, width=8 * np.dtype(dtype).itemsize)))
    x = x + (np.arange(x.size).reshape(shape) % 3).astype(dtype)  # a spread in every row
    if draw(st.booleans()) and x.ndim >= 2:
        x = np.asfortranarray(x)
    norm_shape = shape[len(shape) - k:]
    gamma = draw(hnp.arrays(np.float64, norm_shape, elements=st.floats(0.5, 2)))
    beta = draw(hnp.arrays(np.float64, norm_shape, elements=st.floats(-1, 1)))
    axis = -1 if k == 1 and draw(st.booleans()) else tuple(range(-k, 0))
    return x, k, axis, gamma, beta


@given(ln_inputs())
def test_layer_norm_forward_matches_reference(data):
    x, k, axis, gamma, beta = data
    y = fastnorm.layer_norm(x, gamma, beta, axis=axis)
    assert y.dtype == x.dtype and y.shape == x.shape
    rtol, atol = TOL[x.dtype.type]
    np.testing.assert_allclose(y.astype(np.float64), ref.layer_norm(x, gamma, beta, k), rtol=rtol, atol=atol)


@given(ln_inputs(), st.data())
def test_layer_norm_backward_matches_reference(data, draw):
    x, k, axis, gamma, _ = data
    if x.dtype == np.float16:
        return
    dy = draw.draw(hnp.arrays(x.dtype, x.shape, elements=st.floats(-2, 2, width=8 * x.dtype.itemsize)))
    _, mean, rstd = fastnorm.layer_norm(x, gamma, axis=axis, return_stats=True)
    dx, dgamma, dbeta = fastnorm.layer_norm_backward(dy, x, mean, rstd, gamma, axis=axis)
    edx, edg, edb = ref.layer_norm_grads(dy, x, gamma, k)
    rtol, atol = TOL[x.dtype.type]
    for got, want in ((dx, edx), (dgamma, edg), (dbeta, edb)):
        np.testing.assert_allclose(got, want, rtol=rtol * 10, atol=atol * 10 * (1 + np.abs(want).max()))


@given(ln_inputs())
def test_rms_norm_forward_matches_reference(data):
    x, k, axis, gamma, _ = data
    y = fastnorm.rms_norm(x, gamma, axis=axis, eps=1e-6)
    rtol, atol = TOL[x.dtype.type]
    np.testing.assert_allclose(y.astype(np.float64), ref.rms_norm(x, gamma, k, 1e-6), rtol=rtol, atol=atol)


@pytest.mark.parametrize("shape,axis", [((5, 7), -1), ((3, 4, 6), (-2, -1)), ((2, 3, 4, 5), -1)])
def test_gradient_checks_float64(shape, axis, rng):
    x = rng.standard_normal(shape) + 0.5
    norm_shape = shape[-1:] if axis == -1 else shape[-2:]
    gamma, beta = rng.uniform(0.5, 1.5, norm_shape), rng.standard_normal(norm_shape)
    dy = rng.standard_normal(shape)
    _, mean, rstd = fastnorm.layer_norm(x, gamma, beta, axis=axis, return_stats=True)
    dx, dgamma, dbeta = fastnorm.layer_norm_backward(dy, x, mean, rstd, gamma, axis=axis)
    _, rrms = fastnorm.rms_norm(x, gamma, axis=axis, return_stats=True)
    rdx, rdgamma = fastnorm.rms_norm_backward(dy, x, rrms, gamma, axis=axis)

    def ln(x_, g_, b_):
        return (dy * fastnorm.layer_norm(x_, g_, b_, axis=axis)).sum()

    def rms(x_, g_):
        return (dy * fastnorm.rms_norm(x_, g_, axis=axis)).sum()

    for idx in [tuple(rng.integers(0, s) for s in shape) for _ in range(5)]:
        assert abs(numeric_partial(lambda v: ln(v, gamma, beta), x, idx) - dx[idx]) < 1e-6
        assert abs(numeric_partial(lambda v: rms(v, gamma), x, idx) - rdx[idx]) < 1e-6
    for idx in np.ndindex(*norm_shape):
        assert abs(numeric_partial(lambda v: ln(x, v, beta), gamma, idx) - dgamma[idx]) < 1e-6
        assert abs(numeric_partial(lambda v: ln(x, gamma, v), beta, idx) - dbeta[idx]) < 1e-6
        assert abs(numeric_partial(lambda v: rms(x, v), gamma, idx) - rdgamma[idx]) < 1e-6


def test_no_affine_dx_only_and_stats_shapes(rng):
    x = rng.standard_normal((3, 4, 5))
    dy = rng.standard_normal(x.shape)
    y, mean, rstd = fastnorm.layer_norm(x, return_stats=True)
    assert mean.shape == (3, 4) and rstd.shape == (3, 4)
    dx, dg, db = fastnorm.layer_norm_backward(dy, x, mean, rstd)
    assert dg is None and db is None
    np.testing.assert_allclose(dx, ref.layer_norm_grads(dy, x)[0], rtol=1e-10, atol=1e-12)
    dx2, dg2, _ = fastnorm.layer_norm_backward(dy, x, mean, rstd, np.ones(5), dx_only=True)
    assert dg2 is None
    np.testing.assert_allclose(dx2, dx, rtol=1e-12)


def test_float32_with_mean_far_above_std(rng):
    x = (rng.standard_normal((256, 512)) + 1e4).astype(np.float32)
    y = fastnorm.layer_norm(x)
    np.testing.assert_allclose(y, ref.layer_norm(x), atol=5e-5)


@pytest.mark.parametrize("shape", [(4096, 64), (300, 5000), (20000, 8)])
def test_bitwise_identical_for_any_thread_count(shape, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    gamma = rng.uniform(0.5, 1.5, shape[-1]).astype(np.float32)
    runs = []
    for t in (1, 2, 3):
        y, m, r = fastnorm.layer_norm(x, gamma, return_stats=True, num_threads=t)
        dx, dg, db = fastnorm.layer_norm_backward(dy, x, m, r, gamma, num_threads=t)
        ry, rr = fastnorm.rms_norm(x, gamma, return_stats=True, num_threads=t)
        rdx, rdg = fastnorm.rms_norm_backward(dy, x, rr, gamma, num_threads=t)
        runs.append(b"".join(a.tobytes() for a in (y, m, r, dx, dg, db, ry, rr, rdx, rdg)))
    assert runs[1] == runs[0] and runs[2] == runs[0]


def test_bad_input():
    x = np.ones((2, 3, 4)) + np.arange(24).reshape(2, 3, 4)
    with pytest.raises(ValueError, match="axis: expected the trailing axes"):
        fastnorm.layer_norm(x, axis=1)
    with pytest.raises(ValueError, match="axis: 3 is out of range"):
        fastnorm.layer_norm(x, axis=3)
    with pytest.raises(ValueError, match=r"gamma: expected shape \(4,\)"):
        fastnorm.layer_norm(x, np.ones(3))
    with pytest.raises(ValueError, match=r"beta: expected shape \(3, 4\)"):
        fastnorm.layer_norm(x, None, np.ones(4), axis=(-2, -1))
    with pytest.raises(ValueError, match="eps: expected a finite number > 0"):
        fastnorm.layer_norm(x, eps=-1)
    with pytest.raises(ValueError, match="eps: expected a finite number > 0"):
        fastnorm.rms_norm(x, eps=0)
    with pytest.raises(ValueError, match=r"mean: expected shape \(2, 3\)"):
        fastnorm.layer_norm_backward(x, x, np.zeros(5), np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"rstd: expected shape \(2, 3\)"):
        fastnorm.rms_norm_backward(x, x, np.ones(4))


def test_matches_pytorch():
    torch = pytest.importorskip("torch", reason="PyTorch is optional; this compares with it when installed")
    rng = np.random.default_rng(11)
    x = rng.standard_normal((6, 5, 8)).astype(np.float32)
    w, b = rng.uniform(0.5, 1.5, (5, 8)).astype(np.float32), rng.standard_normal((5, 8)).astype(np.float32)
    tx = torch.from_numpy(x).requires_grad_(True)
    tw, tb = torch.from_numpy(w).requires_grad_(True), torch.from_numpy(b).requires_grad_(True)
    ty = torch.nn.functional.layer_norm(tx, (5, 8), tw, tb, 1e-5)
    y, mean, rstd = fastnorm.layer_norm(x, w, b, axis=(-2, -1), return_stats=True)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    ty.backward(torch.from_numpy(dy))
    dx, dw, db = fastnorm.layer_norm_backward(dy, x, mean, rstd, w, axis=(-2, -1))
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dw, tw.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(db, tb.grad.numpy(), rtol=1e-4, atol=1e-5)
    if hasattr(torch.nn.functional, "rms_norm"):
        ry = torch.nn.functional.rms_norm(torch.from_numpy(x), (8,), torch.from_numpy(w[0]))
        np.testing.assert_allclose(fastnorm.rms_norm(x, w[0]), ry.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("half", ["float16", "bfloat16"])
@pytest.mark.parametrize("shape", [(300, 64), (40, 1000), (7, 3)])
@pytest.mark.parametrize("activation", [None, "gelu"])
def test_half_storage_equals_float32_rounded_once(half, shape, activation, rng, stream_threshold):
    """float16 and bfloat16 rows are read and written as such and computed in float32 (gamma and beta too).  Their
    statistics are summed in float32 around each piece's mean (test_half_storage.py): close to the float32 array's,
    and y within one unit of its float32 result rounded.  dx, from given statistics, has the bits of the float32
    computation rounded once.  Every result is the same for any thread count, with or without streaming stores."""
    dt = half_dtype(half)
    x = (rng.standard_normal(shape) * 3 + 1).astype(dt)
    dy = rng.standard_normal(shape).astype(dt)
    g, b = rng.standard_normal(shape[-1]).astype(np.float32), rng.standard_normal(shape[-1]).astype(np.float32)
    x32, dy32 = x.astype(np.float32), dy.astype(np.float32)
    for norm, stats in [("layer_norm", 2), ("rms_norm", 1)]:
        f, fb = getattr(fastnorm, norm), getattr(fastnorm, norm + "_backward")
        params = (g, b) if norm == "layer_norm" else (g,)
        want_y, *want_stats = f(x32, *params, return_stats=True, activation=activation)
        y1, *st1 = f(x, *params, return_stats=True, activation=activation, num_threads=1)
        assert_within_one_ulp(y1, want_y, dt)
        assert_stats_close(st1[0] if stats == 2 else 0, st1[-1], want_stats[0] if stats == 2 else 0, want_stats[-1])
        saved = dict(beta=b) if norm == "layer_norm" else {}
        want_dx = fb(dy32, x32, *st1, g, activation=activation, **saved)[0]
        for threads, threshold in [(1, -1), (2, -1), (2, 0)]:
            stream_threshold(threshold)
            y, *st = f(x, *params, return_stats=True, activation=activation, num_threads=threads)
            assert y.dtype == dt and len(st) == stats
            np.testing.assert_array_equal(y.view(np.uint16), y1.view(np.uint16))
            for s, w in zip(st, st1):
                np.testing.assert_array_equal(s, w)
            dx, dgamma = fb(dy, x, *st, g, activation=activation, num_threads=threads, **saved)[:2]
            assert dx.dtype == dt and dgamma.dtype == np.float32  # sums over a batch overflow float16
            np.testing.assert_array_equal(dx.view(np.uint16), want_dx.astype(dt).view(np.uint16))
