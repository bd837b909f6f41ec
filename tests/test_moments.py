"""moments and merge_moments: against NumPy in float64, merging pieces, stability, determinism, bad input."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastnorm


@st.composite
def array_and_axes(draw):
    dtype = draw(st.sampled_from([np.float16, np.float32, np.float64, np.int32]))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6))
    if np.dtype(dtype).kind == "f":
        elements = st.floats(-1e3, 1e3, width=8 * np.dtype(dtype).itemsize)
    else:
        elements = st.integers(-1000, 1000)
    x = draw(hnp.arrays(dtype, shape, elements=elements))
    if draw(st.booleans()) and x.ndim >= 2:
        x = x.T  # another memory order
    axis = draw(st.one_of(st.none(), st.lists(st.integers(-x.ndim, x.ndim - 1), unique_by=lambda a: a % x.ndim)
                          .map(tuple) if x.ndim else st.none()))
    return x, axis


@given(array_and_axes())
def test_matches_numpy_float64(data):
    x, axis = data
    m = fastnorm.moments(x, axis=axis)
    x64 = x.astype(np.float64)
    ax = axis if axis is None else tuple(a % x.ndim for a in axis)
    count = x.size if ax is None else int(np.prod([x.shape[a] for a in ax]))
    assert m.count == count and m.mean.dtype == np.float64
    expected_shape = () if ax is None else tuple(s for i, s in enumerate(x.shape) if i not in ax)
    assert m.mean.shape == expected_shape and m.m2.shape == expected_shape
    if count and x.dtype == np.float16:  # summed in float32 around each piece's mean (test_half_storage.py)
        scale = float(np.max(np.abs(x64))) if x.size else 1.0
        np.testing.assert_allclose(m.mean, x64.mean(axis=ax), rtol=1e-7, atol=1e-7 * scale)
        np.testing.assert_allclose(m.var(), x64.var(axis=ax), rtol=4e-6, atol=1e-12 * scale ** 2)
    elif count:
        np.testing.assert_allclose(m.mean, x64.mean(axis=ax), rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(m.var(), x64.var(axis=ax), rtol=1e-10, atol=1e-9)
    else:
        assert (m.mean == 0).all() and (m.m2 == 0).all()


@pytest.mark.parametrize("shape,axis", [((16, 8, 9, 9), (0, 2, 3)), ((4000, 24), 0), ((50, 300), 1),
                                        ((7, 5, 3), (0, 2)), ((100001,), None)])
def test_pieces_merged_equal_the_whole(shape, axis, rng):
    x = rng.standard_normal(shape).astype(np.float32) * 3 + 5
    whole = fastnorm.moments(x, axis=axis)
    split_axis = 0 if axis is None else (axis if isinstance(axis, int) else axis[0])
    cuts = sorted(rng.choice(np.arange(1, x.shape[split_axis]), size=2, replace=False))
    pieces = np.split(x, cuts, axis=split_axis)
    merged = fastnorm.moments(pieces[0], axis=axis)
    for p in pieces[1:]:
        merged = fastnorm.merge_moments(merged, fastnorm.moments(p, axis=axis))
    assert merged.count == whole.count
    np.testing.assert_allclose(merged.mean, whole.mean, rtol=1e-12)
    np.testing.assert_allclose(merged.m2, whole.m2, rtol=1e-10)


def test_merge_with_empty_is_identity(rng):
    x = rng.standard_normal((10, 3))
    m = fastnorm.moments(x, axis=0)
    empty = fastnorm.moments(np.empty((0, 3)), axis=0)
    assert empty.count == 0 and (empty.mean == 0).all() and (empty.m2 == 0).all()
    for merged in (fastnorm.merge_moments(m, empty), fastnorm.merge_moments(empty, m)):
        np.testing.assert_array_equal(merged.mean, m.mean)
        np.testing.assert_array_equal(merged.m2, m.m2)
        assert merged.count == 10


@pytest.mark.parametrize("layout", ["nchw", "nhwc", "rows", "all"])
def test_float32_with_mean_far_above_std_is_accurate(layout, rng):
    """DESIGN.md's numerics rule: float32 data with mean 1e4 and std 1, variance within 1e-4 of the truth."""
    base = rng.standard_normal((64, 8, 32, 32))
    x = (base + 1e4).astype(np.float32)
    truth = x.astype(np.float64)
    if layout == "nchw":
        m, expected = fastnorm.moments(x, axis=(0, 2, 3)), truth.var(axis=(0, 2, 3))
    elif layout == "nhwc":
        xl = np.ascontiguousarray(np.moveaxis(x, 1, -1))
        m, expected = fastnorm.moments(xl, axis=(0, 1, 2)), truth.var(axis=(0, 2, 3))
    elif layout == "rows":
        xr = x.reshape(512, -1)
        m, expected = fastnorm.moments(xr, axis=1), truth.reshape(512, -1).var(axis=1)
    else:
        m, expected = fastnorm.moments(x), truth.var()
    np.testing.assert_allclose(m.var(), expected, rtol=1e-4)


@pytest.mark.parametrize("shape,axis", [((32, 16, 40, 40), (0, 2, 3)), ((200000, 7), 0), ((300, 5000), 1),
                                        ((4000, 6, 3), (0, 2)), ((6, 40, 40, 16), (1, 2))])
def test_bitwise_identical_for_any_thread_count(shape, axis, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    results = [fastnorm.moments(x, axis=axis, num_threads=t) for t in (1, 2, 3)]
    for r in results[1:]:
        assert r.mean.tobytes() == results[0].mean.tobytes()
        assert r.m2.tobytes() == results[0].m2.tobytes()


@pytest.mark.parametrize("shape,axis", [((5, 48, 48, 8), (1, 2)), ((3, 4, 70, 60, 5), (2, 3)), ((3, 60, 70, 5), 1)])
def test_kept_axes_in_two_blocks(shape, axis, rng):
    """Per sample and channel on channels-last data: the kept axes (leading ones, then the last) are not one block;
    computed slice by slice along the leading axes (no transposing copy), the same statistics."""
    x = (rng.standard_normal(shape) * 3 + 100).astype(np.float32)
    m = fastnorm.moments(x, axis=axis)
    x64 = x.astype(np.float64)
    assert m.mean.shape == tuple(np.delete(shape, axis))
    np.testing.assert_allclose(m.mean, x64.mean(axis=axis), rtol=1e-12)
    np.testing.assert_allclose(m.var(), x64.var(axis=axis), rtol=1e-10)
    assert int(m.count) == x.size // m.mean.size


@pytest.mark.parametrize("shape", [(0, 3, 4, 2), (2, 3, 0, 2), (2, 0, 4, 0)])
def test_kept_axes_in_two_blocks_empty(shape):
    m = fastnorm.moments(np.zeros(shape, np.float32), axis=(1, 2))
    assert m.mean.shape == m.m2.shape == (shape[0], shape[3]) and int(m.count) == shape[1] * shape[2]
    assert not m.mean.any() and not m.m2.any()


def test_input_is_not_modified_and_var_ddof(rng):
    x = rng.standard_normal((5, 4))
    x0 = x.copy()
    m = fastnorm.moments(x, axis=0)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_allclose(m.var(ddof=1), x.var(axis=0, ddof=1), rtol=1e-12)


def test_bad_input():
    with pytest.raises(ValueError, match="axis: 2 is out of range for an array of 2 dimensions"):
        fastnorm.moments(np.ones((2, 3)), axis=2)
    with pytest.raises(ValueError, match="axis: repeated axis"):
        fastnorm.moments(np.ones((2, 3)), axis=(0, -2))
    with pytest.raises(TypeError, match="x: unsupported dtype complex128"):
        fastnorm.moments(np.ones(3, dtype=complex))
    with pytest.raises(TypeError, match="axis: expected an int"):
        fastnorm.moments(np.ones(3), axis=("a",))
    m = fastnorm.moments(np.ones(3))
    with pytest.raises(ValueError, match="count: moments need counts >= 0"):
        fastnorm.merge_moments(m, fastnorm.Moments(np.array(-1), m.mean, m.m2))


def test_nan_propagates_to_mean_and_m2():
    x = np.ones((6, 3))
    x[2, 1] = np.nan
    m = fastnorm.moments(x, axis=0)
    assert np.isnan(m.mean[1]) and np.isnan(m.m2[1])
    assert np.isfinite(m.mean[[0, 2]]).all() and np.isfinite(m.m2[[0, 2]]).all()
    xl = np.ones((3, 200))
    xl[1, 50] = np.nan  # the long-run path
    m = fastnorm.moments(xl, axis=1)
    assert np.isnan(m.m2[1]) and np.isfinite(m.m2[[0, 2]]).all()
