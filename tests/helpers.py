"""Shared pieces of the tests: how each public activation is called, tolerances, a central-difference check."""
import numpy as np

import fastnorm
import reference as ref

# Tolerances against the float64 reference: the kernels are accurate to a few ulps (docs/accuracy.md); the
# absolute part covers gelu_tanh's tails, whose error is set by rounding its argument, and backward values near
# a zero of the derivative.
TOL = {
    np.dtype(np.float16): (2e-3, 1e-3),
    np.dtype(np.float32): (2e-5, 1e-6),
    np.dtype(np.float64): (1e-12, 1e-13),
}


def half_dtype(name):
    """float16 (skipped where the build has no native float16 kernels) or ml_dtypes' bfloat16 (skipped without
    ml_dtypes): the half storage types the kernels read and write natively."""
    import pytest
    if name == "float16":
        if not fastnorm._C.native_float16:
            pytest.skip("this build has no native float16 kernels")
        return np.dtype(np.float16)
    return np.dtype(pytest.importorskip("ml_dtypes").bfloat16)


def assert_within_one_ulp(actual, want32, dt):
    """actual (dtype dt) is want32 rounded to dt, or one of its neighbours: statistics a few float32 ulps apart move
    each value by a few float32 ulps of the array's scale (more than a unit of dt where values cancel to near 0)."""
    assert actual.dtype == dt
    want32 = np.asarray(want32, dtype=np.float64)
    want, got = want32.astype(dt).astype(np.float64), actual.astype(np.float64)
    bits = 11 if np.dtype(dt) == np.float16 else 8
    smallest = float(np.array(1, np.uint16).view(dt))  # the spacing of the subnormals
    ulp = np.maximum(np.maximum(np.abs(want), np.abs(got)) * 2.0 ** (1 - bits), smallest)
    scale = float(np.max(np.abs(want32), initial=0.0))
    np.testing.assert_array_less(np.abs(got - want), ulp * 1.0001 + 2.0 ** -20 * scale)


def assert_stats_close(mean, rstd, want_mean, want_rstd):
    """Statistics of narrow data (float32 sums) against the float32 array's (float64 sums)."""
    np.testing.assert_allclose(mean, want_mean, rtol=1e-6, atol=1e-6 / np.min(want_rstd))
    np.testing.assert_allclose(rstd, want_rstd, rtol=2e-6)


def public_name(name):
    return "gelu" if name == "gelu_tanh" else name


def call_forward(name, x, kw, **extra):
    return getattr(fastnorm, public_name(name))(x, **kw, **extra)


def call_backward(name, dy, x, kw, **extra):
    return getattr(fastnorm, public_name(name) + "_backward")(dy, x, **kw, **extra)


def assert_close(actual, expected, dtype):
    rtol, atol = TOL[np.dtype(dtype)]
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, rtol=rtol, atol=atol)


def central_difference(f, x, h=1e-6):
    """Elementwise derivative of an elementwise f by central differences, in float64."""
    x = np.asarray(x, dtype=np.float64)
    return (f(x + h) - f(x - h)) / (2 * h)


def numeric_partial(loss, arr, index, h=1e-6):
    """d loss / d arr[index] by central differences, in float64; arr itself is not modified."""
    plus, minus = np.array(arr, dtype=np.float64), np.array(arr, dtype=np.float64)
    plus[index] += h
    minus[index] -= h
    return (loss(plus) - loss(minus)) / (2 * h)


def empty_at(shape, dtype, offset):
    """An uninitialised C-contiguous array whose data starts ``offset`` elements past a NumPy allocation (so not
    64-byte aligned for offset 1)."""
    return np.empty(int(np.prod(shape)) + offset, dtype)[offset:].reshape(shape)



# How the suites call each normalization of reference.NORMS, with one signature for all:
#   forward(x, gamma, beta, axis, **kw) -> (y, stats)          (return_stats=True)
#   backward(dy, x, stats, gamma, beta, axis, **kw) -> (dx, dgamma[, dbeta])
NORM_CALLS = {
    "batch_norm": (
        lambda x, g, b, axis, **k: _split(fastnorm.batch_norm(x, gamma=g, beta=b, axis=axis, return_stats=True, **k)),
        lambda dy, x, s, g, b, axis, **k: fastnorm.batch_norm_backward(dy, x, *s, g, beta=b, axis=axis, **k)),
    "instance_norm": (
        lambda x, g, b, axis, **k: _split(fastnorm.instance_norm(x, gamma=g, beta=b, axis=axis, return_stats=True,
                                                                 **k)),
        lambda dy, x, s, g, b, axis, **k: fastnorm.instance_norm_backward(dy, x, *s, g, beta=b, axis=axis, **k)),
    "group_norm": (
        lambda x, g, b, axis, **k: _split(fastnorm.group_norm(x, ref.num_groups(x.shape[axis]), g, b, axis=axis,
                                                              return_stats=True, **k)),
        lambda dy, x, s, g, b, axis, **k: fastnorm.group_norm_backward(dy, x, *s, ref.num_groups(x.shape[axis]), g,
                                                                       beta=b, axis=axis, **k)),
    "layer_norm": (
        lambda x, g, b, axis, **k: _split(fastnorm.layer_norm(x, g, b, axis=axis, return_stats=True, **k)),
        lambda dy, x, s, g, b, axis, **k: fastnorm.layer_norm_backward(dy, x, *s, g, beta=b, axis=axis, **k)),
    "rms_norm": (
        lambda x, g, b, axis, **k: _split(fastnorm.rms_norm(x, g, axis=axis, return_stats=True, **k)),
        lambda dy, x, s, g, b, axis, **k: fastnorm.rms_norm_backward(dy, x, *s, g, axis=axis, **k)),
}


def _split(result):
    return result[0], tuple(result[1:])


def norm_forward(name, x, gamma, beta, axis, **kw):
    """(y, stats) of the normalization ``name`` (reference.NORMS) with its statistics returned."""
    return NORM_CALLS[name][0](x, gamma, beta, axis, **kw)


def norm_backward(name, dy, x, stats, gamma, beta, axis, **kw):
    """The gradients (dx first) of the normalization ``name`` given the statistics its forward returned."""
    return tuple(NORM_CALLS[name][1](dy, x, stats, gamma, beta, axis, **kw))


def norm_params(name, shape, axis, rng, dtype=np.float64):
    """gamma and beta (None where the normalization has no beta) for x of ``shape``: away from 0 and 1."""
    c = shape[axis]
    gamma = rng.uniform(0.5, 1.5, c).astype(dtype)
    beta = rng.standard_normal(c).astype(dtype) if ref.NORMS[name].has_beta else None
    return gamma, beta


def norm_layouts():
    """(name, shape, axis) for every layout of every normalization, with readable test ids."""
    import pytest
    return [pytest.param(name, shape, axis, id=f"{name}-{'x'.join(map(str, shape))}-axis{axis}")
            for name, case in ref.NORMS.items() for shape, axis in case.layouts]
