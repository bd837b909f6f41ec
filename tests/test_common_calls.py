"""The normalizations' common calls (float32 arrays, parameters of the right shape, eps a float, no out=) are checked
and run in C++ in one step; every other call takes the general Python path.  Any call must give the same bits, the
same dtypes and shapes, or the same error, whichever path it takes."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fastnorm
from fastnorm import _C, group_norms, normalization, row_norms

_COMMON = ("row_norm_common", "row_norm_backward_common", "batch_norm_common", "batch_norm_backward_common",
           "group_norm_common", "group_norm_backward_common")
_MODULES = (row_norms, normalization, group_norms)


class _Spy:
    """fastnorm._C seen by the Python functions: the common calls either refused (general path only) or counted
    when they ran."""

    def __init__(self, general_only: bool):
        self.general_only, self.ran = general_only, 0

    def __getattr__(self, name):
        target = getattr(_C, name)
        if name not in _COMMON:
            return target

        def call(*args):
            if self.general_only:
                return None
            done = target(*args)
            self.ran += done is not None
            return done
        return call


def _run(f, general_only):
    """f() with the common calls refused or counted: (its result or exception, how many common calls ran)."""
    spy = _Spy(general_only)
    with pytest.MonkeyPatch.context() as m:
        for module in _MODULES:
            m.setattr(module, "_C", spy)
        try:
            return f(), spy.ran
        except Exception as e:  # the same error either way
            return e, spy.ran


def _same(a, b):
    if isinstance(a, Exception):
        assert type(a) is type(b) and str(a) == str(b), (a, b)
    elif isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b)
        for u, v in zip(a, b):
            _same(u, v)
    elif a is None:
        assert b is None
    else:
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes()


def _family_call(family, x, dy, gamma, beta, axis, eps, dx_only, groups):
    """The forward with return_stats, then the backward from its statistics."""
    if family == "layer_norm":
        y, mean, rstd = fastnorm.layer_norm(x, gamma, beta, axis=axis, eps=eps, return_stats=True)
        return (y, mean, rstd, *fastnorm.layer_norm_backward(dy, x, mean, rstd, gamma, axis=axis, dx_only=dx_only))
    if family == "rms_norm":
        y, rstd = fastnorm.rms_norm(x, gamma, axis=axis, eps=eps, return_stats=True)
        return (y, rstd, *fastnorm.rms_norm_backward(dy, x, rstd, gamma, axis=axis, dx_only=dx_only))
    if family == "batch_norm":
        y, mean, rstd = fastnorm.batch_norm(x, gamma=gamma, beta=beta, axis=axis, eps=eps, return_stats=True)
        return (y, mean, rstd, *fastnorm.batch_norm_backward(dy, x, mean, rstd, gamma, axis=axis, dx_only=dx_only))
    y, mean, rstd = fastnorm.group_norm(x, groups, gamma, beta, axis=axis, eps=eps, return_stats=True)
    return (y, mean, rstd, *fastnorm.group_norm_backward(dy, x, mean, rstd, groups, gamma, axis=axis,
                                                         dx_only=dx_only))


@st.composite
def _cases(draw):
    family = draw(st.sampled_from(["layer_norm", "rms_norm", "batch_norm", "group_norm"]))
    plain = draw(st.booleans())  # the arguments of a common call (which may still be refused: a shape, a group)
    shape = tuple(draw(st.lists(st.integers(1, 7), min_size=2 if plain else 1, max_size=4)))
    axis = draw(st.sampled_from([-1, 1] if plain else [-1, 0, 1, -2, 5]))
    dtype = np.float32 if plain else draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = (rng.standard_normal(shape) * draw(st.sampled_from([1.0, 1e3])) + draw(st.sampled_from([0.0, 5.0])))
    x, dy = x.astype(dtype), rng.standard_normal(shape).astype(dtype)
    if not plain and draw(st.booleans()) and x.ndim > 1:  # a view that is not C-contiguous
        x, dy = x.swapaxes(0, -1), dy.swapaxes(0, -1)
    ax = axis % x.ndim if -x.ndim <= axis < x.ndim else 0
    n = x.shape[-1] if family in ("layer_norm", "rms_norm") else x.shape[ax]
    param = st.sampled_from(["none", "f32", "f64"] if plain else ["none", "f32", "f64", "short"])
    made = {"none": None, "f32": rng.standard_normal(n).astype(np.float32),
            "f64": rng.standard_normal(n), "short": np.ones(n + 1, np.float32)}
    gamma, beta = made[draw(param)], made[draw(param)]
    eps = draw(st.sampled_from([1e-5, 0.5, None] if plain else [1e-5, None, 1e-40, 1, float("nan")]))
    groups = draw(st.sampled_from([1, 2, 3] if plain else [1, 2, np.int64(1)]))
    return family, x, dy, gamma, beta, axis, eps, draw(st.booleans()), groups


@settings(max_examples=200)
@given(_cases())
def test_common_and_general_paths_agree(case):
    family, *args = case
    common, ran = _run(lambda: _family_call(family, *args), False)
    general, ran_general = _run(lambda: _family_call(family, *args), True)
    assert ran_general == 0
    _same(common, general)


@pytest.mark.parametrize("family", ["layer_norm", "rms_norm", "batch_norm", "group_norm"])
def test_plain_float32_calls_take_the_common_path(family):
    rng = np.random.default_rng(0)
    x, dy = rng.standard_normal((6, 4, 3)).astype(np.float32), rng.standard_normal((6, 4, 3)).astype(np.float32)
    n = 3 if family in ("layer_norm", "rms_norm") else 4
    gamma, beta = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    args = (x, dy, gamma, beta, -1 if n == 3 else 1, 1e-5, False, 2)
    common, ran = _run(lambda: _family_call(family, *args), False)
    general, _ = _run(lambda: _family_call(family, *args), True)
    assert ran == 2  # forward and backward
    _same(common, general)


def test_common_path_leaves_inputs_alone_and_allocates_large_results_from_the_cache():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((512, 1024)).astype(np.float32)  # 2 MiB: a result from the buffer cache
    before = x.copy()
    y, mean, rstd = fastnorm.layer_norm(x, return_stats=True)
    assert np.array_equal(x, before) and y.base is not None and mean.shape == (512,)
    np.testing.assert_allclose(y.mean(axis=1), 0, atol=1e-5)
