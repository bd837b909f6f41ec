"""Every activation, forward and backward, against the float64 references of reference.py."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastnorm
import reference as ref
from helpers import assert_close, call_backward, call_forward, central_difference, half_dtype

NAMES = sorted(ref.ELEMENTWISE)
DTYPES = [np.float16, np.float32, np.float64]


@st.composite
def arrays(draw, dtype=None, min_dims=0, max_dims=4, lo=-30.0, hi=30.0):
    """Arrays of any rank (empty included) in one of several layouts: C order, Fortran order, strided, reversed."""
    dtype = np.dtype(dtype or draw(st.sampled_from(DTYPES)))
    shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=0, max_side=7))
    elements = st.floats(lo, hi, width=8 * dtype.itemsize, allow_nan=False)
    base = draw(hnp.arrays(dtype, tuple(2 * s for s in shape), elements=elements))
    layout = draw(st.sampled_from(["c", "f", "strided", "reversed"]))
    if layout == "f":
        return np.asfortranarray(base[tuple(slice(0, s) for s in shape)])
    if layout == "strided":
        return base[tuple(slice(None, None, 2) for _ in shape)]
    if layout == "reversed":
        return base[tuple(slice(s - 1, None, -1) if s else slice(0, 0) for s in shape)]
    return np.ascontiguousarray(base[tuple(slice(0, s) for s in shape)]) if shape else base


@pytest.mark.parametrize("name", NAMES)
@given(x=arrays())
def test_forward_matches_reference(name, x):
    kw = ref.ELEMENTWISE[name][2]
    y = call_forward(name, x, kw)
    assert y.dtype == x.dtype and y.shape == x.shape
    assert_close(y, ref.forward(name, x, **kw), x.dtype)


@pytest.mark.parametrize("name", NAMES)
@given(x=arrays(), data=st.data())
def test_backward_matches_reference(name, x, data):
    kw = ref.ELEMENTWISE[name][2]
    dy = data.draw(hnp.arrays(x.dtype, x.shape, elements=st.floats(-3, 3, width=8 * x.dtype.itemsize)))
    dx = call_backward(name, dy, x, kw)
    assert dx.dtype == x.dtype and dx.shape == x.shape
    expected = ref.f64(dy) * ref.derivative(name, x, **kw)
    if x.dtype == np.float16:  # dx is rounded twice (float32 -> float16): compare against dy's scale
        np.testing.assert_allclose(dx.astype(np.float64), expected, rtol=4e-3, atol=2e-3)
    else:
        assert_close(dx, expected, x.dtype)


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "relu", "elu"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_from_output_equals_backward_from_input(name, dtype, rng):
    kw = ref.ELEMENTWISE[name][2]
    x = rng.uniform(-6, 6, size=(5, 33)).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    y = call_forward(name, x, kw)
    from_y = getattr(fastnorm, name + "_backward")(dy, y=y, **kw)
    from_x = call_backward(name, dy, x, kw)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(from_y, from_x, rtol=rtol, atol=rtol)


def test_backward_needs_exactly_one_of_x_and_y():
    with pytest.raises(TypeError, match="exactly one"):
        fastnorm.sigmoid_backward(np.ones(3))
    with pytest.raises(TypeError, match="exactly one"):
        fastnorm.sigmoid_backward(np.ones(3), np.ones(3), y=np.ones(3))
    with pytest.raises(ValueError, match="no backward from its output"):
        from fastnorm import _C
        _C.activation_backward(_C.activation_names().index("gelu"), np.ones(2), np.ones(2), np.ones(2), 0, 0,
                               True, 1)


# Points where the derivative jumps: central differences are meaningless within h of them.
KINKS = {"relu": [0], "leaky_relu": [0], "elu": [0], "selu": [0], "hardtanh": [-0.5, 2.0],
         "hardsigmoid": [-3, 3], "hardswish": [-3, 3], "softplus": [10.0]}


@pytest.mark.parametrize("name", NAMES)
def test_gradient_check_float64(name, rng):
    """The analytic backward equals central differences of the forward (float64, away from kinks)."""
    kw = ref.ELEMENTWISE[name][2]
    x = np.concatenate([rng.uniform(-8, 8, 2000), rng.uniform(-1, 1, 500)])
    for k in KINKS.get(name, []):
        x = x[np.abs(x - k) > 1e-3]
    numeric = central_difference(lambda v: call_forward(name, v, kw), x)
    analytic = call_backward(name, np.ones_like(x), x, kw)
    err = np.abs(analytic - numeric) / np.maximum(1.0, np.abs(numeric))
    assert err.max() < 1e-7, f"worst at x={x[err.argmax()]}: analytic {analytic[err.argmax()]}, numeric " \
                             f"{numeric[err.argmax()]}"


# Limits at the infinities, and NaN in -> NaN out, forward and backward.
SPECIAL = {  # name: (f(-inf), f(+inf), f'(-inf), f'(+inf))
    "sigmoid": (0, 1, 0, 0), "tanh": (-1, 1, 0, 0), "relu": (0, np.inf, 0, 1),
    "leaky_relu": (-np.inf, np.inf, 0.05, 1), "elu": (-1.3, np.inf, 0, 1),
    "selu": (-ref.SELU_SCALE * ref.SELU_ALPHA, np.inf, 0, ref.SELU_SCALE), "gelu": (0, np.inf, 0, 1),
    "gelu_tanh": (0, np.inf, 0, 1), "silu": (0, np.inf, 0, 1), "softplus": (0, np.inf, 0, 1),
    "mish": (0, np.inf, 0, 1), "hardtanh": (-0.5, 2.0, 0, 0), "hardsigmoid": (0, 1, 0, 0),
    "hardswish": (0, np.inf, 0, 1),
}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_infinities_follow_the_maths_and_nan_propagates(name, dtype):
    kw = ref.ELEMENTWISE[name][2]
    x = np.array([-np.inf, np.inf, np.nan], dtype=dtype)
    f_lo, f_hi, d_lo, d_hi = SPECIAL[name]
    y = call_forward(name, x, kw)
    dx = call_backward(name, np.ones_like(x), x, kw)
    np.testing.assert_allclose(y[:2], np.array([f_lo, f_hi], dtype=dtype), rtol=1e-6)
    np.testing.assert_allclose(dx[:2], np.array([d_lo, d_hi], dtype=dtype), rtol=1e-6)
    assert np.isnan(y[2]) and np.isnan(dx[2])
    assert np.isnan(call_backward(name, np.array([np.nan], dtype), np.array([0.5], dtype), kw)[0])


# ---- PReLU ----------------------------------------------------------------------------------------------------

@given(x=arrays(dtype=np.float64, min_dims=1), data=st.data())
def test_prelu_per_channel_matches_reference(x, data):
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    channels = x.shape[axis]
    alpha = data.draw(hnp.arrays(np.float64, (channels,), elements=st.floats(-1, 1)))
    dy = data.draw(hnp.arrays(np.float64, x.shape, elements=st.floats(-3, 3)))
    if channels == 1:
        alpha = alpha.reshape(())
    y = fastnorm.prelu(x, alpha, axis=axis)
    np.testing.assert_allclose(y, ref.prelu(x, alpha, axis % x.ndim), rtol=1e-15)
    dx, dalpha = fastnorm.prelu_backward(dy, x, alpha, axis=axis)
    expected_dx, expected_dalpha = ref.prelu_grads(dy, x, alpha, axis % x.ndim)
    np.testing.assert_allclose(dx, expected_dx, rtol=1e-15)
    assert dalpha.shape == np.shape(alpha)
    np.testing.assert_allclose(dalpha, expected_dalpha, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", [((4, 3, 5, 6), 1), ((4, 5, 6, 3), -1), ((7, 3), 1), ((2, 3, 40), 1)])
def test_prelu_layouts_and_dtypes(shape, axis, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    alpha = rng.uniform(0, 0.5, shape[axis]).astype(dtype)
    y = fastnorm.prelu(x, alpha, axis=axis)
    assert y.dtype == dtype
    assert_close(y, ref.prelu(x, alpha, axis % len(shape)), dtype)


def test_prelu_scalar_alpha_is_leaky_relu(rng):
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    np.testing.assert_array_equal(fastnorm.prelu(x, 0.2), fastnorm.leaky_relu(x, 0.2))
    dx, dalpha = fastnorm.prelu_backward(np.ones_like(x), x, np.float32(0.2))
    assert dalpha.shape == () and np.isclose(dalpha, x[x <= 0].sum(), rtol=1e-6)


def test_prelu_gradient_check(rng):
    x = rng.standard_normal((6, 4, 7))
    x = np.where(np.abs(x) < 1e-3, 0.5, x)  # away from the kink at 0
    dy = rng.standard_normal(x.shape)
    alpha = rng.uniform(0.05, 0.3, 4)
    dx, dalpha = fastnorm.prelu_backward(dy, x, alpha)
    h = 1e-6
    numeric_dx = dy * central_difference(lambda v: fastnorm.prelu(v, alpha), x)
    np.testing.assert_allclose(dx, numeric_dx, rtol=1e-7, atol=1e-9)
    for c in range(4):
        e = np.zeros(4)
        e[c] = h
        numeric = ((dy * fastnorm.prelu(x, alpha + e)).sum() - (dy * fastnorm.prelu(x, alpha - e)).sum()) / (2 * h)
        assert abs(numeric - dalpha[c]) < 1e-7 * max(1, abs(numeric))


# ---- Maxout ---------------------------------------------------------------------------------------------------

@given(data=st.data())
def test_maxout_matches_reference(data):
    pieces = data.draw(st.integers(1, 4))
    shape = list(data.draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5)))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    shape[axis] *= pieces
    dtype = data.draw(st.sampled_from(DTYPES))
    x = data.draw(hnp.arrays(dtype, tuple(shape), elements=st.floats(-100, 100, width=8 * np.dtype(dtype).itemsize)))
    y = fastnorm.maxout(x, pieces, axis=axis)
    np.testing.assert_array_equal(y, ref.maxout(x, pieces, axis).astype(dtype))
    dy = np.arange(y.size, dtype=dtype).reshape(y.shape) + 1
    dx = fastnorm.maxout_backward(dy, x, pieces, axis=axis)
    # dy lands on the first arg-max of each group, and nowhere else
    ax = axis % x.ndim
    grouped = (x.shape[:ax] + (x.shape[ax] // pieces, pieces) + x.shape[ax + 1:])
    xg, dxg = x.reshape(grouped), dx.reshape(grouped)
    arg = np.expand_dims(np.argmax(xg, axis=ax + 1), ax + 1)
    np.testing.assert_array_equal(np.squeeze(np.take_along_axis(dxg, arg, ax + 1), ax + 1), dy)
    assert np.count_nonzero(dx) == np.count_nonzero(dy)


def test_maxout_ties_go_to_the_first_piece_and_nan_wins():
    x = np.array([[1.0, 1.0, 0.0, np.nan, 2.0, np.nan]])
    np.testing.assert_array_equal(fastnorm.maxout(x, 2), [[1.0, np.nan, np.nan]])
    dx = fastnorm.maxout_backward(np.array([[5.0, 6.0, 7.0]]), x, 2)
    np.testing.assert_array_equal(dx, [[5.0, 0.0, 0.0, 6.0, 0.0, 7.0]])


def test_maxout_gradient_check(rng):
    x = rng.standard_normal((3, 12, 4))
    dy = rng.standard_normal((3, 4, 4))
    dx = fastnorm.maxout_backward(dy, x, 3)
    numeric = np.zeros_like(x)
    h = 1e-6
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        numeric[i] = ((dy * fastnorm.maxout(xp, 3)).sum() - (dy * fastnorm.maxout(xm, 3)).sum()) / (2 * h)
    np.testing.assert_allclose(dx, numeric, atol=1e-7)


@pytest.mark.parametrize("half", ["float16", "bfloat16"])
@pytest.mark.parametrize("name", ["relu", "leaky_relu", "sigmoid", "tanh", "gelu", "silu", "elu", "hardswish"])
def test_native_half_equals_float32_rounded_once(name, half, rng):
    """float16 and bfloat16 are read and written as such and computed in float32 inside the kernel: the same bits
    as computing in float32 and rounding the result once, forward and backward, for any thread count."""
    dt = half_dtype(half)
    x = (rng.standard_normal(70001) * 4).astype(dt)
    dy = rng.standard_normal(70001).astype(dt)
    f, fb = getattr(fastnorm, name), getattr(fastnorm, name + "_backward")
    for threads in (1, 2):
        y = f(x, num_threads=threads)
        assert y.dtype == dt
        np.testing.assert_array_equal(y.view(np.uint16), f(x.astype(np.float32)).astype(dt).view(np.uint16))
        dx = fb(dy, x, num_threads=threads)
        want = fb(dy.astype(np.float32), x.astype(np.float32)).astype(dt)
        np.testing.assert_array_equal(dx.view(np.uint16), want.view(np.uint16))
    out = np.empty_like(x)
    assert f(x, out=out) is out


def test_bfloat16_rounds_every_value_as_ml_dtypes():
    """Every bfloat16 bit pattern (zeros, denormals, infinities, NaNs) through leaky_relu with slope 0.3, whose
    float32 results need rounding: the same bits as ml_dtypes' astype, ties to even, NaN quiet with its sign."""
    bf16 = pytest.importorskip("ml_dtypes").bfloat16
    x = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(bf16)
    y = fastnorm.leaky_relu(x, 0.3)
    want = fastnorm.leaky_relu(x.astype(np.float32), 0.3).astype(bf16)
    np.testing.assert_array_equal(y.view(np.uint16), want.view(np.uint16))
    # Ties to even, above a tie, and overflow to infinity: dx = dy * slope with dy = 1 and x < 0 is the slope.
    one = np.ones(1, bf16)
    for bits, rounded in [(0x3F808000, 0x3F80), (0x3F818000, 0x3F82), (0x3F808001, 0x3F81), (0x7F7FFFFF, 0x7F80)]:
        slope = float(np.uint32(bits).view(np.float32))
        assert fastnorm.leaky_relu_backward(one, -one, negative_slope=slope).view(np.uint16)[0] == rounded
