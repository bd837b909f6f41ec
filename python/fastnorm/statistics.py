"""Mergeable statistics: ``moments`` of an array along axes, and ``merge_moments`` of two sets of them.

The building block of batch normalization's statistics, of preprocessing on data that arrives in batches, and of
statistics computed on pieces of a dataset (threads, processes, machines) and combined afterwards: moments
computed on disjoint pieces and merged equal the moments of the whole, up to rounding.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from typing import Any, Optional
from numpy.typing import ArrayLike

from fastnorm import _C
from fastnorm._array import as_array, as_buffer, normalize_axes, storage_dtype
from fastnorm._docs import documented
from fastnorm._threads import resolve

__all__ = ["Moments", "moments", "merge_moments", "Scatter", "scatter", "merge_scatter"]

_F64 = np.dtype(np.float64)



# The parameters described once (fastnorm._docs).
_PARAMS = {
    "count": ("int or numpy.ndarray of int64", "The number of values (per slot)."),
    "mean": ("numpy.ndarray", "Their mean, float64."),
    "m2": ("numpy.ndarray", "Their sum of squared deviations from the mean, float64."),
    "scatter": ("numpy.ndarray of shape (D, D)", "The sum over samples of outer(x - mean, x - mean), float64."),
    "x": ("array_like", "The values."),
    "axis": ("int, tuple of int or None, default None", "The axes summed over (None: all)."),
    "num_threads": ("int, optional", "Threads to use; the result does not depend on them."),
    "a": ("Moments or Scatter", "The statistics of one set."),
    "b": ("Moments or Scatter", "The statistics of another, disjoint set."),
}

@documented(_PARAMS)
class Moments(NamedTuple):
    """Count, mean and m2 (sum of squared deviations from the mean) of a set of values, per slot, in float64.

    ``count`` is an int64 array (0-d when every slot has the same count); ``mean`` and ``m2`` have the shape of
    the axes that were kept.  ``var()`` is m2 / (count - ddof).
    """
    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray

    @documented({}, returns=("numpy.ndarray", "The variance per slot."),
                ddof=("int, default 0", "Delta degrees of freedom: 0 biased, 1 unbiased."))
    def var(self, ddof: int = 0) -> np.ndarray:
        """The variance, m2 / (count - ddof): biased for ddof=0, unbiased for ddof=1."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.m2 / (self.count - ddof)


_MIN_SLICE = 16384  # values per leading index below which moments() transposes instead of going slice by slice


def moments(x: ArrayLike, axis: Any = None, *, num_threads: Optional[int] = None) -> Moments:
    """Count, mean and m2 of ``x`` over ``axis`` (an int, a tuple of ints, or None for all), in float64.

    The data is summed in float64 around shifts (the first value of each block of about 16K values: a piece of a
    long run, a channel's short runs, or rows) and the blocks are merged with Chan, Golub & LeVeque's formula in
    a fixed order: accurate for float32 data whose mean is many times its standard deviation, and bitwise the
    same for any thread count.

    Parameters
    ----------
    x : array_like
        Real data (float16/float32/float64 or integers).
    axis : int, tuple of int or None
        The axes reduced; the others are kept, in order.
    num_threads : int, optional
        Threads to use; the result does not depend on it.

    Returns
    -------
    Moments
        ``count`` (number of values per kept slot), ``mean`` and ``m2`` of the kept axes' shape.  With no values
        (count 0) mean and m2 are 0: the identity of :func:`merge_moments`.

    References
    ----------
    Chan, Golub & LeVeque, Updating formulae and a pairwise algorithm for computing sample variances, 1979.
    """
    x = as_array(x, "x")
    compute = storage_dtype(x.dtype, "x")  # float16 and bfloat16 are read as they are
    reduced = normalize_axes(axis, x.ndim)
    kept = tuple(a for a in range(x.ndim) if a not in reduced)
    kept_shape = tuple(x.shape[a] for a in kept)
    count = math.prod(x.shape[a] for a in reduced)
    if kept and kept != tuple(range(kept[0], kept[-1] + 1)):
        lead = next(i for i, a in enumerate(kept) if a != i) if kept[0] == 0 else 0
        rest = kept[lead:]
        if (lead and rest == tuple(range(rest[0], rest[-1] + 1)) and x.size
                and x.size >= _MIN_SLICE * math.prod(x.shape[:lead])):
            # leading axes, then one more block (per sample and channel on channels-last data): each leading
            # index's slice has its kept axes in one block; a slice at a time costs no transposing copy
            xb = as_buffer(x, compute).reshape(-1, *x.shape[lead:])
            parts = [moments(xs, tuple(a - lead for a in reduced), num_threads=num_threads) for xs in xb]
            return Moments(np.array(count, dtype=np.int64), np.stack([p.mean for p in parts]).reshape(kept_shape),
                           np.stack([p.m2 for p in parts]).reshape(kept_shape))
        # otherwise bring the kept axes to the front (a copy) so they are one block
        x = np.moveaxis(x, kept, tuple(range(len(kept))))
        kept = tuple(range(len(kept)))
    xb = as_buffer(x, compute)
    if kept:
        A, C, B = math.prod(xb.shape[:kept[0]]), math.prod(kept_shape), math.prod(xb.shape[kept[-1] + 1:])
    else:
        A, C, B = 1, 1, xb.size
    mean = np.empty(C, dtype=np.float64)
    m2 = np.empty(C, dtype=np.float64)
    _C.channel_moments(xb.reshape(-1), A, C, B, mean, m2, resolve(num_threads))
    if xb.dtype == _F64 and C and not math.isfinite(mean[0] + mean[-1] + m2.sum()):
        mean, m2 = _rescaled(xb, A, C, B, mean, m2, num_threads)
    return Moments(np.array(count, dtype=np.int64), mean.reshape(kept_shape), m2.reshape(kept_shape))


def _rescaled(xb, A, C, B, mean, m2, num_threads):
    """Moments of float64 data near the largest doubles, whose sums overflowed: recomputed on x * 2**-k with k
    from the largest finite magnitude, then scaled back (a power of two: exact), so that a finite mean comes out
    finite (m2 overflows only where the true value does)."""
    finite = np.isfinite(xb)
    if not finite.any():
        return mean, m2
    k = int(np.frexp(np.max(np.abs(xb[finite])))[1])
    scaled = np.ldexp(xb, -k)
    mean_s, m2_s = np.empty(C), np.empty(C)
    _C.channel_moments(scaled.reshape(-1), A, C, B, mean_s, m2_s, resolve(num_threads))
    with np.errstate(over="ignore"):
        redo = ~(np.isfinite(mean) & np.isfinite(m2))
        return np.where(redo, np.ldexp(mean_s, k), mean), np.where(redo, np.ldexp(m2_s, 2 * k), m2)


def _merge_weights(na, nb):
    """(n, n_a / n, n_b / n, n_a n_b / n) in float64, 0 where n is 0."""
    n = na + nb
    nf, naf, nbf = n.astype(np.float64), na.astype(np.float64), nb.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (n, np.where(nf > 0, naf / nf, 0.0), np.where(nf > 0, nbf / nf, 0.0),
                np.where(nf > 0, naf * nbf / nf, 0.0))


@documented(_PARAMS, returns=("Moments", "The statistics of the union."), a=("Moments", "The moments of one set."),
            b=("Moments", "The moments of another, disjoint set."))
def merge_moments(a: Moments, b: Moments) -> Moments:
    """The moments of the union of two disjoint sets of values, from the moments of each (Chan et al. 1979).

    n = n_a + n_b,  mean = mean_a n_a / n + mean_b n_b / n,  m2 = (m2_a + m2_b) + d^2 n_a n_b / n,  with
    d = mean_b - mean_a.  Every operation in this form commutes, so ``merge_moments(a, b)`` and
    ``merge_moments(b, a)`` have the same bits, and merging pieces in a fixed order gives the same bits wherever
    it runs.  Shapes broadcast as in NumPy; slots where both counts are 0 stay (0, 0, 0).
    """
    for name, m in (("a", a), ("b", b)):
        if not all(hasattr(m, f) for f in ("count", "mean", "m2")):
            raise TypeError(f"{name}: expected Moments (count, mean, m2), got {type(m).__name__}")
    na, nb = np.asarray(a.count, dtype=np.int64), np.asarray(b.count, dtype=np.int64)
    if (na < 0).any() or (nb < 0).any():
        raise ValueError("count: moments need counts >= 0")
    n, wa, wb, cross = _merge_weights(na, nb)
    ma, mb = np.asarray(a.mean, dtype=np.float64), np.asarray(b.mean, dtype=np.float64)
    delta = mb - ma
    mean = ma * wa + mb * wb
    m2 = (np.asarray(a.m2, dtype=np.float64) + np.asarray(b.m2, dtype=np.float64)) + delta * delta * cross
    return Moments(n, mean, m2)


@documented(_PARAMS, count=("int", "The number of rows."), mean=("numpy.ndarray of shape (D,)", "Their mean, float64."))
class Scatter(NamedTuple):
    """Count, mean and scatter matrix (the sum over samples of outer(x - mean, x - mean)) of rows of D features,
    in float64: the mergeable statistics behind PCA and whitening, as :class:`Moments` are behind standardizing.
    ``covariance(ddof=1)`` is scatter / (count - ddof)."""
    count: int
    mean: np.ndarray
    scatter: np.ndarray

    @documented({}, returns=("numpy.ndarray of shape (D, D)", "The covariance matrix."),
                ddof=("int, default 1", "Delta degrees of freedom: 1 unbiased, 0 biased."))
    def covariance(self, ddof: int = 1) -> np.ndarray:
        """The covariance matrix, scatter / (count - ddof)."""
        return self.scatter / (self.count - ddof)


_SCATTER_PIECE = 1 << 19  # values per piece of rows: each piece's own mean and scatter, merged in


@documented(_PARAMS, returns=("Scatter", "count, mean and scatter matrix."),
            x=("array_like", "Samples along axis 0, features after it (flattened)."))
def scatter(x: ArrayLike) -> Scatter:
    """The :class:`Scatter` of ``x``, samples along axis 0 and features after it (flattened): rows centred on the
    mean of their piece (about 4 MiB of them at a time), each piece's scatter (a matrix product) merged in with
    :func:`merge_scatter`, in float64.

    References
    ----------
    Pebay, Formulas for robust, one-pass parallel computation of covariances and arbitrary-order statistical
    moments, Sandia report SAND2008-6212, 2008.
    """
    x = as_array(x, "x")
    if x.ndim < 1:
        raise ValueError("x: expected samples along axis 0, got a 0-d array")
    rows = x.reshape(x.shape[0], -1)
    D = rows.shape[1]
    total = Scatter(0, np.zeros(D), np.zeros((D, D)))
    step = max(1, _SCATTER_PIECE // max(1, D))
    for start in range(0, rows.shape[0], step):
        piece = np.asarray(rows[start:start + step], dtype=np.float64)
        mean = piece.mean(axis=0)
        dev = piece - mean
        total = merge_scatter(total, Scatter(piece.shape[0], mean, dev.T @ dev))
    return total


@documented(_PARAMS, returns=("Scatter", "The statistics of the union."),
            a=("Scatter", "The scatter of one set of rows."), b=("Scatter", "The scatter of another, disjoint set."))
def merge_scatter(a: Scatter, b: Scatter) -> Scatter:
    """The :class:`Scatter` of the union of two disjoint sets of rows: n = n_a + n_b,
    mean = mean_a n_a / n + mean_b n_b / n, scatter = (scatter_a + scatter_b) + outer(d, d) n_a n_b / n with
    d = mean_b - mean_a; symmetric in a and b, bit for bit, as :func:`merge_moments`."""
    for name, m in (("a", a), ("b", b)):
        if not all(hasattr(m, f) for f in ("count", "mean", "scatter")):
            raise TypeError(f"{name}: expected Scatter (count, mean, scatter), got {type(m).__name__}")
    na, nb = int(a.count), int(b.count)
    if na < 0 or nb < 0:
        raise ValueError("count: scatter needs counts >= 0")
    ma, mb = np.asarray(a.mean, dtype=np.float64), np.asarray(b.mean, dtype=np.float64)
    sa, sb = np.asarray(a.scatter, dtype=np.float64), np.asarray(b.scatter, dtype=np.float64)
    if ma.shape != mb.shape or sa.shape != sb.shape or sa.shape != ma.shape * 2:
        raise ValueError(f"b: scatter of {mb.shape[-1] if mb.ndim else 0} features does not match a's "
                         f"{ma.shape[-1] if ma.ndim else 0}")
    n, wa, wb, cross = (float(v) for v in _merge_weights(np.int64(na), np.int64(nb)))
    delta = mb - ma
    return Scatter(na + nb, ma * wa + mb * wb, (sa + sb) + np.outer(delta, delta) * cross)
