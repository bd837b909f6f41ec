"""batch_norm and batch_norm_backward: against the float64 reference, running statistics, test mode, gradients,
layouts, stability, determinism, bad input, and PyTorch when it is installed."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastnorm
import reference as ref
from helpers import half_dtype, numeric_partial

TOL = {np.float16: (5e-3, 5e-3), np.float32: (2e-5, 2e-5), np.float64: (1e-11, 1e-11)}


@st.composite
def bn_inputs(draw):
    dtype = draw(st.sampled_from([np.float16, np.float32, np.float64]))
    shape = draw(hnp.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=6))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    if np.prod(shape) // shape[axis] < 2:  # training needs two values per channel
        shape = (2,) + shape if axis >= 0 else (2,) + shape
        axis = axis + 1 if axis >= 0 else axis
    x = draw(hnp.arrays(dtype, shape, elements=st.floats(-8, 8, width=8 * np.dtype(dtype).itemsize)))
    # keep every channel's spread away from 0, so that rstd is moderate and tolerances mean something
    x = x + np.arange(x.size).reshape(shape).astype(dtype) % 3
    if draw(st.booleans()):
        x = np.asfortranarray(x)
    C = shape[axis]
    gamma = draw(hnp.arrays(np.float64, (C,), elements=st.floats(0.5, 2)))
    beta = draw(hnp.arrays(np.float64, (C,), elements=st.floats(-1, 1)))
    return x, axis, gamma, beta


@given(bn_inputs())
def test_forward_matches_reference(data):
    x, axis, gamma, beta = data
    y = fastnorm.batch_norm(x, gamma=gamma, beta=beta, axis=axis)
    assert y.dtype == x.dtype and y.shape == x.shape
    rtol, atol = TOL[x.dtype.type]
    np.testing.assert_allclose(y.astype(np.float64), ref.batch_norm(x, gamma, beta, axis), rtol=rtol, atol=atol)


@given(bn_inputs(), st.data())
def test_backward_matches_reference(data, draw):
    x, axis, gamma, _ = data
    if x.dtype == np.float16:
        return  # float16 gradients are compared in float32 below
    dy = draw.draw(hnp.arrays(x.dtype, x.shape, elements=st.floats(-2, 2, width=8 * x.dtype.itemsize)))
    _, mean, rstd = fastnorm.batch_norm(x, gamma=gamma, axis=axis, return_stats=True)
    dx, dgamma, dbeta = fastnorm.batch_norm_backward(dy, x, mean, rstd, gamma, axis=axis)
    edx, edg, edb = ref.batch_norm_grads(dy, x, gamma, axis)
    rtol, atol = TOL[x.dtype.type]
    scale = 1 + np.abs(edx).max()
    np.testing.assert_allclose(dx, edx, rtol=rtol * 10, atol=atol * 10 * scale)
    # the reference's own rounding: x - mean carries an error of an ulp of x, which rstd (up to 1 / sqrt(eps) for
    # a constant channel) scales and the sum over the channel's values adds up
    noise = np.abs(dy).sum() * np.finfo(np.float64).eps * (1 + np.abs(x).max()) * rstd.max()
    np.testing.assert_allclose(dgamma, edg, rtol=rtol * 10, atol=atol * 10 * (1 + np.abs(edg).max()) + noise)
    np.testing.assert_allclose(dbeta, edb, rtol=rtol * 10, atol=atol * 10 * (1 + np.abs(edb).max()))


@pytest.mark.parametrize("shape,axis", [((6, 3, 4, 5), 1), ((6, 4, 5, 3), -1), ((7, 4), 1), ((5, 2, 9), 2)])
def test_gradient_check_float64(shape, axis, rng):
    x = rng.standard_normal(shape) * 2 + 1
    C = shape[axis]
    gamma, beta = rng.uniform(0.5, 1.5, C), rng.standard_normal(C)
    dy = rng.standard_normal(shape)
    _, mean, rstd = fastnorm.batch_norm(x, gamma=gamma, beta=beta, axis=axis, return_stats=True)
    dx, dgamma, dbeta = fastnorm.batch_norm_backward(dy, x, mean, rstd, gamma, axis=axis)

    def loss(x_, g_, b_):
        return (dy * fastnorm.batch_norm(x_, gamma=g_, beta=b_, axis=axis)).sum()

    for idx in [tuple(rng.integers(0, s) for s in shape) for _ in range(6)]:
        assert abs(numeric_partial(lambda v: loss(v, gamma, beta), x, idx) - dx[idx]) < 1e-6
    for c in range(C):
        assert abs(numeric_partial(lambda v: loss(x, v, beta), gamma, c) - dgamma[c]) < 1e-6
        assert abs(numeric_partial(lambda v: loss(x, gamma, v), beta, c) - dbeta[c]) < 1e-6


def test_running_statistics_momentum_and_cumulative(rng):
    x = rng.standard_normal((10, 3, 4)) * 2 + 5
    red = (0, 2)
    rm, rv = np.zeros(3), np.ones(3)
    fastnorm.batch_norm(x, running_mean=rm, running_var=rv, momentum=0.1)
    np.testing.assert_allclose(rm, 0.1 * x.mean(axis=red), rtol=1e-12)
    np.testing.assert_allclose(rv, 0.9 + 0.1 * x.var(axis=red, ddof=1), rtol=1e-12)
    rm, rv = np.zeros(3), np.ones(3)
    fastnorm.batch_norm(x, running_mean=rm, running_var=rv, momentum=0.1, running_var_unbiased=False)
    np.testing.assert_allclose(rv, 0.9 + 0.1 * x.var(axis=red), rtol=1e-12)
    # momentum=None: the cumulative average over batches, counted in num_batches_tracked
    rm, rv, n = np.zeros(3), np.ones(3), np.array(0)
    batches = [rng.standard_normal((10, 3, 4)) + k for k in range(3)]
    for b in batches:
        fastnorm.batch_norm(b, running_mean=rm, running_var=rv, momentum=None, num_batches_tracked=n)
    assert n == 3
    np.testing.assert_allclose(rm, np.mean([b.mean(axis=red) for b in batches], axis=0), rtol=1e-12)
    np.testing.assert_allclose(rv, np.mean([b.var(axis=red, ddof=1) for b in batches], axis=0), rtol=1e-12)


def test_running_statistics_keep_their_dtype_and_float32_data(rng):
    x = rng.standard_normal((16, 4)).astype(np.float32)
    rm, rv = np.zeros(4, np.float32), np.ones(4, np.float32)
    fastnorm.batch_norm(x, running_mean=rm, running_var=rv)
    assert rm.dtype == np.float32
    np.testing.assert_allclose(rm, 0.1 * x.astype(np.float64).mean(axis=0), rtol=1e-6)


def test_test_mode_uses_running_statistics(rng):
    x = rng.standard_normal((5, 3, 2, 2))
    rm, rv = rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    gamma, beta = rng.uniform(0.5, 1.5, 3), rng.standard_normal(3)
    rm0, rv0 = rm.copy(), rv.copy()
    y, mean, rstd = fastnorm.batch_norm(x, gamma=gamma, beta=beta, training=False, running_mean=rm, running_var=rv,
                                        return_stats=True)
    expected = (x - rm0.reshape(1, 3, 1, 1)) / np.sqrt(rv0.reshape(1, 3, 1, 1) + 1e-5) * gamma.reshape(1, 3, 1, 1) \
        + beta.reshape(1, 3, 1, 1)
    np.testing.assert_allclose(y, expected, rtol=1e-13)
    np.testing.assert_array_equal(rm, rm0)  # not updated in test mode
    dy = rng.standard_normal(x.shape)
    dx, dgamma, dbeta = fastnorm.batch_norm_backward(dy, x, mean, rstd, gamma, training=False)
    np.testing.assert_allclose(dx, dy * (gamma * rstd).reshape(1, 3, 1, 1), rtol=1e-13)
    np.testing.assert_allclose(dbeta, dy.sum(axis=(0, 2, 3)), rtol=1e-12)
    xhat = (x - rm0.reshape(1, 3, 1, 1)) * rstd.reshape(1, 3, 1, 1)
    np.testing.assert_allclose(dgamma, (dy * xhat).sum(axis=(0, 2, 3)), rtol=1e-11)


def test_no_affine_and_dx_only(rng):
    x = rng.standard_normal((8, 3))
    dy = rng.standard_normal(x.shape)
    _, mean, rstd = fastnorm.batch_norm(x, return_stats=True)
    dx, dg, db = fastnorm.batch_norm_backward(dy, x, mean, rstd)
    assert dg is None and db is None
    np.testing.assert_allclose(dx, ref.batch_norm_grads(dy, x)[0], rtol=1e-10, atol=1e-12)
    dx2, dg2, db2 = fastnorm.batch_norm_backward(dy, x, mean, rstd, np.ones(3), dx_only=True)
    assert dg2 is None and db2 is None
    np.testing.assert_allclose(dx2, dx, rtol=1e-12)


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_float32_with_mean_far_above_std(layout, rng):
    """Mean 1e4, std 1 in float32: the statistics and the output stay accurate (shifted, split-mean kernels)."""
    x = (rng.standard_normal((32, 8, 16, 16)) + 1e4).astype(np.float32)
    axis = 1
    if layout == "nhwc":
        x, axis = np.ascontiguousarray(np.moveaxis(x, 1, -1)), -1
    y, mean, rstd = fastnorm.batch_norm(x, axis=axis, return_stats=True)
    truth = ref.batch_norm(x, axis=axis)
    red = tuple(i for i in range(4) if i != axis % 4)
    np.testing.assert_allclose(1 / rstd ** 2 - 1e-5, x.astype(np.float64).var(axis=red), rtol=1e-4)
    np.testing.assert_allclose(y, truth, atol=2e-5)


def test_channels_last_equals_channels_first(rng):
    x = rng.standard_normal((4, 5, 6, 7)).astype(np.float32)
    gamma, beta = rng.uniform(0.5, 1.5, 5), rng.standard_normal(5)
    y = fastnorm.batch_norm(x, gamma=gamma, beta=beta, axis=1)
    xl = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    yl = fastnorm.batch_norm(xl, gamma=gamma, beta=beta, axis=-1)
    np.testing.assert_allclose(np.moveaxis(yl, -1, 1), y, rtol=1e-6, atol=1e-6)


# (40, 2, 30, 30): two channels, so 3 threads take the two-pass backward and 1 or 2 the one-pass, by channel.
@pytest.mark.parametrize("shape,axis", [((16, 32, 20, 20), 1), ((16, 20, 20, 32), -1), ((4000, 50), 1),
                                        ((40, 2, 30, 30), 1)])
def test_bitwise_identical_for_any_thread_count(shape, axis, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    C = shape[axis]
    gamma = rng.uniform(0.5, 1.5, C)
    runs = []
    for t in (1, 2, 3):
        y, m, r = fastnorm.batch_norm(x, gamma=gamma, axis=axis, return_stats=True, num_threads=t)
        dx, dg, db = fastnorm.batch_norm_backward(dy, x, m, r, gamma, axis=axis, num_threads=t)
        runs.append(b"".join(a.tobytes() for a in (y, m, r, dx, dg, db)))
    assert runs[1] == runs[0] and runs[2] == runs[0]


@pytest.mark.parametrize("shape", [(64, 37, 7, 7), (3, 5, 1000), (9, 64, 3)])
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("threads", [1, 3])
def test_one_pass_backward_equals_two_passes(shape, dtype, threads, rng, bn_schedule):
    """The by-channel backward (one pass over memory) gives the two-pass backward's bits; half storage too."""
    from fastnorm import _C
    dtype = np.dtype(dtype) if dtype in ("float32", "float64") else half_dtype(dtype)
    x = (rng.standard_normal(shape) * 3 + 5).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    A, C, B = shape[0], shape[1], int(np.prod(shape[2:]))
    gamma = rng.uniform(0.5, 1.5, C)
    _, mean, rstd = fastnorm.batch_norm(x, gamma=gamma, return_stats=True)
    k_dy = gamma * rstd
    dx1, s1, s2 = np.empty_like(x), np.empty(C), np.empty(C)
    none = fastnorm._validate.post_op(None, 0.01)
    bn_schedule("by_channel")
    assert _C.bn_backward_train(dy.reshape(-1), x.reshape(-1), dx1.reshape(-1), A, C, B, mean, rstd, gamma, None,
                                s1, s2, threads, *none)
    t1, t2 = np.empty(C), np.empty(C)
    _C.bn_grad_sums(dy.reshape(-1), x.reshape(-1), A, C, B, mean, t1, t2, threads, *none, None, None)
    count = A * B
    k_xmu, k_one = -(k_dy * (rstd * (rstd * t2))) / count, -k_dy * t1 / count  # as batch_norm.cpp
    dx2 = np.empty_like(x)
    _C.bn_input_grad(dy.reshape(-1), x.reshape(-1), dx2.reshape(-1), A, C, B, mean, k_dy, k_xmu, k_one, threads,
                     *none, None, None)
    assert s1.tobytes() == t1.tobytes() and s2.tobytes() == t2.tobytes()
    assert dx1.tobytes() == dx2.tobytes()


def test_one_pass_backward_declines_unsuited_shapes(rng, bn_schedule):
    from fastnorm import _C
    bn_schedule("by_channel")
    for shape, threads in [((8, 2, 100), 3), ((100, 4, 1), 1), ((2000, 2, 200), 1)]:  # few channels, NHWC, L2
        x = rng.standard_normal(shape).astype(np.float32)
        A, C, B = shape
        dx = np.full_like(x, 7)
        assert not _C.bn_backward_train(x.reshape(-1), x.reshape(-1), dx.reshape(-1), A, C, B, np.zeros(C),
                                        np.ones(C), None, None, np.empty(C), np.empty(C), threads, "none", 0.01)
        assert (dx == 7).all()


@pytest.mark.parametrize("shape", [(16, 37, 9, 9), (3, 5, 1000), (2, 6, 30000), (300, 3, 100)])
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("affine,activation", [(False, None), (True, None), (True, "silu")])
def test_one_pass_forward_equals_two_passes(shape, dtype, threads, affine, activation, rng, bn_schedule):
    """The by-channel training forward (statistics and normalization of a few channels while they are in L2)
    gives the bits of channel_moments followed by bn_apply, with runs in several pieces (30000 values) and a
    channel's pieces in several blocks (300 runs); half storage too."""
    from fastnorm import _C
    dtype = np.dtype(dtype) if dtype in ("float32", "float64") else half_dtype(dtype)
    x = (rng.standard_normal(shape) * 3 + 5).astype(dtype)
    A, C, B = shape[0], shape[1], int(np.prod(shape[2:]))
    gamma, beta = (rng.uniform(0.5, 1.5, C), rng.standard_normal(C)) if affine else (None, None)
    post = fastnorm._validate.post_op(activation, 0.01)
    eps = 1e-3
    y1, mean1, m21 = np.empty_like(x), np.empty(C), np.empty(C)
    bn_schedule("by_channel")
    assert _C.bn_forward_train(x.reshape(-1), y1.reshape(-1), A, C, B, gamma, beta, eps, mean1, m21, threads, *post)
    mean2, m22 = np.empty(C), np.empty(C)
    _C.channel_moments(x.reshape(-1), A, C, B, mean2, m22, threads)
    rstd = 1.0 / np.sqrt(m22 / (A * B) + eps)
    y2 = np.empty_like(x)
    _C.bn_apply(x.reshape(-1), y2.reshape(-1), A, C, B, mean2, rstd if gamma is None else gamma * rstd,
                np.zeros(C) if beta is None else beta, threads, *post)
    assert mean1.tobytes() == mean2.tobytes() and m21.tobytes() == m22.tobytes()
    assert y1.tobytes() == y2.tobytes()


def test_one_pass_forward_declines_unsuited_shapes(rng, bn_schedule):
    from fastnorm import _C
    bn_schedule("by_channel")
    # few channels for the threads, channels-last, runs shorter than a moments piece, a channel past L2
    for shape, threads in [((8, 2, 100), 3), ((100, 4, 1), 1), ((100, 4, 63), 1), ((2000, 2, 200), 1)]:
        x = rng.standard_normal(shape).astype(np.float32)
        A, C, B = shape
        y = np.full_like(x, 7)
        mean, m2 = np.full(C, 7.0), np.full(C, 7.0)
        assert not _C.bn_forward_train(x.reshape(-1), y.reshape(-1), A, C, B, None, None, 1e-5, mean, m2,
                                       threads, "none", 0.01)
        assert (y == 7).all() and (mean == 7).all() and (m2 == 7).all()


@pytest.mark.parametrize("shape", [(10, 100, 1), (4, 16, 9), (16, 37, 81)])  # rows; two passes; by channel
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("affine,activation", [(False, None), (True, None), (True, "gelu")])
def test_whole_training_calls_equal_the_steps(shape, dtype, affine, activation, rng):
    """bn_forward_train and bn_backward_train (one call each from batch_norm / batch_norm_backward) give the bits
    of their steps with the constants computed in NumPy: channel_moments then bn_apply, bn_grad_sums then
    bn_input_grad."""
    from fastnorm import _C
    dtype = np.dtype(dtype) if dtype == "float32" else half_dtype(dtype)
    x = (rng.standard_normal(shape) * 3 + 5).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    A, C, B = shape
    gamma, beta = (rng.uniform(0.5, 1.5, C), rng.standard_normal(C)) if affine else (None, None)
    post = fastnorm._validate.post_op(activation, 0.01)
    eps, count = 1e-3, A * B
    y1, mean1, m21 = np.empty_like(x), np.empty(C), np.empty(C)
    _C.bn_forward_train(x.reshape(-1), y1.reshape(-1), A, C, B, gamma, beta, eps, mean1, m21, 2, *post)
    mean, m2 = np.empty(C), np.empty(C)
    _C.channel_moments(x.reshape(-1), A, C, B, mean, m2, 2)
    rstd = 1.0 / np.sqrt(m2 / count + eps)
    scale, shift = rstd if gamma is None else gamma * rstd, np.zeros(C) if beta is None else beta
    y2 = np.empty_like(x)
    _C.bn_apply(x.reshape(-1), y2.reshape(-1), A, C, B, mean, scale, shift, 2, *post)
    assert mean1.tobytes() == mean.tobytes() and m21.tobytes() == m2.tobytes() and y1.tobytes() == y2.tobytes()

    dx1, s1, s2 = np.empty_like(x), np.empty(C), np.empty(C)
    _C.bn_backward_train(dy.reshape(-1), x.reshape(-1), dx1.reshape(-1), A, C, B, mean, rstd, gamma, beta, s1, s2,
                         2, *post)
    t1, t2 = np.empty(C), np.empty(C)
    _C.bn_grad_sums(dy.reshape(-1), x.reshape(-1), A, C, B, mean, t1, t2, 2, *post, scale, shift)
    k_dy = scale
    k_xmu, k_one = -(k_dy * (rstd * (rstd * t2))) / count, -k_dy * t1 / count  # as batch_norm.cpp
    dx2 = np.empty_like(x)
    _C.bn_input_grad(dy.reshape(-1), x.reshape(-1), dx2.reshape(-1), A, C, B, mean, k_dy, k_xmu, k_one, 2, *post,
                     scale, shift)
    assert s1.tobytes() == t1.tobytes() and s2.tobytes() == t2.tobytes() and dx1.tobytes() == dx2.tobytes()


def test_nan_in_a_training_batch(rng):
    x = rng.standard_normal((6, 3))
    x[2, 1] = np.nan
    rm, rv = np.zeros(3), np.ones(3)
    y = fastnorm.batch_norm(x, running_mean=rm, running_var=rv)
    assert np.isnan(y[:, 1]).all() and np.isfinite(y[:, [0, 2]]).all()
    assert np.isnan(rm[1]) and np.isnan(rv[1]) and np.isfinite(rm[[0, 2]]).all()


def test_out_and_inputs_untouched(rng):
    x = rng.standard_normal((6, 3)).astype(np.float32)
    x0 = x.copy()
    out = np.empty_like(x)
    assert fastnorm.batch_norm(x, out=out) is out
    np.testing.assert_array_equal(x, x0)
    assert fastnorm.batch_norm(x, out=x) is x  # in place
    np.testing.assert_allclose(x, out)


def test_bad_input():
    x = np.ones((4, 3)) + np.arange(12).reshape(4, 3)
    with pytest.raises(ValueError, match="axis: 2 is out of range"):
        fastnorm.batch_norm(x, axis=2)
    with pytest.raises(ValueError, match=r"gamma: expected shape \(3,\)"):
        fastnorm.batch_norm(x, gamma=np.ones(4))
    with pytest.raises(TypeError, match="beta: unsupported dtype complex128"):
        fastnorm.batch_norm(x, gamma=None, beta=np.ones(3, complex))
    with pytest.raises(ValueError, match="eps: expected a finite number > 0"):
        fastnorm.batch_norm(x, eps=0)
    with pytest.raises(ValueError, match="eps: expected a finite number > 0"):
        fastnorm.batch_norm(x, eps=np.inf)
    with pytest.raises(ValueError, match=r"momentum: expected a number in \[0, 1\]"):
        fastnorm.batch_norm(x, running_mean=np.zeros(3), running_var=np.ones(3), momentum=1.5)
    with pytest.raises(ValueError, match="more than one value per channel"):
        fastnorm.batch_norm(np.ones((1, 3)))
    with pytest.raises(ValueError, match=r"running_mean: expected shape \(3,\)"):
        fastnorm.batch_norm(x, running_mean=np.zeros(2), running_var=np.ones(3))
    ro = np.zeros(3)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="running_var: array is read-only"):
        fastnorm.batch_norm(x, running_mean=np.zeros(3), running_var=ro)
    with pytest.raises(ValueError, match="num_batches_tracked: required with momentum=None"):
        fastnorm.batch_norm(x, running_mean=np.zeros(3), running_var=np.ones(3), momentum=None)
    with pytest.raises(ValueError, match="running_mean: test mode"):
        fastnorm.batch_norm(x, training=False)
    with pytest.raises(ValueError, match="x: batch norm needs an array of rank >= 2"):
        fastnorm.batch_norm(np.ones(5))
    with pytest.raises(ValueError, match=r"mean: expected shape \(3,\)"):
        fastnorm.batch_norm_backward(x, x, np.zeros(2), np.ones(3))
    with pytest.raises(ValueError, match=r"rstd: expected shape \(3,\)"):
        fastnorm.batch_norm_backward(x, x, np.zeros(3), np.ones(4))


def test_matches_pytorch_train_and_eval():
    torch = pytest.importorskip("torch", reason="PyTorch is optional; this compares with it when installed")
    rng = np.random.default_rng(7)
    x = rng.standard_normal((8, 4, 5, 5)).astype(np.float32) * 3 + 2
    layer = torch.nn.BatchNorm2d(4, momentum=0.2)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, 4).astype(np.float32)))
        layer.bias.copy_(torch.from_numpy(rng.standard_normal(4).astype(np.float32)))
    gamma, beta = layer.weight.detach().numpy().copy(), layer.bias.detach().numpy().copy()
    rm, rv, n = np.zeros(4, np.float32), np.ones(4, np.float32), np.array(0)
    tx = torch.from_numpy(x).requires_grad_(True)
    ty = layer(tx)
    y, mean, rstd = fastnorm.batch_norm(x, gamma=gamma, beta=beta, running_mean=rm, running_var=rv, momentum=0.2,
                                        num_batches_tracked=n, return_stats=True)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rm, layer.running_mean.numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(rv, layer.running_var.numpy(), rtol=1e-6)
    assert int(n) == int(layer.num_batches_tracked)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    ty.backward(torch.from_numpy(dy))
    dx, dgamma, dbeta = fastnorm.batch_norm_backward(dy, x, mean, rstd, gamma)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dgamma, layer.weight.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dbeta, layer.bias.grad.numpy(), rtol=1e-5, atol=1e-4)
    layer.eval()
    with torch.no_grad():
        ey = layer(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(fastnorm.batch_norm(x, gamma=gamma, beta=beta, training=False, running_mean=rm,
                                                   running_var=rv), ey, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape,axis", [((16, 37, 9, 9), 1), ((3, 5, 1000), 1), ((300, 3, 100), 1), ((64, 9, 9, 8), -1),
                                        ((10, 100), 0)])
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
@pytest.mark.parametrize("activation", [None, "relu"])
def test_schedules_give_the_same_bits(shape, axis, dtype, activation, rng, bn_schedule):
    """batch_norm and batch_norm_backward, as users call them, give the same bits whichever schedule the training calls
    take: the fastest (by channel where the shape suits) and two passes everywhere.  (by_channel alone declines some
    of these shapes; the tests above compare it with the steps where it runs.)"""
    dtype = np.dtype(dtype) if dtype in ("float32", "float64") else half_dtype(dtype)
    x = (rng.standard_normal(shape) * 3 + 5).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    C = shape[axis]
    gamma, beta = rng.uniform(0.5, 1.5, C), rng.standard_normal(C)
    results = set()
    for schedule in ("fastest", "two_pass"):
        bn_schedule(schedule)
        y, mean, rstd = fastnorm.batch_norm(x, gamma=gamma, beta=beta, axis=axis, activation=activation,
                                            return_stats=True)
        dx, dg, db = fastnorm.batch_norm_backward(dy, x, mean, rstd, gamma, beta=beta, axis=axis,
                                                  activation=activation)
        results.add(b"".join(np.ascontiguousarray(a).tobytes() for a in (y, mean, rstd, dx, dg, db)))
    assert len(results) == 1


def test_schedule_names(bn_schedule):
    from fastnorm import _C
    assert _C.bn_schedule() == "fastest"
    bn_schedule("two_pass")
    assert _C.bn_schedule() == "two_pass"
    with pytest.raises(ValueError, match="schedule: unknown value 'one_pass'"):
        bn_schedule("one_pass")
