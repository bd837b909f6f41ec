"""Group and instance normalization, forward and backward: per sample, groups of channels (instance norm: one
channel a group) normalized over their channels and every other non-batch axis."""
from __future__ import annotations

import math

import numpy as np
from typing import Any, Optional
from numpy.typing import ArrayLike

from fastnorm import _C
from fastnorm._array import (as_array, as_buffer, check_out, check_same_shape, common_dtype, compute_dtype, deliver,
                             kernel_output, normalize_axis, result_dtype, storage_dtype)
from fastnorm._docs import documented
from fastnorm._norm_common import (NormGrads, _CHANNEL_AXIS, _F64, _GRADS, _GROUP_MEAN, _GROUP_RSTD, _PARAMS,
                                   _backward_exponents, _channel_param, _eps, _grad_dtype, _momentum, _overflowed,
                                   _required, _rescue_exponents, _running_pair, _update_running)
from fastnorm._threads import resolve
from fastnorm._validate import integer, post_op
from fastnorm.normalization import batch_norm, batch_norm_backward

__all__ = ["group_norm", "group_norm_backward", "instance_norm", "instance_norm_backward"]


# x is viewed as (N, P, C, Q) around its channel axis (batch first): NCHW is (N, 1, C, H*W), channels-last
# (N, H*W, C, 1).  Statistics per (sample, group) come from channel_moments; the affine map and the input gradient
# reuse the batch-norm kernels with per-(sample, channel) constants: one call over (1, N*C, Q) when P == 1, one
# call per sample over (P, C, Q) otherwise.

def _group_layout(shape: tuple, num_groups, axis):
    if len(shape) < 2:
        raise ValueError(f"x: group norm needs an array of rank >= 2 (batch first), got shape {shape}")
    ax = normalize_axis(axis, len(shape))
    if ax == 0:
        raise ValueError("axis: the channel axis cannot be axis 0, the batch axis")
    C = shape[ax]
    G = integer(num_groups, "num_groups")
    if G < 1 or C % G:
        raise ValueError(f"num_groups: {G} does not divide the {C} channels")
    return shape[0], math.prod(shape[1:ax]), C, math.prod(shape[ax + 1:]), G


def _per_channel(per_group, C):
    """(N, G) -> (N, C): each group's value for each of its channels."""
    return np.repeat(per_group, C // per_group.shape[1], axis=1)


@documented(_PARAMS, returns=("numpy.ndarray or tuple", "y, or (y, mean, rstd) with ``return_stats``, the "
                                                           "statistics of shape (N, num_groups)."),
            axis=_CHANNEL_AXIS)
def group_norm(x: ArrayLike, num_groups: int, gamma: Optional[ArrayLike] = None, beta: Optional[ArrayLike] = None, *,
               axis: Any = 1, eps: Optional[float] = 1e-5, return_stats: bool = False,
               activation: Optional[str] = None, negative_slope: float = 0.01, out: Optional[np.ndarray] = None,
               num_threads: Optional[int] = None) -> Any:
    """Group normalization: per sample, the channels (along ``axis``) in ``num_groups`` groups of consecutive
    channels, each group normalized over its channels and all other non-batch axes.

    y = (x - mean[n, g]) / sqrt(var[n, g] + eps) * gamma[c] + beta[c]

    Batch axis 0; ``axis`` 1 for NCHW-style data, -1 for channels-last.  Returns y, or (y, mean, rstd) with
    ``return_stats`` (float64, shape (N, num_groups)).  ``activation`` (None, "relu", "leaky_relu", "silu",
    "gelu") is applied in the same pass, as in :func:`batch_norm`.

    References
    ----------
    Wu & He, Group normalization, ECCV 2018.
    """
    if activation is None and out is None and num_threads is None:  # the common call, checked in C++
        done = _C.group_norm_common(x, num_groups, gamma, beta, axis, eps, resolve(None))
        if done is not None:
            return done if return_stats else done[0]
    x = as_array(x, "x")
    storage, result = storage_dtype(x.dtype, "x"), result_dtype(x.dtype)
    N, P, C, Q, G = _group_layout(x.shape, num_groups, axis)
    eps = _eps(eps, compute_dtype(x.dtype, "x"))
    g, b = _channel_param(gamma, "gamma", C), _channel_param(beta, "beta", C)
    if out is not None:
        check_out(out, x.shape, result)
    threads = resolve(num_threads)
    xb = as_buffer(x, storage)
    # float64 in place goes through a buffer of its own, so that x is still there to rescue an overflow from
    buf = kernel_output(out, x.shape, storage, (xb,), (g, b, xb if storage == _F64 else None))
    mean, rstd = np.empty((N, G)), np.empty((N, G))
    post = post_op(activation, negative_slope)
    _C.group_norm_forward(xb, buf, N, P, C, Q, G, eps, g, b, mean, rstd, threads, *post)
    if storage == _F64 and x.size and (_overflowed(mean, rstd) or not rstd.all()):
        x5 = xb.reshape(N, P, G, C // G, Q)
        k = _rescue_exponents(x5, (1, 3, 4), ~(np.isfinite(mean) & (rstd > 0)))
        _C.group_norm_forward(np.ldexp(x5, k), buf, N, P, C, Q, G, eps, g, b, mean, rstd, threads, *post)
        mean, rstd = np.ldexp(mean, -k.reshape(N, G)), np.ldexp(rstd, k.reshape(N, G))
    y = deliver(buf, out, result)
    return (y, mean, rstd) if return_stats else y


@documented(_PARAMS, returns=_GRADS, mean=_GROUP_MEAN, rstd=_GROUP_RSTD, axis=_CHANNEL_AXIS)
def group_norm_backward(dy: ArrayLike, x: ArrayLike, mean: ArrayLike, rstd: ArrayLike, num_groups: int,
                        gamma: Optional[ArrayLike] = None, *, axis: Any = 1, dx_only: bool = False,
                        beta: Optional[ArrayLike] = None, activation: Optional[str] = None,
                        negative_slope: float = 0.01, out: Optional[np.ndarray] = None,
                        num_threads: Optional[int] = None) -> NormGrads:
    """Gradients of :func:`group_norm` from the saved mean and rstd, shape (N, num_groups).

    With xhat = (x - mean) rstd, g = dy gamma and M values per group::

      dx = rstd (g - sum_group(g) / M - xhat sum_group(g xhat) / M),
      dgamma[c] = sum of dy xhat over samples and positions, dbeta[c] = sum of dy.

    With a fused ``activation`` (give the forward's, and its ``beta``), dy is the activation output's gradient.
    Returns (dx, dgamma, dbeta); dgamma and dbeta are None without gamma or with ``dx_only``.
    """
    if beta is None and activation is None and out is None and num_threads is None:  # the common call
        done = _C.group_norm_backward_common(dy, x, mean, rstd, num_groups, gamma, axis, bool(dx_only), resolve(None))
        if done is not None:
            return done
    dy, x = as_array(dy, "dy"), as_array(x, "x")
    check_same_shape(x, dy, "x", "dy")
    common = common_dtype(dy.dtype, x.dtype)
    storage, result = storage_dtype(common, "x"), result_dtype(common)
    N, P, C, Q, G = _group_layout(x.shape, num_groups, axis)
    mean = _group_stats(mean, "mean", N, G)
    rstd = _group_stats(rstd, "rstd", N, G)
    g, b = _channel_param(gamma, "gamma", C), _channel_param(beta, "beta", C)
    if out is not None:
        check_out(out, x.shape, result)
    threads = resolve(num_threads)
    dyb, xb = as_buffer(dy, storage), as_buffer(x, storage)
    buf = kernel_output(out, x.shape, storage, (dyb, xb), (mean, rstd, g, b))
    # per (sample, channel): s1 = sum of dy, s2 = sum of dy (x - mean)
    s1, s2 = np.empty((N, C)), np.empty((N, C))
    post = post_op(activation, negative_slope)
    k = _backward_exponents(rstd) if storage == _F64 else None
    if k is not None:
        wide = k.reshape(N, 1, G, 1, 1)
        xb = np.ldexp(xb.reshape(N, P, G, C // G, Q), wide)
        mean, rstd = np.ldexp(mean, k), np.ldexp(rstd, -k)
    _C.group_norm_backward(dyb, xb, buf, N, P, C, Q, G, mean, rstd, g, s1, s2, threads, *post, b)
    if k is not None:
        buf.reshape(N, P, G, C // G, Q)[...] = np.ldexp(buf.reshape(N, P, G, C // G, Q), wide)
    if g is None or dx_only:
        grads = (None, None)
    elif x.size == 0:  # sums over nothing (the statistics of empty groups are NaN)
        grads = (np.zeros(C, _grad_dtype(result)), np.zeros(C, _grad_dtype(result)))
    else:  # before dx reaches out, which may share memory with rstd
        pd = _grad_dtype(result)
        grads = ((s2 * _per_channel(rstd, C)).sum(axis=0).astype(pd), s1.sum(axis=0).astype(pd))
    return (deliver(buf, out, result), *grads)


def _group_stats(value, name: str, N: int, G: int):
    _required(value, name, "group_norm")
    arr = as_array(value, name)
    if arr.shape != (N, G):
        raise ValueError(f"{name}: expected shape ({N}, {G}) (one value per sample and group), got {arr.shape}")
    return as_buffer(arr, _F64)


@documented(_PARAMS, returns=("numpy.ndarray or tuple", "y, or (y, mean, rstd) with ``return_stats``: (N, C), or (C,) "
                                                              "without input statistics."),
            axis=_CHANNEL_AXIS,
            use_input_stats=("bool, default True", "Normalize with each instance's statistics (updating the running "
                                                   "ones when given); False: with the running statistics."))
def instance_norm(x: ArrayLike, *, gamma: Optional[ArrayLike] = None, beta: Optional[ArrayLike] = None, axis: Any = 1,
                  use_input_stats: bool = True, running_mean: Optional[np.ndarray] = None,
                  running_var: Optional[np.ndarray] = None, momentum: Optional[float] = 0.1,
                  eps: Optional[float] = 1e-5, return_stats: bool = False, activation: Optional[str] = None,
                  negative_slope: float = 0.01, out: Optional[np.ndarray] = None,
                  num_threads: Optional[int] = None) -> Any:
    """Instance normalization: each (sample, channel) normalized over its other axes (group norm with one
    channel per group), batch axis 0, channel ``axis`` (1 for NCHW, -1 for channels-last).

    With ``running_mean`` / ``running_var`` (PyTorch's track_running_stats) and ``use_input_stats=True``, the
    running statistics are updated in place with the batch average of the instance means and unbiased variances:
    new = (1 - momentum) old + momentum batch.  ``use_input_stats=False`` normalizes with the running statistics
    instead (a per-channel affine map, as in :func:`batch_norm` test mode).
    Returns y, or (y, mean, rstd) with ``return_stats`` (float64, (N, C); (C,) without input statistics).

    References
    ----------
    Ulyanov, Vedaldi & Lempitsky, Instance normalization: the missing ingredient for fast stylization, 2016.
    """
    x = as_array(x, "x")
    if not use_input_stats:
        return batch_norm(x, gamma=gamma, beta=beta, axis=axis, training=False, running_mean=running_mean,
                          running_var=running_var, eps=eps, return_stats=return_stats, activation=activation,
                          negative_slope=negative_slope, out=out, num_threads=num_threads)
    N, P, C, Q, _ = _group_layout(x.shape, 1, axis)
    rm, rv = _running_pair(running_mean, running_var, C)
    if rm is not None:
        momentum = _momentum(momentum, allow_none=False)
    y, mean, rstd = group_norm(x, C, gamma, beta, axis=axis, eps=eps, return_stats=True, activation=activation,
                               negative_slope=negative_slope, out=out, num_threads=num_threads)
    if rm is not None:
        count = P * Q
        if count <= 1:
            raise ValueError("x: running statistics need more than one value per instance")
        var_unbiased = (1.0 / rstd ** 2 - eps) * count / (count - 1)
        _update_running(rm, rv, momentum, mean.mean(axis=0), var_unbiased.mean(axis=0))
    return (y, mean, rstd) if return_stats else y


@documented(_PARAMS, returns=_GRADS, axis=_CHANNEL_AXIS,
            mean=("array_like", "The forward's mean: (N, C), or (C,) without input statistics."),
            rstd=("array_like", "The forward's 1 / sqrt(var + eps), as ``mean``."),
            use_input_stats=("bool, default True", "As given to the forward."))
def instance_norm_backward(dy: ArrayLike, x: ArrayLike, mean: ArrayLike, rstd: ArrayLike,
                           gamma: Optional[ArrayLike] = None, *, axis: Any = 1, use_input_stats: bool = True,
                           dx_only: bool = False, beta: Optional[ArrayLike] = None, activation: Optional[str] = None,
                           negative_slope: float = 0.01, out: Optional[np.ndarray] = None,
                           num_threads: Optional[int] = None) -> NormGrads:
    """Gradients of :func:`instance_norm` from its saved mean and rstd: (dx, dgamma, dbeta)."""
    if not use_input_stats:
        return batch_norm_backward(dy, x, mean, rstd, gamma, axis=axis, training=False, dx_only=dx_only, beta=beta,
                                   activation=activation, negative_slope=negative_slope, out=out,
                                   num_threads=num_threads)
    x = as_array(x, "x")
    C = _group_layout(x.shape, 1, axis)[2]
    return group_norm_backward(dy, x, mean, rstd, C, gamma, axis=axis, dx_only=dx_only, beta=beta,
                               activation=activation, negative_slope=negative_slope, out=out,
                               num_threads=num_threads)
