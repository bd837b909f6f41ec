"""Batch normalization in stages: statistics -> apply, gradient sums -> input gradient, running statistics.

:func:`fastnorm.batch_norm` and :func:`fastnorm.batch_norm_backward` run these stages in one call (one pass over
memory where a channel fits in cache) and give the same bits.  Staged, the statistics can come from elsewhere:
merged over processes or machines (:mod:`fastnorm.distributed`'s synchronized batch norm), over a dataset, or
from another array.

With x viewed as (A, C, B) around its channel axis and ``stats`` the batch's :class:`fastnorm.Moments` (count N,
mean, m2) per channel::

    rstd = 1 / sqrt(m2 / N + eps)
    y    = (x - mean) rstd gamma + beta                                 batch_norm_apply
    s_dy = sum of dy,  s_dy_xmu = sum of dy (x - mean)                  batch_norm_grad_sums
    dx   = gamma rstd (dy - s_dy / N - (x - mean) rstd^2 s_dy_xmu / N)   batch_norm_input_grad
    dgamma = s_dy_xmu rstd,  dbeta = s_dy
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike

from fastnorm import _C, _norm_common
from fastnorm._array import (as_array, as_buffer, check_out, check_same_shape, common_dtype, compute_dtype, deliver,
                             kernel_output, result_dtype, storage_dtype)
from fastnorm._docs import documented
from fastnorm._threads import resolve
from fastnorm._validate import post_op
from fastnorm._norm_common import (_advance_running, _channel_param, _check_counter, _eps, _layout, _momentum,
                                    _required, _running_pair)
from fastnorm.statistics import Moments, _rescaled

__all__ = ["batch_norm_stats", "batch_norm_apply", "batch_norm_grad_sums", "batch_norm_input_grad",
           "update_running_stats"]



# The parameters the stages share with the normalizations, described once (fastnorm._docs).
_PARAMS = dict(_norm_common._PARAMS,
               axis=("int, default 1", "The channel axis: 1 for (N, D) and NCHW-style data, -1 for channels-last."),
               mean=("array_like of shape (C,)", "The batch's per-channel mean (float64)."),
               rstd=("array_like of shape (C,)", "The batch's per-channel 1 / sqrt(var + eps)."),
               gamma=("array_like of shape (C,), optional", "The scale (default 1)."),
               beta=("array_like of shape (C,), optional", "The shift (default 0); with a fused activation, the "
                                                           "forward's."))

def batch_norm_stats(x: ArrayLike, *, axis: Any = 1, num_threads: Optional[int] = None) -> Moments:
    """The per-channel :class:`fastnorm.Moments` of ``x`` (count, mean and m2 over every axis but ``axis``, in
    float64): batch normalization's statistics, as the fused :func:`fastnorm.batch_norm` computes them (same
    bits).  An empty batch gives count 0, mean 0 and m2 0, the identity of :func:`fastnorm.merge_moments`.

    Parameters
    ----------
    x : array_like, rank >= 2
        Activations.
    axis : int, default 1
        The channel axis (1 for (N, D) and NCHW, -1 for channels-last).
    num_threads : int, optional
        Threads to use; the result does not depend on it.

    Returns
    -------
    Moments
        ``count`` (0-d int64), ``mean`` and ``m2`` of shape (C,).
    """
    x = as_array(x, "x")
    A, C, B = _layout(x.shape, axis)
    xb = as_buffer(x, storage_dtype(x.dtype, "x"))
    mean, m2 = np.empty(C), np.empty(C)
    _C.channel_moments(xb, A, C, B, mean, m2, resolve(num_threads))
    if xb.dtype == np.float64 and C and not np.isfinite(mean + m2).all():
        mean, m2 = _rescaled(xb, A, C, B, mean, m2, num_threads)
    return Moments(np.array(A * B, dtype=np.int64), mean, m2)


def _channel_stats(stats, C: int) -> Tuple[int, np.ndarray, np.ndarray]:
    if not all(hasattr(stats, f) for f in ("count", "mean", "m2")):
        raise TypeError(f"stats: expected Moments (count, mean, m2), got {type(stats).__name__}")
    count = np.asarray(stats.count)
    if count.ndim and not (count == count.flat[0]).all():
        raise ValueError("stats: expected one count for every channel")
    n = int(count.flat[0]) if count.size else 0
    if n <= 0:
        raise ValueError(f"stats: the batch statistics need a count > 0, got {n}")
    return n, _channel_param(stats.mean, "stats.mean", C), _channel_param(stats.m2, "stats.m2", C)


def batch_norm_apply(x: ArrayLike, stats: Moments, *, gamma: Optional[ArrayLike] = None,
                     beta: Optional[ArrayLike] = None, axis: Any = 1, eps: float = 1e-5,
                     activation: Optional[str] = None, negative_slope: float = 0.01, return_stats: bool = False,
                     out: Optional[np.ndarray] = None, num_threads: Optional[int] = None) -> Any:
    """Batch normalization of ``x`` with training semantics and statistics given: y = (x - mean) rstd gamma + beta
    with rstd = 1 / sqrt(m2 / count + eps), ``stats`` the :class:`fastnorm.Moments` of the whole batch (for
    example merged over ranks).  With the statistics of x itself it gives :func:`fastnorm.batch_norm`'s bits.

    Parameters
    ----------
    x : array_like, rank >= 2
    stats : Moments
        count > 0 (one for all channels), mean and m2 of shape (C,).
    gamma, beta : array_like of shape (C,), optional
    axis, eps, activation, negative_slope, out, num_threads :
        As in :func:`fastnorm.batch_norm`.
    return_stats : bool
        Also return the mean and rstd used, for :func:`batch_norm_input_grad`.

    Returns
    -------
    y, or (y, mean, rstd) with ``return_stats``.
    """
    x = as_array(x, "x")
    storage, result = storage_dtype(x.dtype, "x"), result_dtype(x.dtype)
    A, C, B = _layout(x.shape, axis)
    eps = _eps(eps, compute_dtype(x.dtype, "x"))
    count, mean, m2 = _channel_stats(stats, C)
    g, b = _channel_param(gamma, "gamma", C), _channel_param(beta, "beta", C)
    post = post_op(activation, negative_slope)
    if out is not None:
        check_out(out, x.shape, result)
    rstd = 1.0 / np.sqrt(m2 / count + eps)
    scale, shift = (rstd if g is None else g * rstd), (np.zeros(C) if b is None else b)
    xb = as_buffer(x, storage)
    buf = kernel_output(out, x.shape, storage, (xb,), (mean, scale, shift))
    _C.bn_apply(xb, buf, A, C, B, mean, scale, shift, resolve(num_threads), *post)
    y = deliver(buf, out, result)
    return (y, mean, rstd) if return_stats else y


def _forward_affine(g, b, rstd, post, C: int):
    """The forward's scale and shift, from which a fused activation's input is recomputed (None without one)."""
    if post[0] == "none":
        return None, None
    _required(rstd, "rstd", "batch_norm_apply")
    return (rstd if g is None else g * rstd), (np.zeros(C) if b is None else b)


@documented(_PARAMS, returns=("tuple of numpy.ndarray", "(s_dy, s_dy_xmu), each of shape (C,)."),
            rstd=("array_like of shape (C,), optional", "The forward's rstd: needed with a fused activation only."))
def batch_norm_grad_sums(dy: ArrayLike, x: ArrayLike, mean: ArrayLike, *, axis: Any = 1,
                         rstd: Optional[ArrayLike] = None, gamma: Optional[ArrayLike] = None,
                         beta: Optional[ArrayLike] = None, activation: Optional[str] = None,
                         negative_slope: float = 0.01,
                         num_threads: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """The two per-channel sums of the batch-norm backward, in float64, in a fixed order (the same bits for any
    thread count): s_dy = sum of dy and s_dy_xmu = sum of dy (x - mean), over every axis but ``axis``.  Summed
    over ranks they are the whole batch's; dgamma = s_dy_xmu rstd and dbeta = s_dy.

    With a fused ``activation``, dy is the activation output's gradient; give the forward's ``rstd``, ``gamma``
    and ``beta`` to recompute its input.  Returns (s_dy, s_dy_xmu), each of shape (C,).
    """
    dy, x = as_array(dy, "dy"), as_array(x, "x")
    check_same_shape(x, dy, "x", "dy")
    storage = storage_dtype(common_dtype(dy.dtype, x.dtype), "x")
    A, C, B = _layout(x.shape, axis)
    _required(mean, "mean", "batch_norm_apply")
    mean = _channel_param(mean, "mean", C)
    rstd = _channel_param(rstd, "rstd", C)
    post = post_op(activation, negative_slope)
    z = _forward_affine(_channel_param(gamma, "gamma", C), _channel_param(beta, "beta", C), rstd, post, C)
    sum_dy, sum_dy_xmu = np.empty(C), np.empty(C)
    _C.bn_grad_sums(as_buffer(dy, storage), as_buffer(x, storage), A, C, B, mean, sum_dy,
                    sum_dy_xmu, resolve(num_threads), *post, *z)
    return sum_dy, sum_dy_xmu


@documented(_PARAMS, returns=("numpy.ndarray", "dx (``out`` when given)."),
            sum_dy=("array_like of shape (C,)", "The whole batch's sum of dy per channel."),
            sum_dy_xmu=("array_like of shape (C,)", "The whole batch's sum of dy (x - mean) per channel."),
            count=("int", "The whole batch's number of values per channel."))
def batch_norm_input_grad(dy: ArrayLike, x: ArrayLike, mean: ArrayLike, rstd: ArrayLike, sum_dy: ArrayLike,
                          sum_dy_xmu: ArrayLike, count: int, *, gamma: Optional[ArrayLike] = None, axis: Any = 1,
                          beta: Optional[ArrayLike] = None, activation: Optional[str] = None,
                          negative_slope: float = 0.01, out: Optional[np.ndarray] = None,
                          num_threads: Optional[int] = None) -> np.ndarray:
    """dx = gamma rstd (dy - sum_dy / count - (x - mean) rstd^2 sum_dy_xmu / count), from the batch's mean and
    rstd, the gradient sums of the whole batch (:func:`batch_norm_grad_sums`, summed over ranks) and its total
    ``count`` of values per channel.  With this rank's own sums and count it gives
    :func:`fastnorm.batch_norm_backward`'s dx bit for bit.  Returns dx (in ``out`` when given)."""
    dy, x = as_array(dy, "dy"), as_array(x, "x")
    check_same_shape(x, dy, "x", "dy")
    common = common_dtype(dy.dtype, x.dtype)
    storage, result = storage_dtype(common, "x"), result_dtype(common)
    A, C, B = _layout(x.shape, axis)
    _required(mean, "mean", "batch_norm_apply"), _required(rstd, "rstd", "batch_norm_apply")
    mean, rstd = _channel_param(mean, "mean", C), _channel_param(rstd, "rstd", C)
    s1, s2 = _channel_param(sum_dy, "sum_dy", C), _channel_param(sum_dy_xmu, "sum_dy_xmu", C)
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count <= 0:
        raise ValueError(f"count: expected the batch's number of values per channel, an int > 0, got {count!r}")
    g, b = _channel_param(gamma, "gamma", C), _channel_param(beta, "beta", C)
    post = post_op(activation, negative_slope)
    if out is not None:
        check_out(out, x.shape, result)
    n = float(count)
    k_dy = rstd if g is None else g * rstd
    k_xmu = -(k_dy * (rstd * (rstd * s2))) / n  # as the fused backward (batch_norm.cpp's grad_k_xmu)
    k_one = -k_dy * s1 / n
    dyb, xb = as_buffer(dy, storage), as_buffer(x, storage)
    buf = kernel_output(out, x.shape, storage, (dyb, xb), (mean, rstd, g, b, s1, s2))
    _C.bn_input_grad(dyb, xb, buf, A, C, B, mean, k_dy, k_xmu, k_one,
                     resolve(num_threads), *post, *_forward_affine(g, b, rstd, post, C))
    return deliver(buf, out, result)


@documented(_PARAMS, returns=("None", "The arrays are updated in place."),
            running_mean=("numpy.ndarray of shape (C,)", "The running mean, updated in place."),
            running_var=("numpy.ndarray of shape (C,)", "The running variance, updated in place."),
            stats=("Moments", "The batch's per-channel statistics (:func:`batch_norm_stats`)."),
            num_batches_tracked=("0-d integer numpy.ndarray, optional", "Batches seen, incremented here; needed "
                                                                        "with ``momentum=None``."),
            unbiased=("bool, default True", "Use the batch's unbiased variance m2 / (count - 1), as PyTorch does."))
def update_running_stats(running_mean: np.ndarray, running_var: np.ndarray, stats: Moments, *,
                         momentum: Optional[float] = 0.1, num_batches_tracked: Optional[np.ndarray] = None,
                         unbiased: bool = True) -> None:
    """Updates running statistics in place from a batch's :class:`fastnorm.Moments`, as
    :func:`fastnorm.batch_norm` does in training: new = (1 - momentum) old + momentum batch, the batch variance
    unbiased (m2 / (count - 1)) unless ``unbiased=False``; ``momentum=None`` is the cumulative average over the
    batches counted in ``num_batches_tracked`` (a 0-d integer ndarray, incremented here when given)."""
    C = np.shape(running_mean)[0] if np.ndim(running_mean) == 1 else -1
    rm, rv = _running_pair(running_mean, running_var, C)
    if rm is None:
        raise ValueError("running_mean: required (with running_var)")
    momentum = _momentum(momentum, allow_none=True)
    if num_batches_tracked is not None:
        _check_counter(num_batches_tracked)
    elif momentum is None:
        raise ValueError("num_batches_tracked: required with momentum=None (the cumulative average)")
    count, mean, m2 = _channel_stats(stats, C)
    if unbiased and count < 2:
        raise ValueError(f"stats: an unbiased variance needs a count > 1, got {count}")
    _advance_running(rm, rv, momentum, num_batches_tracked, mean, m2 / (count - 1) if unbiased else m2 / count)
