"""fastnorm on Dask arrays: dataset statistics larger than memory, and lazy transforms chunk by chunk.

Statistics are tree reductions of per-chunk summaries computed by fastnorm's kernels (float64, shifted sums) and
merged with :func:`fastnorm.merge_moments` / :func:`fastnorm.merge_scatter` in a fixed order: the tree is set by
the chunking and ``split_every``, never by the scheduler, so the result has the same bits for any number of
workers or threads, on the threaded scheduler, on worker processes or on a cluster.  float32 chunks are
accumulated in float64 (``dask.array.var`` of float32 data accumulates in float32).

Transforms (the activations, batch normalization with the whole array's statistics, layer / RMS / group / instance
normalization, fitted preprocessing estimators) return lazy Dask arrays computed chunk by chunk with fastnorm's
kernels.

Needs the optional extra: ``pip install "fastnorm[dask]"``.
"""
from __future__ import annotations

import math
from typing import Any, Callable, List, Optional

import numpy as np

try:
    import dask
    import dask.array as da
except ImportError as e:  # pragma: no cover - exercised without the extra
    raise ImportError("fastnorm.dask needs Dask: pip install \"fastnorm[dask]\" (dask[array,distributed])") from e

from fastnorm import activations as _activations
from fastnorm._docs import documented
from fastnorm._array import is_dask_array, normalize_axes, result_dtype
from fastnorm.batch_norm_stages import batch_norm_apply
from fastnorm.statistics import Moments, Scatter, merge_moments, merge_scatter
from fastnorm.statistics import moments as _moments
from fastnorm.statistics import scatter as _scatter

__all__ = ["moments", "scatter", "batch_norm_stats", "batch_norm", "layer_norm", "rms_norm", "group_norm",
           "instance_norm", "elementwise", "is_dask_array"]

_STATS = np.dtype([("count", np.int64), ("mean", np.float64), ("m2", np.float64)])


def _flat(nested) -> List[Any]:
    """The leaves of dask's nested lists of per-block results, in block order (a fixed order)."""
    if isinstance(nested, list):
        return [leaf for item in nested for leaf in _flat(item)]
    return [nested]


def _chunk_moments(x, axis=None, keepdims=True, **_):
    m = _moments(x, axis=axis)
    shape = tuple(1 if a in axis else n for a, n in enumerate(x.shape))
    return Moments(m.count, m.mean.reshape(shape), m.m2.reshape(shape))


def _merged(parts, axis=None, keepdims=True, **_):
    leaves = _flat(parts)
    total = leaves[0]
    for m in leaves[1:]:
        total = merge_moments(total, m)
    return total


def _aggregate(parts, axis=None, keepdims=False, **_):
    total = _merged(parts)
    mean = total.mean if keepdims else total.mean.reshape([n for a, n in enumerate(total.mean.shape)
                                                           if a not in axis])
    out = np.empty(mean.shape, _STATS)
    out["count"], out["mean"], out["m2"] = total.count, mean, (total.m2.reshape(mean.shape))
    return out



# The parameters of the Dask versions, described once (fastnorm._docs).
_PARAMS = {
    "x": ("dask.array.Array", "The data, chunked."),
    "axis": ("int or tuple of int", "As the in-memory function's."),
    "split_every": ("int, optional", "Children per node of the reduction tree (Dask's default when None)."),
    "stats": ("Moments, optional", "The whole array's per-channel statistics (computed now when None)."),
    "gamma": ("array_like, optional", "The scale, as the in-memory function's."),
    "beta": ("array_like, optional", "The shift, as the in-memory function's."),
    "num_groups": ("int", "Groups of consecutive channels."),
    "func": ("callable", "A function of one block (and ``args``, ``kwargs``) returning a block of its shape."),
    "args": ("Any", "More positional arguments of ``func``."),
    "kwargs": ("Any", "Keyword arguments of the in-memory function (eps, activation, negative_slope, ...)."),
}
_LAZY = ("dask.array.Array", "The result, lazily, with x's chunks.")

def moments(x: Any, axis: Any = None, *, split_every: Optional[int] = None, compute: bool = True) -> Moments:
    """:func:`fastnorm.moments` of a Dask array: count, mean and m2 over ``axis`` in float64, as a tree reduction
    (``dask.array.reduction``) of per-chunk moments merged in block order.

    Parameters
    ----------
    x : dask.array.Array
        Real data, in chunks of any shape.
    axis : int, tuple of int or None
        The axes reduced.
    split_every : int, optional
        Chunks merged per node of the tree (Dask's default otherwise); part of what fixes the bits.
    compute : bool
        Return NumPy arrays (computed now), or a :class:`fastnorm.Moments` of lazy Dask arrays sharing one graph
        (``dask.compute(*m)`` computes them together).
    """
    if not is_dask_array(x):
        raise TypeError(f"x: expected a dask.array.Array, got {type(x).__name__} (use fastnorm.moments for arrays "
                        f"in memory)")
    if x.dtype.kind not in "fiub":
        raise TypeError(f"x: expected real data, got dtype {x.dtype}")
    reduced = normalize_axes(axis, x.ndim)
    kept_shape = tuple(n for a, n in enumerate(x.shape) if a not in reduced)
    if math.prod(x.shape[a] for a in reduced) == 0 or x.size == 0:  # nothing to reduce: the merge identity
        m = Moments(np.array(0, np.int64), np.zeros(kept_shape), np.zeros(kept_shape))
        return m
    stats = da.reduction(x, _chunk_moments, _aggregate, combine=_merged, axis=reduced, keepdims=False,
                         dtype=_STATS, split_every=split_every, concatenate=False, meta=np.empty((0,) * len(kept_shape),
                                                                                                 _STATS),
                         name="fastnorm-moments")
    if not compute:
        return Moments(stats["count"], stats["mean"], stats["m2"])
    out = stats.compute()
    count = out["count"]
    return Moments(np.array(count.flat[0] if count.size else 0, np.int64), out["mean"], out["m2"])


@documented(_PARAMS, returns=("Moments", "count, mean and m2 per channel, computed."),
            axis=("int, default 1", "The channel axis."))
def batch_norm_stats(x: Any, *, axis: int = 1, split_every: Optional[int] = None) -> Moments:
    """Per-channel :class:`fastnorm.Moments` of a Dask array (every axis but the channel ``axis`` reduced), as
    :func:`fastnorm.batch_norm_stats` gives in memory, to normalize with :func:`batch_norm`."""
    ax = normalize_axes(axis, x.ndim)
    if len(ax) != 1:
        raise ValueError(f"axis: expected one channel axis, got {axis}")
    return moments(x, tuple(a for a in range(x.ndim) if a != ax[0]), split_every=split_every)


@documented(_PARAMS, returns=("Scatter", "count, mean and scatter matrix, computed."),
            split_every=("int, default 8", "Children per node of the merge tree."))
def scatter(x: Any, *, split_every: int = 8) -> Scatter:
    """:func:`fastnorm.scatter` of a Dask array (samples along axis 0, features after it): each block of rows'
    scatter computed with every feature in one chunk, merged in a tree of ``split_every`` children per node, in
    block order.  Returns a computed :class:`fastnorm.Scatter`."""
    if not is_dask_array(x):
        raise TypeError(f"x: expected a dask.array.Array, got {type(x).__name__}")
    if x.ndim < 2:
        raise ValueError(f"x: expected samples along axis 0 and features after it, got shape {x.shape}")
    if not isinstance(split_every, int) or split_every < 2:
        raise ValueError(f"split_every: expected an int >= 2, got {split_every!r}")
    rows = x.reshape(x.shape[0], -1).rechunk({1: -1})
    level = [dask.delayed(_scatter)(block) for block in rows.to_delayed().ravel()]
    merge = dask.delayed(_merge_scatters)
    while len(level) > 1:
        level = [merge(level[i:i + split_every]) for i in range(0, len(level), split_every)]
    return dask.compute(level[0])[0]


def _merge_scatters(parts) -> Scatter:
    total = parts[0]
    for s in parts[1:]:
        total = merge_scatter(total, s)
    return total


@documented(_PARAMS, returns=_LAZY, kwargs=("Any", "Keyword arguments of ``func``."))
def elementwise(func: Callable[..., Any], x: Any, *args: Any, **kwargs: Any) -> Any:
    """``func(block, *args, **kwargs)`` on every block of ``x``, lazily: for the activations
    (``fastnorm.dask.elementwise(fastnorm.gelu, x)``, or ``fastnorm.dask.gelu(x)``) and other functions of one
    block; the result has x's chunks and fastnorm's result dtype for x's."""
    if not is_dask_array(x):
        raise TypeError(f"x: expected a dask.array.Array, got {type(x).__name__}")
    dt = result_dtype(x.dtype)  # fastnorm's rule: floating dtypes kept, integers and bools to float64
    return x.map_blocks(func, *args, dtype=dt, meta=np.empty((0,) * x.ndim, dt), **kwargs)


@documented(_PARAMS, returns=_LAZY, axis=("int, default 1", "The channel axis."))
def batch_norm(x: Any, stats: Optional[Moments] = None, *, axis: int = 1, **kwargs: Any) -> Any:
    """Batch normalization of a Dask array with the statistics of all of it (computed now with
    :func:`batch_norm_stats` unless given), applied lazily block by block with
    :func:`fastnorm.batch_norm_apply` (``kwargs``: gamma, beta, eps, activation, negative_slope)."""
    if not is_dask_array(x):
        raise TypeError(f"x: expected a dask.array.Array, got {type(x).__name__}")
    stats = batch_norm_stats(x, axis=axis) if stats is None else stats
    ax = normalize_axes(axis, x.ndim)[0]
    x = x.rechunk({ax: -1})  # each block holds every channel
    return elementwise(batch_norm_apply, x, stats, axis=ax, **kwargs)


def _per_sample(func, x, whole_axes, *args, **kwargs):
    """``func`` lazily over blocks that hold every value along ``whole_axes`` (what one normalization sees)."""
    if not is_dask_array(x):
        raise TypeError(f"x: expected a dask.array.Array, got {type(x).__name__}")
    return elementwise(func, x.rechunk({a: -1 for a in whole_axes}), *args, **kwargs)


@documented(_PARAMS, returns=_LAZY, axis=("int or tuple of int, default -1", "The normalized (trailing) axes."))
def layer_norm(x: Any, gamma: Any = None, beta: Any = None, *, axis: Any = -1, **kwargs: Any) -> Any:
    """:func:`fastnorm.layer_norm` of a Dask array, lazily: blocks hold whole rows (the normalized axes)."""
    from fastnorm import layer_norm as f
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    return _per_sample(f, x, normalize_axes(axes, x.ndim), gamma, beta, axis=axis, **kwargs)


@documented(_PARAMS, returns=_LAZY, axis=("int or tuple of int, default -1", "The normalized (trailing) axes."))
def rms_norm(x: Any, gamma: Any = None, *, axis: Any = -1, **kwargs: Any) -> Any:
    """:func:`fastnorm.rms_norm` of a Dask array, lazily: blocks hold whole rows."""
    from fastnorm import rms_norm as f
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    return _per_sample(f, x, normalize_axes(axes, x.ndim), gamma, axis=axis, **kwargs)


@documented(_PARAMS, returns=_LAZY)
def group_norm(x: Any, num_groups: int, gamma: Any = None, beta: Any = None, **kwargs: Any) -> Any:
    """:func:`fastnorm.group_norm` of a Dask array, lazily: blocks hold whole samples (batch axis 0)."""
    from fastnorm import group_norm as f
    return _per_sample(f, x, tuple(range(1, x.ndim)), num_groups, gamma, beta, **kwargs)


@documented(_PARAMS, returns=_LAZY)
def instance_norm(x: Any, **kwargs: Any) -> Any:
    """:func:`fastnorm.instance_norm` (input statistics) of a Dask array, lazily: blocks hold whole samples."""
    from fastnorm import instance_norm as f
    return _per_sample(f, x, tuple(range(1, x.ndim)), **kwargs)


# the activations by name, lazily: fastnorm.dask.relu(x) is elementwise(fastnorm.relu, x)
def __getattr__(name: str) -> Any:
    if name in _activations.__all__:
        f = getattr(_activations, name)
        return lambda x, *args, **kwargs: elementwise(f, x, *args, **kwargs)
    raise AttributeError(f"module 'fastnorm.dask' has no attribute {name!r}")
