"""float16 and bfloat16 storage in the per-channel kernels (batch, group and instance norm, moments, the
Standardizer): read and written as such, computed in float32 piece by piece.  The float32 bodies see the same
values in the same pieces as for the float32 array, so every result must have the bits of the float32 computation
on the widened input, rounded once, for any thread count, ISA level and with or without streaming stores.
(Layer and RMS norm have the same test in test_layer_norm.py.)"""
import numpy as np
import pytest

import fastnorm
from helpers import half_dtype


def assert_rounded_from(actual, want32, dt):
    """actual (dtype dt) has the bits of want32 (float32) rounded to dt."""
    assert actual.dtype == dt
    np.testing.assert_array_equal(actual.view(np.uint16), np.asarray(want32).astype(dt).view(np.uint16))


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
    want_y, want_mean, want_rstd = fastnorm.batch_norm(x32, g, b, return_stats=True, **kw)
    want = fastnorm.batch_norm_backward(dy32, x32, want_mean, want_rstd, g, beta=b, **kw)
    rm, rv = np.zeros(C), np.ones(C)
    want_test = fastnorm.batch_norm(x32, g, b, training=False, running_mean=rm, running_var=rv, **kw)
    for threads, threshold in [(1, -1), (2, -1), (3, 0)]:
        stream_threshold(threshold)
        y, mean, rstd = fastnorm.batch_norm(x, g, b, return_stats=True, num_threads=threads, **kw)
        assert_rounded_from(y, want_y, dt)
        np.testing.assert_array_equal(mean, want_mean)
        np.testing.assert_array_equal(rstd, want_rstd)
        got = fastnorm.batch_norm_backward(dy, x, mean, rstd, g, beta=b, num_threads=threads, **kw)
        for a, w in zip(got, want):
            assert_rounded_from(a, w, dt)
        got_test = fastnorm.batch_norm(x, g, b, training=False, running_mean=rm, running_var=rv, num_threads=threads,
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
        want = fastnorm.group_norm_backward(dy32, x32, want_mean, want_rstd, groups, g, beta=b, **kw)
        for threads, threshold in [(1, -1), (2, -1), (3, 0)]:
            stream_threshold(threshold)
            y, mean, rstd = fastnorm.group_norm(x, groups, g, b, return_stats=True, num_threads=threads, **kw)
            assert_rounded_from(y, want_y, dt)
            np.testing.assert_array_equal(mean, want_mean)
            np.testing.assert_array_equal(rstd, want_rstd)
            got = fastnorm.group_norm_backward(dy, x, mean, rstd, groups, g, beta=b, num_threads=threads, **kw)
            for a, w in zip(got, want):
                assert_rounded_from(a, w, dt)
    want_y = fastnorm.instance_norm(x32, g, b, **kw)
    assert_rounded_from(fastnorm.instance_norm(x, g, b, **kw), want_y, dt)


@pytest.mark.parametrize("half", ["float16", "bfloat16"])
def test_moments_and_standardizer_read_half_natively(half, rng):
    dt = half_dtype(half)
    for shape, axis in [((50, 7, 300), (0, 2)), ((3000, 5), 0), ((4, 9, 9, 3), (0, 1, 2))]:
        x = (rng.standard_normal(shape) * 2 + 1e3).astype(dt)
        x32 = x.astype(np.float32)
        for threads in (1, 2):
            got, want = fastnorm.moments(x, axis, num_threads=threads), fastnorm.moments(x32, axis)
            np.testing.assert_array_equal(got.mean, want.mean)
            np.testing.assert_array_equal(got.m2, want.m2)
        s = fastnorm.preprocessing.Standardizer(axis=axis).fit(x32)
        assert_rounded_from(s.transform(x), s.transform(x32), dt)
