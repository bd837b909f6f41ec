"""float16 and bfloat16 storage in the per-channel kernels (batch, group and instance norm, moments, the
Standardizer): read and written as such, computed in float32 piece by piece.

The statistics of narrow data are summed in float32 around each piece's own mean (centering.h,
narrow_piece_moments), so they differ from those of the float32 array in the last bits: they must agree to 1e-6
of the spread, and stay as accurate for data far from zero, outliers, overflowing squares and tiny spreads.
Everything computed from given statistics (the normalization itself, every backward, test mode, the
Standardizer's transform) sees the same values in the same pieces as for the float32 array, so it must have the
bits of the float32 computation on the widened input, rounded once.  Every result is bitwise the same for any
thread count, ISA level and with or without streaming stores.  (Layer and RMS norm: test_layer_norm.py.)"""
import numpy as np
import pytest

import fastnorm
from helpers import (assert_stats_close, assert_within_one_ulp, half_dtype, norm_backward, norm_forward, norm_layouts,
                     norm_params)


def assert_rounded_from(actual, want32, dt):
    """actual (dtype dt) has the bits of want32 (float32) rounded to dt."""
    assert actual.dtype == dt
    np.testing.assert_array_equal(actual.view(np.uint16), np.asarray(want32).astype(dt).view(np.uint16))


def assert_param_grads_float32(got, want):
    """dgamma and dbeta of half data: float32 (a sum over a batch overflows float16), the float32 data's bits."""
    for a, w in zip(got, want):
        assert a.dtype == np.float32
        np.testing.assert_array_equal(a, w)


# (shape, channel axis): NCHW with long and short runs, channels-last, a middle channel axis, (N, D)
LAYOUTS = [((4, 6, 9, 11), 1), ((3, 5, 3000), 1), ((4, 7, 9, 6), -1), ((2, 3, 6, 5), 2), ((700, 12), 1)]


@pytest.mark.parametrize("half", ["float16", "bfloat16"])
@pytest.mark.parametrize("shape,axis", LAYOUTS)
@pytest.mark.parametrize("activation", [None, "silu"])
def test_batch_norm_half_is_float32_rounded_once(half, shape, axis, activation, rng, stream_threshold):
    dt = half_dtype(half)
    x = (rng.standard_normal(shape) * 3 + 1).astype(dt)
    dy = rng.standard_normal(shape).astype(dt)
    C = shape[axis]
    g, b = rng.standard_normal(C), rng.standard_normal(C)
    x32, dy32 = x.astype(np.float32), dy.astype(np.float32)
    kw = dict(axis=axis, activation=activation)
    want_y, want_mean, want_rstd = fastnorm.batch_norm(x32, gamma=g, beta=b, return_stats=True, **kw)
    y1, mean1, rstd1 = fastnorm.batch_norm(x, gamma=g, beta=b, return_stats=True, num_threads=1, **kw)
    assert_stats_close(mean1, rstd1, want_mean, want_rstd)
    assert_within_one_ulp(y1, want_y, dt)
    want = fastnorm.batch_norm_backward(dy32, x32, mean1, rstd1, g, beta=b, **kw)
    rm, rv = np.zeros(C), np.ones(C)
    want_test = fastnorm.batch_norm(x32, gamma=g, beta=b, training=False, running_mean=rm, running_var=rv, **kw)
    for threads, threshold in [(1, -1), (2, -1), (3, 0)]:
        stream_threshold(threshold)
        y, mean, rstd = fastnorm.batch_norm(x, gamma=g, beta=b, return_stats=True, num_threads=threads, **kw)
        np.testing.assert_array_equal(y.view(np.uint16), y1.view(np.uint16))
        np.testing.assert_array_equal(mean, mean1)
        np.testing.assert_array_equal(rstd, rstd1)
        got = fastnorm.batch_norm_backward(dy, x, mean, rstd, g, beta=b, num_threads=threads, **kw)
        assert_rounded_from(got[0], want[0], dt)
        assert_param_grads_float32(got[1:], want[1:])
        got_test = fastnorm.batch_norm(x, gamma=g, beta=b, training=False, running_mean=rm, running_var=rv,
                                       num_threads=threads,
                                       **kw)
        assert_rounded_from(got_test, want_test, dt)


@pytest.mark.parametrize("half", ["float16", "bfloat16"])
@pytest.mark.parametrize("shape,axis", LAYOUTS[:4])
@pytest.mark.parametrize("activation", [None, "gelu"])
def test_group_and_instance_norm_half_are_float32_rounded_once(half, shape, axis, activation, rng,
                                                                 stream_threshold):
    dt = half_dtype(half)
    x = (rng.standard_normal(shape) * 3 - 2).astype(dt)
    dy = rng.standard_normal(shape).astype(dt)
    C = shape[axis]
    g, b = rng.standard_normal(C), rng.standard_normal(C)
    x32, dy32 = x.astype(np.float32), dy.astype(np.float32)
    kw = dict(axis=axis, activation=activation)
    for groups in sorted({1, C}):
        want_y, want_mean, want_rstd = fastnorm.group_norm(x32, groups, g, b, return_stats=True, **kw)
        y1, mean1, rstd1 = fastnorm.group_norm(x, groups, g, b, return_stats=True, num_threads=1, **kw)
        assert_stats_close(mean1, rstd1, want_mean, want_rstd)
        assert_within_one_ulp(y1, want_y, dt)
        want = fastnorm.group_norm_backward(dy32, x32, mean1, rstd1, groups, g, beta=b, **kw)
        for threads, threshold in [(1, -1), (2, -1), (3, 0)]:
            stream_threshold(threshold)
            y, mean, rstd = fastnorm.group_norm(x, groups, g, b, return_stats=True, num_threads=threads, **kw)
            np.testing.assert_array_equal(y.view(np.uint16), y1.view(np.uint16))
            np.testing.assert_array_equal(mean, mean1)
            np.testing.assert_array_equal(rstd, rstd1)
            got = fastnorm.group_norm_backward(dy, x, mean, rstd, groups, g, beta=b, num_threads=threads, **kw)
            assert_rounded_from(got[0], want[0], dt)
            assert_param_grads_float32(got[1:], want[1:])
    want_y = fastnorm.instance_norm(x32, gamma=g, beta=b, **kw)
    assert_within_one_ulp(fastnorm.instance_norm(x, gamma=g, beta=b, **kw), want_y, dt)


@pytest.mark.parametrize("half", ["float16", "bfloat16"])
@pytest.mark.parametrize("name,shape,axis", norm_layouts())
def test_every_normalization_in_half_storage(half, name, shape, axis, rng):
    """Every normalization of reference.NORMS: the forward within one unit of the float32 computation rounded, the
    backward given the same statistics that computation's bits rounded once, the parameter gradients float32."""
    dt = half_dtype(half)
    x = (rng.standard_normal(shape) * 3 + 1).astype(dt)
    dy = rng.standard_normal(shape).astype(dt)
    gamma, beta = norm_params(name, shape, axis, rng)
    x32, dy32 = x.astype(np.float32), dy.astype(np.float32)
    want_y, want_stats = norm_forward(name, x32, gamma, beta, axis, activation="silu")
    y, stats = norm_forward(name, x, gamma, beta, axis, activation="silu")
    assert_within_one_ulp(y, want_y, dt)
    want = norm_backward(name, dy32, x32, stats, gamma, beta, axis, activation="silu")
    got = norm_backward(name, dy, x, stats, gamma, beta, axis, activation="silu")
    assert_rounded_from(got[0], want[0], dt)
    assert_param_grads_float32(got[1:], want[1:])


@pytest.mark.parametrize("half", ["float16", "bfloat16"])
def test_moments_and_standardizer_read_half_natively(half, rng):
    dt = half_dtype(half)
    for shape, axis in [((50, 7, 300), (0, 2)), ((3000, 5), 0), ((4, 9, 9, 3), (0, 1, 2))]:
        x = (rng.standard_normal(shape) * 2 + 1e3).astype(dt)
        x32 = x.astype(np.float32)
        want, first = fastnorm.moments(x32, axis), fastnorm.moments(x, axis, num_threads=1)
        np.testing.assert_allclose(first.mean, want.mean, rtol=1e-9)
        np.testing.assert_allclose(first.m2, want.m2, rtol=1e-5)
        for threads in (2, 3):
            got = fastnorm.moments(x, axis, num_threads=threads)
            np.testing.assert_array_equal(got.mean, first.mean)
            np.testing.assert_array_equal(got.m2, first.m2)
        s = fastnorm.preprocessing.Standardizer(axis=axis).fit(x32)
        assert_rounded_from(s.transform(x), s.transform(x32), dt)


def _narrow_cases(rng, n):
    z = rng.standard_normal(n)
    outlier = z.copy()
    outlier[0:n:2048] = 6e4  # each piece's first value far from the rest
    yield "float16", "far from zero", 1000 + 2 * z
    yield "float16", "outlying first values", outlier
    yield "float16", "subnormal spread", z * 1e-6
    yield "bfloat16", "far from zero", 3e4 + 10 * z
    yield "bfloat16", "squares overflow float32", 3e30 + 1e30 * z
    yield "bfloat16", "squares underflow float32", 1e-30 * z
    yield "bfloat16", "spread below 2^-50", 1e-16 + 1e-20 * z


@pytest.mark.parametrize("n", [5000, 64 * 37 + 5])
def test_narrow_statistics_stay_accurate(n, rng):
    """moments (and so the batch norm statistics) of narrow data against float64 sums of the widened values."""
    for half, what, values in _narrow_cases(rng, n):
        x = values.astype(half_dtype(half))
        x64 = x.astype(np.float64)
        mean = x64.mean()
        m2 = ((x64 - mean) ** 2).sum()
        got = fastnorm.moments(x, 0)
        np.testing.assert_allclose(got.mean, mean, rtol=1e-7, atol=1e-6 * np.sqrt(m2 / n), err_msg=what)
        np.testing.assert_allclose(got.m2, m2, rtol=1e-5, err_msg=what)
        for threads in (2, 3):
            again = fastnorm.moments(x, 0, num_threads=threads)
            assert (again.mean, again.m2) == (got.mean, got.m2), what


@pytest.mark.parametrize("half", ["float16", "bfloat16"])
def test_narrow_statistics_of_constant_and_non_finite_pieces(half):
    dt = half_dtype(half)
    x = np.full(5000, 3.0).astype(dt)
    got = fastnorm.moments(x, 0)
    assert (got.mean, got.m2) == (3.0, 0.0)
    for bad in (np.nan, np.inf):  # no finite statistics from a non-finite value
        y = x.copy()
        y[3000] = bad
        got = fastnorm.moments(y, 0)
        assert not np.isfinite(got.mean) and not np.isfinite(got.m2)
