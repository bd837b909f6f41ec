"""Batch normalization, functional forward and backward (layer and RMS normalization: :mod:`fastnorm.row_norms`;
group and instance normalization: :mod:`fastnorm.group_norms`; what they share: ``fastnorm._norm_common``).

"You want zero-mean unit-variance activations? Just make them so." (Ioffe & Szegedy 2015).  x is viewed as
(A, C, B) around its channel axis, so NCHW (axis=1), channels-last (axis=-1) and any other axis run natively,
without transposes.  Statistics come from :func:`fastnorm.moments` (float64, shifted sums merged with Chan's
formula): accurate for data whose mean is far above its spread and bitwise the same for any thread count.
"""
from __future__ import annotations


import numpy as np
from typing import Any, Optional
from numpy.typing import ArrayLike

from fastnorm import _C
from fastnorm._array import (as_array, as_buffer, check_out, check_same_shape, check_updated_apart, common_dtype,
                             compute_dtype, deliver, kernel_output, result_dtype, storage_dtype)
from fastnorm._norm_common import (NormGrads, _F64, _advance_running, _backward_exponents, _channel_param,
                                   _check_counter, _eps, _grad_dtype, _layout, _momentum, _overflowed, _required,
                                   _rescue_exponents, _running_pair)
from fastnorm._threads import resolve
from fastnorm._validate import post_op

__all__ = ["batch_norm", "batch_norm_backward"]


def batch_norm(x: ArrayLike, *, gamma: Optional[ArrayLike] = None, beta: Optional[ArrayLike] = None, axis: Any = 1,
               training: bool = True, running_mean: Optional[np.ndarray] = None,
               running_var: Optional[np.ndarray] = None, momentum: Optional[float] = 0.1, eps: Optional[float] = 1e-5,
               num_batches_tracked: Optional[np.ndarray] = None, running_var_unbiased: bool = True,
               return_stats: bool = False, activation: Optional[str] = None, negative_slope: float = 0.01,
               out: Optional[np.ndarray] = None, num_threads: Optional[int] = None) -> Any:
    """Batch normalization over every axis but the channel axis.

    y = (x - mean[c]) / sqrt(var[c] + eps) * gamma[c] + beta[c]

    Training (``training=True``): mean and var are the batch's (var biased, over the N * spatial values of each
    channel).  When ``running_mean`` / ``running_var`` are given they are updated in place as PyTorch does,
    ``new = (1 - momentum) * old + momentum * batch``, with the batch variance unbiased (N - 1) unless
    ``running_var_unbiased=False``.  ``momentum=None`` gives the cumulative average, weight 1 / k for the k-th
    batch, counted in ``num_batches_tracked`` (a 0-d integer ndarray, also updated in place, also incremented
    with a numeric momentum when given).  A NaN in a training batch makes that batch's output NaN in the
    channels it appears in, and those channels' running statistics NaN from then on.

    Test mode (``training=False``): mean and var are ``running_mean`` and ``running_var`` (required), and the
    layer is the fixed per-channel affine map it becomes at inference.

    Parameters
    ----------
    x : array_like, rank >= 2
        Activations.
    gamma, beta : array_like of shape (C,), optional
        Scale and shift (default 1 and 0).
    axis : int, default 1
        The channel axis: 1 for (N, D) and NCHW-style data, -1 for channels-last.
    training : bool
    running_mean, running_var : ndarray of shape (C,), optional
        Running statistics, read in test mode and updated in place in training.
    momentum : float in [0, 1] or None
    eps : float > 0
    num_batches_tracked : 0-d integer ndarray, optional
        Batches seen; required with ``momentum=None`` and running statistics.
    running_var_unbiased : bool
    return_stats : bool
        Also return the mean and rstd = 1 / sqrt(var + eps) used, float64 arrays of shape (C,), for
        :func:`batch_norm_backward`.
    activation : None, "relu", "leaky_relu", "silu" or "gelu"
        Applied to the normalized value in the same pass (y = activation(batch_norm(x))), so the normalized
        tensor is never written.  Give the same to the backward.
    negative_slope : float, default 0.01
        leaky_relu's slope for negative inputs.
    out : ndarray, optional
        Where to write y (NumPy's out= rules).
    num_threads : int, optional
        Threads to use; results do not depend on it.

    Returns
    -------
    y, or (y, mean, rstd) with ``return_stats``.

    References
    ----------
    Ioffe & Szegedy, Batch normalization: accelerating deep network training by reducing internal covariate
    shift, ICML 2015.
    """
    if training is True and running_mean is None and running_var is None and num_batches_tracked is None \
            and activation is None and out is None and num_threads is None \
            and (momentum is None or type(momentum) is float and 0.0 <= momentum <= 1.0):  # the common call
        done = _C.batch_norm_common(x, gamma, beta, axis, eps, resolve(None))
        if done is not None:
            return done if return_stats else done[0]
    x = as_array(x, "x")
    storage, result = storage_dtype(x.dtype, "x"), result_dtype(x.dtype)  # float16, bfloat16 read natively
    A, C, B = _layout(x.shape, axis)
    eps = _eps(eps, compute_dtype(x.dtype, "x"))
    g, b = _channel_param(gamma, "gamma", C), _channel_param(beta, "beta", C)
    rm, rv = _running_pair(running_mean, running_var, C)
    momentum = _momentum(momentum, allow_none=True)
    post = post_op(activation, negative_slope)
    if num_batches_tracked is not None:
        _check_counter(num_batches_tracked)
    if training and rm is not None and momentum is None and num_batches_tracked is None:
        raise ValueError("num_batches_tracked: required with momentum=None (the cumulative average)")
    if out is not None:
        check_out(out, x.shape, result)
    if training:
        check_updated_apart(out, {"running_mean": rm, "running_var": rv,
                                  "num_batches_tracked": num_batches_tracked})
    threads = resolve(num_threads)
    xb = as_buffer(x, storage)
    # float64 in place trains through a buffer of its own, so that x is still there to rescue an overflow from
    buf = kernel_output(out, x.shape, storage, (xb,), (g, b, xb if training and storage == _F64 else None))
    if training:
        count = A * B
        if count <= 1:
            raise ValueError(f"x: batch norm in training needs more than one value per channel, got {count} "
                             f"(shape {x.shape}, channel axis {axis})")
        mean, m2 = np.empty(C), np.empty(C)
        # statistics, constants and y in one call: one pass over memory where a channel fits in L2, else two
        _C.bn_forward_train(xb, buf, A, C, B, g, b, eps, mean, m2, threads, *post)
        if storage == _F64 and _overflowed(mean, m2):
            x3 = xb.reshape(A, C, B)
            k = _rescue_exponents(x3, (0, 2), ~np.isfinite(mean + m2))
            _C.bn_forward_train(np.ldexp(x3, k), buf, A, C, B, g, b, eps, mean, m2,
                                threads, *post)
            k = k.reshape(-1)
            rstd = np.ldexp(1.0 / np.sqrt(m2 / count + eps), k)
            with np.errstate(over="ignore"):  # m2 overflows where the true value does
                mean, m2 = np.ldexp(mean, -k), np.ldexp(m2, -2 * k)
        else:
            rstd = None
        y = deliver(buf, out, result)
        if rm is None and not return_stats:
            return y
        var = m2 / count
        if rm is not None:
            _advance_running(rm, rv, momentum, num_batches_tracked, mean,
                             m2 / (count - 1) if running_var_unbiased else var)
        if not return_stats:
            return y
        return y, mean, (1.0 / np.sqrt(var + eps)) if rstd is None else rstd
    if rm is None:
        raise ValueError("running_mean: test mode (training=False) needs running_mean and running_var")
    mean, var = rm.astype(np.float64), rv.astype(np.float64)
    rstd = 1.0 / np.sqrt(var + eps)
    scale = rstd if g is None else g * rstd
    shift = np.zeros(C) if b is None else b
    _C.bn_apply(xb, buf, A, C, B, mean, scale, shift, threads, *post)
    y = deliver(buf, out, result)
    return (y, mean, rstd) if return_stats else y


def batch_norm_backward(dy: ArrayLike, x: ArrayLike, mean: ArrayLike, rstd: ArrayLike,
                        gamma: Optional[ArrayLike] = None, *, axis: Any = 1, training: bool = True,
                        dx_only: bool = False, beta: Optional[ArrayLike] = None, activation: Optional[str] = None,
                        negative_slope: float = 0.01, out: Optional[np.ndarray] = None,
                        num_threads: Optional[int] = None) -> NormGrads:
    """Gradients of :func:`batch_norm` from the saved mean and rstd only.

    With x_hat = (x - mean) rstd and N values per channel::

      dbeta[c]  = sum of dy
      dgamma[c] = sum of dy * x_hat
      dx = gamma rstd (dy - dbeta / N - x_hat dgamma / N)        (training: mean and var depend on x)
      dx = gamma rstd dy                                         (test mode: they are constants)

    Sums are taken in float64 in a fixed order: bitwise the same for any thread count.

    Parameters
    ----------
    dy, x : array_like
        Gradient with respect to y, and the forward's input (same shape).
    mean, rstd : array_like of shape (C,)
        As returned by ``batch_norm(..., return_stats=True)`` (in test mode: the running mean and
        1 / sqrt(running_var + eps)).
    gamma : array_like of shape (C,), optional
        The forward's scale; None when the forward had none.
    training : bool
        Whether the forward normalized with batch statistics.
    dx_only : bool
        Skip dgamma and dbeta (frozen parameters): they are returned as None.
    axis : int, default 1
        The forward's channel axis.
    beta, activation, negative_slope :
        For a forward with a fused ``activation``: dy is then the gradient of the activation's output, and the
        normalized value it was applied to is recomputed from x, mean, rstd, gamma and ``beta``.
    out : ndarray, optional
        Where to write dx (NumPy's out= rules).
    num_threads : int, optional
        Threads to use; results do not depend on it.

    Returns
    -------
    (dx, dgamma, dbeta); dgamma and dbeta are None without gamma or with ``dx_only``.
    """
    if training is True and beta is None and activation is None and out is None and num_threads is None:
        done = _C.batch_norm_backward_common(dy, x, mean, rstd, gamma, axis, bool(dx_only), resolve(None))
        if done is not None:  # the common call, checked in C++
            return done
    dy, x = as_array(dy, "dy"), as_array(x, "x")
    check_same_shape(x, dy, "x", "dy")
    common = common_dtype(dy.dtype, x.dtype)
    storage, result = storage_dtype(common, "x"), result_dtype(common)
    A, C, B = _layout(x.shape, axis)
    _required(mean, "mean", "batch_norm"), _required(rstd, "rstd", "batch_norm")
    mean, rstd = _channel_param(mean, "mean", C), _channel_param(rstd, "rstd", C)
    g = _channel_param(gamma, "gamma", C)
    post = post_op(activation, negative_slope)
    b = _channel_param(beta, "beta", C)
    if out is not None:
        check_out(out, x.shape, result)
    threads = resolve(num_threads)
    dyb, xb = as_buffer(dy, storage), as_buffer(x, storage)
    param_grads = g is not None and not dx_only
    buf = kernel_output(out, x.shape, storage, (dyb, xb), (mean, rstd, g, b))
    if training:  # sums, constants and dx in one call: one pass over memory where a channel fits in L2
        sum_dy, sum_dy_xmu = np.empty(C), np.empty(C)
        k = _backward_exponents(rstd) if storage == _F64 else None
        if k is not None:
            xb = np.ldexp(xb.reshape(A, C, B), k[:, None])
            mean, rstd = np.ldexp(mean, k), np.ldexp(rstd, -k)
        _C.bn_backward_train(dyb, xb, buf, A, C, B, mean, rstd, g, b, sum_dy,
                             sum_dy_xmu, threads, *post)
        if k is not None:
            buf.reshape(A, C, B)[...] = np.ldexp(buf.reshape(A, C, B), k[:, None])
        # the parameter gradients before dx reaches out, which may share memory with rstd
        pd = _grad_dtype(result)
        grads = ((sum_dy_xmu * rstd).astype(pd), sum_dy.astype(pd)) if param_grads else (None, None)
        return (deliver(buf, out, result), *grads)
    # test mode: mean and rstd are constants, dx = gamma rstd dy
    g1 = np.ones(C) if g is None else g
    # the forward's scale and shift, from which a fused activation's input is recomputed
    z = (g1 * rstd, np.zeros(C) if b is None else b) if post[0] != "none" else (None, None)
    k_dy = g1 * rstd
    sum_dy = sum_dy_xmu = None
    if param_grads:
        sum_dy, sum_dy_xmu = np.empty(C), np.empty(C)
        _C.bn_grad_sums(dyb, xb, A, C, B, mean, sum_dy, sum_dy_xmu, threads, *post,
                        *z)
    k_xmu = k_one = np.zeros(C)
    _C.bn_input_grad(dyb, xb, buf, A, C, B, mean, k_dy, k_xmu, k_one,
                     threads, *post, *z)
    pd = _grad_dtype(result)
    grads = ((sum_dy_xmu * rstd).astype(pd), sum_dy.astype(pd)) if param_grads else (None, None)
    return (deliver(buf, out, result), *grads)
