"""Normalization layers, functional forward and backward: batch, layer and RMS normalization.

"You want zero-mean unit-variance activations? Just make them so." (Ioffe & Szegedy 2015).  x is viewed as
(A, C, B) around its channel axis, so NCHW (axis=1), channels-last (axis=-1) and any other axis run natively,
without transposes.  Statistics come from :func:`fastnorm.moments` (float64, shifted sums merged with Chan's
formula): accurate for data whose mean is far above its spread and bitwise the same for any thread count.
"""
from __future__ import annotations

import math

import numpy as np

from fastnorm import _C
from fastnorm._array import (as_array, as_buffer, check_out, check_same_shape, compute_dtype, deliver,
                             kernel_output, normalize_axis, result_dtype)
from fastnorm._threads import resolve

__all__ = ["batch_norm", "batch_norm_backward", "layer_norm", "layer_norm_backward", "rms_norm", "rms_norm_backward"]


def _layout(shape: tuple, axis, name: str = "axis"):
    if len(shape) < 2:
        raise ValueError(f"x: batch norm needs an array of rank >= 2, got shape {shape}")
    ax = normalize_axis(axis, len(shape), name)
    return math.prod(shape[:ax]), shape[ax], math.prod(shape[ax + 1:])


def _channel_param(value, name: str, channels: int):
    """gamma, beta, mean, rstd: None, or C values as float64."""
    if value is None:
        return None
    arr = as_array(value, name)
    if arr.shape != (channels,):
        raise ValueError(f"{name}: expected shape ({channels},) (one value per channel), got {arr.shape}")
    return np.asarray(arr, dtype=np.float64)


def _running(value, name: str, channels: int):
    if value is None:
        return None
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray updated in place, got {type(value).__name__}")
    if value.dtype.kind != "f":
        raise TypeError(f"{name}: expected a floating array, got dtype {value.dtype}")
    if value.shape != (channels,):
        raise ValueError(f"{name}: expected shape ({channels},) (one value per channel), got {value.shape}")
    if not value.flags.writeable:
        raise ValueError(f"{name}: array is read-only")
    return value


def _eps(eps) -> float:
    try:
        e = float(eps)
    except (TypeError, ValueError):
        raise TypeError(f"eps: expected a real number, got {type(eps).__name__}") from None
    if not (math.isfinite(e) and e > 0):
        raise ValueError(f"eps: expected a finite number > 0, got {e}")
    return e


def batch_norm(x, gamma=None, beta=None, *, axis=1, training=True, running_mean=None, running_var=None,
               momentum=0.1, eps=1e-5, num_batches_tracked=None, running_var_unbiased=True, return_stats=False,
               out=None, num_threads=None):
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
        Activations; ``axis`` is the channel axis: 1 for (N, D) and NCHW-style data, -1 for channels-last.
    gamma, beta : array_like of shape (C,), optional
        Scale and shift (default 1 and 0).
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
    x = as_array(x, "x")
    compute, result = compute_dtype(x.dtype, "x"), result_dtype(x.dtype)
    A, C, B = _layout(x.shape, axis)
    eps = _eps(eps)
    g, b = _channel_param(gamma, "gamma", C), _channel_param(beta, "beta", C)
    rm, rv = _running(running_mean, "running_mean", C), _running(running_var, "running_var", C)
    if (rm is None) != (rv is None):
        raise ValueError("running_mean: give running_mean and running_var together")
    if momentum is not None:
        momentum = float(momentum)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum: expected a number in [0, 1] or None, got {momentum}")
    if num_batches_tracked is not None and not (isinstance(num_batches_tracked, np.ndarray)
                                                and num_batches_tracked.shape == ()
                                                and num_batches_tracked.dtype.kind in "iu"):
        raise TypeError("num_batches_tracked: expected a 0-d integer ndarray, updated in place")
    if out is not None:
        check_out(out, x.shape, result)
    threads = resolve(num_threads)
    xb = as_buffer(x, compute)

    if training:
        count = A * B
        if count <= 1:
            raise ValueError(f"x: batch norm in training needs more than one value per channel, got {count} "
                             f"(shape {x.shape}, channel axis {axis})")
        mean, m2 = np.empty(C), np.empty(C)
        _C.channel_moments(xb.reshape(-1), A, C, B, mean, m2, threads)
        var = m2 / count
        if rm is not None:
            if momentum is None and num_batches_tracked is None:
                raise ValueError("num_batches_tracked: required with momentum=None (the cumulative average)")
            if num_batches_tracked is not None:
                num_batches_tracked += 1
            factor = momentum if momentum is not None else 1.0 / int(num_batches_tracked)
            batch_var = m2 / (count - 1) if running_var_unbiased else var
            rm[...] = (1 - factor) * rm.astype(np.float64) + factor * mean
            rv[...] = (1 - factor) * rv.astype(np.float64) + factor * batch_var
    else:
        if rm is None:
            raise ValueError("running_mean: test mode (training=False) needs running_mean and running_var")
        mean, var = rm.astype(np.float64), rv.astype(np.float64)
    rstd = 1.0 / np.sqrt(var + eps)
    scale = rstd if g is None else g * rstd
    shift = np.zeros(C) if b is None else b
    buf = kernel_output(out, x.shape, compute, (xb,))
    _C.bn_apply(xb.reshape(-1), buf.reshape(-1), A, C, B, np.ascontiguousarray(mean), scale, shift, threads)
    y = deliver(buf, out, result)
    return (y, mean, rstd) if return_stats else y


def batch_norm_backward(dy, x, mean, rstd, gamma=None, *, axis=1, training=True, dx_only=False, out=None,
                        num_threads=None):
    """Gradients of :func:`batch_norm` from the saved mean and rstd only.

    With x_hat = (x - mean) rstd and N values per channel:
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

    Returns
    -------
    (dx, dgamma, dbeta); dgamma and dbeta are None without gamma or with ``dx_only``.
    """
    dy, x = as_array(dy, "dy"), as_array(x, "x")
    check_same_shape(x, dy, "x", "dy")
    common = np.result_type(dy.dtype, x.dtype)
    compute, result = compute_dtype(common, "x"), result_dtype(common)
    A, C, B = _layout(x.shape, axis)
    mean, rstd = _channel_param(mean, "mean", C), _channel_param(rstd, "rstd", C)
    g = _channel_param(gamma, "gamma", C)
    if out is not None:
        check_out(out, x.shape, result)
    threads = resolve(num_threads)
    dyb, xb = as_buffer(dy, compute), as_buffer(x, compute)
    param_grads = g is not None and not dx_only
    g1 = np.ones(C) if g is None else g
    count = A * B
    sum_dy = sum_dy_xmu = None
    if training or param_grads:
        sum_dy, sum_dy_xmu = np.empty(C), np.empty(C)
        _C.bn_grad_sums(dyb.reshape(-1), xb.reshape(-1), A, C, B, mean, sum_dy, sum_dy_xmu, threads)
    k_dy = g1 * rstd
    if training and count > 0:
        k_xmu = -k_dy * rstd * rstd * sum_dy_xmu / count
        k_one = -k_dy * sum_dy / count
    else:
        k_xmu = k_one = np.zeros(C)
    buf = kernel_output(out, x.shape, compute, (dyb, xb))
    _C.bn_input_grad(dyb.reshape(-1), xb.reshape(-1), buf.reshape(-1), A, C, B, mean, k_dy, k_xmu, k_one,
                     threads)
    dx = deliver(buf, out, result)
    if not param_grads:
        return dx, None, None
    return dx, (sum_dy_xmu * rstd).astype(result), sum_dy.astype(result)


# ---- layer and RMS normalization ---------------------------------------------------------------------------------

def _trailing(shape: tuple, axis):
    """(M, D, normalized shape) for normalizing over ``axis``: an int or a tuple of the trailing axes."""
    if len(shape) < 1:
        raise ValueError("x: layer norm needs an array of rank >= 1")
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    if not axes:
        raise ValueError("axis: expected at least one axis")
    norm = sorted(normalize_axis(a, len(shape)) for a in axes)
    if len(set(norm)) != len(norm) or norm != list(range(len(shape) - len(norm), len(shape))):
        raise ValueError(f"axis: expected the trailing axes of an array of {len(shape)} dimensions "
                         f"(such as -1 or (-2, -1)), got {axis}")
    k = len(norm)
    return math.prod(shape[:-k]), math.prod(shape[-k:]), tuple(shape[-k:])


def _feature_param(value, name: str, shape: tuple, dtype, default: float):
    """gamma/beta of the normalized shape, as a flat C-contiguous array of the compute dtype."""
    if value is None:
        return np.full(math.prod(shape), default, dtype=dtype)
    arr = as_array(value, name)
    if arr.shape != shape:
        raise ValueError(f"{name}: expected shape {shape} (the normalized axes), got {arr.shape}")
    return np.ascontiguousarray(arr, dtype=dtype).reshape(-1)


def _row_stats(value, name: str, lead: tuple):
    arr = as_array(value, name)
    if arr.shape != lead and arr.size != math.prod(lead):
        raise ValueError(f"{name}: expected shape {lead} (one value per normalized row), got {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float64).reshape(-1)


def _normalize_rows(x, gamma, beta, axis, eps, centered, return_stats, out, num_threads):
    x = as_array(x, "x")
    compute, result = compute_dtype(x.dtype, "x"), result_dtype(x.dtype)
    M, D, shape = _trailing(x.shape, axis)
    g = _feature_param(gamma, "gamma", shape, compute, 1.0)
    b = _feature_param(beta, "beta", shape, compute, 0.0)
    if out is not None:
        check_out(out, x.shape, result)
    threads = resolve(num_threads)
    xb = as_buffer(x, compute)
    mean, m2 = np.empty(M), np.empty(M)
    _C.channel_moments(xb.reshape(-1), 1, M, D, mean, m2, threads)
    if D == 0:
        mean[:] = 0.0
    if centered:
        var = m2 / max(D, 1)
    else:  # mean of squares = variance + mean^2, no cancellation
        var = m2 / max(D, 1) + mean * mean
        mean = np.zeros(M)
    rstd = 1.0 / np.sqrt(var + eps)
    buf = kernel_output(out, x.shape, compute, (xb,))
    _C.ln_apply(xb.reshape(-1), buf.reshape(-1), M, D, mean, rstd, g, b, threads)
    y = deliver(buf, out, result)
    lead = x.shape[:len(x.shape) - len(shape)]
    if not return_stats:
        return y
    return (y, mean.reshape(lead), rstd.reshape(lead)) if centered else (y, rstd.reshape(lead))


def _normalize_rows_backward(dy, x, mean, rstd, gamma, axis, centered, dx_only, out, num_threads):
    dy, x = as_array(dy, "dy"), as_array(x, "x")
    check_same_shape(x, dy, "x", "dy")
    common = np.result_type(dy.dtype, x.dtype)
    compute, result = compute_dtype(common, "x"), result_dtype(common)
    M, D, shape = _trailing(x.shape, axis)
    lead = x.shape[:len(x.shape) - len(shape)]
    mean = _row_stats(mean, "mean", lead) if centered else np.zeros(M)
    rstd = _row_stats(rstd, "rstd", lead)
    g = _feature_param(gamma, "gamma", shape, compute, 1.0)
    if out is not None:
        check_out(out, x.shape, result)
    dyb, xb = as_buffer(dy, compute), as_buffer(x, compute)
    param_grads = gamma is not None and not dx_only
    dgamma, dbeta = np.empty(D), np.empty(D)
    buf = kernel_output(out, x.shape, compute, (dyb, xb))
    _C.ln_backward(dyb.reshape(-1), xb.reshape(-1), buf.reshape(-1), M, D, mean, rstd, g, centered, dgamma, dbeta,
                   param_grads, resolve(num_threads))
    dx = deliver(buf, out, result)
    if not param_grads:
        return dx, None, None
    return dx, dgamma.reshape(shape).astype(result), dbeta.reshape(shape).astype(result)


def layer_norm(x, gamma=None, beta=None, *, axis=-1, eps=1e-5, return_stats=False, out=None, num_threads=None):
    """Layer normalization over the trailing axes ``axis`` (an int or a tuple), per sample.

    y = (x - mean) / sqrt(var + eps) * gamma + beta, mean and (biased) var over the normalized axes of each row;
    gamma and beta have the normalized axes' shape.  Returns y, or (y, mean, rstd) with ``return_stats`` (float64,
    one value per row, of x's leading shape).

    References
    ----------
    Ba, Kiros & Hinton, Layer normalization, arXiv:1607.06450, 2016.
    """
    return _normalize_rows(x, gamma, beta, axis, _eps(eps), True, return_stats, out, num_threads)


def layer_norm_backward(dy, x, mean, rstd, gamma=None, *, axis=-1, dx_only=False, out=None, num_threads=None):
    """Gradients of :func:`layer_norm` from the saved mean and rstd only.

    With xhat = (x - mean) rstd and g = dy gamma, per row of D values:
      dx = rstd (g - mean(g) - xhat mean(g xhat)),  dgamma = sum over rows of dy xhat,  dbeta = sum of dy
    Returns (dx, dgamma, dbeta); dgamma and dbeta are None without gamma or with ``dx_only``.
    """
    return _normalize_rows_backward(dy, x, mean, rstd, gamma, axis, True, dx_only, out, num_threads)


def rms_norm(x, gamma=None, *, axis=-1, eps=None, return_stats=False, out=None, num_threads=None):
    """RMS normalization over the trailing axes ``axis``: y = x / sqrt(mean(x^2) + eps) * gamma.

    ``eps=None`` is the computation dtype's machine epsilon (PyTorch's default).  Returns y, or (y, rstd) with
    ``return_stats`` (float64, one value per row).

    References
    ----------
    Zhang & Sennrich, Root mean square layer normalization, NeurIPS 2019.
    """
    x_dtype = compute_dtype(as_array(x, "x").dtype, "x")
    eps = float(np.finfo(x_dtype).eps) if eps is None else _eps(eps)
    return _normalize_rows(x, gamma, None, axis, eps, False, return_stats, out, num_threads)


def rms_norm_backward(dy, x, rstd, gamma=None, *, axis=-1, dx_only=False, out=None, num_threads=None):
    """Gradients of :func:`rms_norm` from the saved rstd: with xhat = x rstd and g = dy gamma, per row,
    dx = rstd (g - xhat mean(g xhat)), dgamma = sum over rows of dy xhat.  Returns (dx, dgamma)."""
    dx, dgamma, _ = _normalize_rows_backward(dy, x, None, rstd, gamma, axis, False, dx_only, out, num_threads)
    return dx, dgamma
