"""group_norm and instance_norm, forward and backward: reference, gradients, layouts, running statistics,
determinism, bad input, and PyTorch when it is installed."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastnorm
import reference as ref
from helpers import numeric_partial


@st.composite
def gn_inputs(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    groups = draw(st.integers(1, 3))
    per_group = draw(st.integers(1, 3))
    C = groups * per_group
    n = draw(st.integers(1, 3))
    spatial = draw(st.lists(st.integers(1, 4), min_size=0, max_size=2))
    if C // groups * int(np.prod(spatial)) < 2:
        spatial = spatial + [2]
    channels_last = draw(st.booleans()) and spatial
    shape = (n, *spatial, C) if channels_last else (n, C, *spatial)
    x = draw(hnp.arrays(dtype, tuple(shape), elements=st.floats(-8, 8, width=8 * np.dtype(dtype).itemsize)))
    x = x + (np.arange(x.size).reshape(x.shape) % 3).astype(dtype)
    gamma = draw(hnp.arrays(np.float64, (C,), elements=st.floats(0.5, 2)))
    beta = draw(hnp.arrays(np.float64, (C,), elements=st.floats(-1, 1)))
    return x, groups, -1 if channels_last else 1, gamma, beta


@given(gn_inputs())
def test_group_norm_matches_reference(data):
    x, groups, axis, gamma, beta = data
    y = fastnorm.group_norm(x, groups, gamma, beta, axis=axis)
    tol = 2e-5 if x.dtype == np.float32 else 1e-11
    np.testing.assert_allclose(y, ref.group_norm(x, groups, gamma, beta, axis), rtol=tol, atol=tol)


@pytest.mark.parametrize("shape,groups,axis", [((3, 6, 4, 5), 3, 1), ((3, 4, 5, 6), 2, -1), ((4, 6), 3, 1),
                                               ((2, 4, 7), 4, 1)])
def test_group_norm_gradient_check_float64(shape, groups, axis, rng):
    x = rng.standard_normal(shape) * 2 + 1
    C = shape[axis]
    gamma, beta, dy = rng.uniform(0.5, 1.5, C), rng.standard_normal(C), rng.standard_normal(shape)
    _, mean, rstd = fastnorm.group_norm(x, groups, gamma, beta, axis=axis, return_stats=True)
    dx, dgamma, dbeta = fastnorm.group_norm_backward(dy, x, mean, rstd, groups, gamma, axis=axis)

    def loss(x_, g_, b_):
        return (dy * fastnorm.group_norm(x_, groups, g_, b_, axis=axis)).sum()

    for idx in [tuple(rng.integers(0, s) for s in shape) for _ in range(6)]:
        assert abs(numeric_partial(lambda v: loss(v, gamma, beta), x, idx) - dx[idx]) < 1e-6
    for c in range(C):
        assert abs(numeric_partial(lambda v: loss(x, v, beta), gamma, c) - dgamma[c]) < 1e-6
        assert abs(numeric_partial(lambda v: loss(x, gamma, v), beta, c) - dbeta[c]) < 1e-6


def test_instance_norm_is_group_norm_per_channel_and_tracks_running_stats(rng):
    x = rng.standard_normal((4, 3, 5, 5)) * 2 + 1
    y, mean, rstd = fastnorm.instance_norm(x, return_stats=True)
    np.testing.assert_allclose(y, ref.group_norm(x, 3), rtol=1e-12, atol=1e-12)
    assert mean.shape == (4, 3)
    rm, rv = np.zeros(3), np.ones(3)
    fastnorm.instance_norm(x, running_mean=rm, running_var=rv, momentum=0.1)
    np.testing.assert_allclose(rm, 0.1 * x.mean(axis=(2, 3)).mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(rv, 0.9 + 0.1 * x.var(axis=(2, 3), ddof=1).mean(axis=0), rtol=1e-10)
    ye = fastnorm.instance_norm(x, use_input_stats=False, running_mean=rm, running_var=rv)
    expected = (x - rm.reshape(1, 3, 1, 1)) / np.sqrt(rv.reshape(1, 3, 1, 1) + 1e-5)
    np.testing.assert_allclose(ye, expected, rtol=1e-12)
    dy = rng.standard_normal(x.shape)
    dx, _, _ = fastnorm.instance_norm_backward(dy, x, mean, rstd)
    gdx, _, _ = fastnorm.group_norm_backward(dy, x, mean, rstd, 3)
    np.testing.assert_array_equal(dx, gdx)


@pytest.mark.parametrize("shape,axis", [((8, 32, 24, 24), 1), ((8, 24, 24, 32), -1)])
def test_bitwise_identical_for_any_thread_count(shape, axis, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    gamma = rng.uniform(0.5, 1.5, shape[axis])
    runs = []
    for t in (1, 2, 3):
        y, m, r = fastnorm.group_norm(x, 8, gamma, axis=axis, return_stats=True, num_threads=t)
        dx, dg, db = fastnorm.group_norm_backward(dy, x, m, r, 8, gamma, axis=axis, num_threads=t)
        runs.append(b"".join(a.tobytes() for a in (y, m, r, dx, dg, db)))
    assert runs[1] == runs[0] and runs[2] == runs[0]


def test_channels_last_equals_channels_first(rng):
    x = rng.standard_normal((3, 8, 5, 5)).astype(np.float32)
    y = fastnorm.group_norm(x, 4)
    yl = fastnorm.group_norm(np.ascontiguousarray(np.moveaxis(x, 1, -1)), 4, axis=-1)
    np.testing.assert_allclose(np.moveaxis(yl, -1, 1), y, rtol=1e-6, atol=1e-6)


def test_bad_input():
    x = np.ones((2, 6, 3)) + np.arange(36).reshape(2, 6, 3)
    with pytest.raises(ValueError, match="num_groups: 4 does not divide the 6 channels"):
        fastnorm.group_norm(x, 4)
    with pytest.raises(ValueError, match="axis: the channel axis cannot be axis 0"):
        fastnorm.group_norm(x, 2, axis=0)
    with pytest.raises(ValueError, match=r"gamma: expected shape \(6,\)"):
        fastnorm.group_norm(x, 2, np.ones(3))
    with pytest.raises(ValueError, match="eps: expected a finite number > 0"):
        fastnorm.group_norm(x, 2, eps=0)
    with pytest.raises(ValueError, match=r"mean: expected shape \(2, 2\)"):
        fastnorm.group_norm_backward(x, x, np.zeros((2, 3)), np.ones((2, 2)), 2)
    with pytest.raises(ValueError, match=r"momentum: expected a number in \[0, 1\]"):
        fastnorm.instance_norm(x, running_mean=np.zeros(6), running_var=np.ones(6), momentum=-0.1)
    with pytest.raises(ValueError, match="running_mean: test mode"):
        fastnorm.instance_norm(x, use_input_stats=False)


def test_matches_pytorch():
    torch = pytest.importorskip("torch", reason="PyTorch is optional; this compares with it when installed")
    F = torch.nn.functional
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 6, 5, 5)).astype(np.float32) * 2 + 1
    w, b = rng.uniform(0.5, 1.5, 6).astype(np.float32), rng.standard_normal(6).astype(np.float32)
    tx = torch.from_numpy(x).requires_grad_(True)
    tw, tb = torch.from_numpy(w).requires_grad_(True), torch.from_numpy(b).requires_grad_(True)
    ty = F.group_norm(tx, 3, tw, tb, 1e-5)
    y, mean, rstd = fastnorm.group_norm(x, 3, w, b, return_stats=True)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    ty.backward(torch.from_numpy(dy))
    dx, dw, db = fastnorm.group_norm_backward(dy, x, mean, rstd, 3, w)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dw, tw.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(db, tb.grad.numpy(), rtol=1e-4, atol=1e-4)
    rm, rv = torch.zeros(6), torch.ones(6)
    ti = F.instance_norm(torch.from_numpy(x), rm, rv, torch.from_numpy(w), torch.from_numpy(b),
                         use_input_stats=True, momentum=0.1, eps=1e-5)
    om, ov = np.zeros(6, np.float32), np.ones(6, np.float32)
    yi = fastnorm.instance_norm(x, gamma=w, beta=b, running_mean=om, running_var=ov, momentum=0.1)
    np.testing.assert_allclose(yi, ti.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(om, rm.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ov, rv.numpy(), rtol=1e-5)
