"""Layer and RMS normalization over the trailing axes (rows), forward and backward.

x is viewed as M rows of D values (the normalized axes, flattened); each row is normalized from its own statistics
while it is in cache, its gradient in two passes over it, the second from L1.
"""
from __future__ import annotations

import math

import numpy as np
from typing import Any, Optional, Tuple
from numpy.typing import ArrayLike

from fastnorm import _C
from fastnorm._array import (as_array, as_buffer, check_out, check_same_shape, common_dtype, compute_dtype, deliver,
                             kernel_output, normalize_axis, result_dtype, storage_dtype)
from fastnorm._docs import documented
from fastnorm._norm_common import (NormGrads, _F64, _GRADS, _PARAMS, _ROW_AXIS, _ROW_MEAN, _ROW_RSTD, _eps,
                                   _grad_dtype, _overflowed, _required, _rescue_exponents)
from fastnorm._threads import resolve
from fastnorm._validate import NO_POST_OP, post_op

__all__ = ["layer_norm", "layer_norm_backward", "rms_norm", "rms_norm_backward"]


def _trailing(shape: tuple, axis):
    """(M, D, normalized shape) for normalizing over ``axis``: an int or a tuple of the trailing axes."""
    if len(shape) < 1:
        raise ValueError("x: layer norm needs an array of rank >= 1")
    if type(axis) is int and axis in (-1, len(shape) - 1):  # the common case, without the general checks' 1 us
        return math.prod(shape[:-1]), shape[-1], shape[-1:]
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    if not axes:
        raise ValueError("axis: expected at least one axis")
    norm = sorted(normalize_axis(a, len(shape)) for a in axes)
    if len(set(norm)) != len(norm) or norm != list(range(len(shape) - len(norm), len(shape))):
        raise ValueError(f"axis: expected the trailing axes of an array of {len(shape)} dimensions "
                         f"(such as -1 or (-2, -1)), got {axis}")
    k = len(norm)
    return math.prod(shape[:-k]), math.prod(shape[-k:]), tuple(shape[-k:])


def _feature_param(value, name: str, shape: tuple, dtype):
    """gamma/beta of the normalized shape as a flat C-contiguous array of the compute dtype, or None (the kernels
    use 1 and 0 then: no default as large as a row)."""
    if value is None:
        return None
    if type(value) is np.ndarray and value.shape == shape and value.dtype == dtype and value.flags.c_contiguous \
            and value.flags.aligned:  # the common case, without the general conversion's 0.4 us
        return value if value.ndim == 1 else value.reshape(-1)
    arr = as_array(value, name)
    if arr.shape != shape:
        raise ValueError(f"{name}: expected shape {shape} (the normalized axes), got {arr.shape}")
    return as_buffer(arr, dtype).reshape(-1)




def _row_stats(value, name: str, lead: tuple, forward: str = "layer_norm"):
    if type(value) is np.ndarray and value.ndim == 1 and value.shape == lead and value.dtype == _F64 \
            and value.dtype.isnative and value.flags.c_contiguous and value.flags.aligned:
        return value  # the forward's own statistics of a 2-D x: the common case, without the general checks
    _required(value, name, forward)
    arr = as_array(value, name)
    if arr.shape != lead and arr.size != math.prod(lead):
        raise ValueError(f"{name}: expected shape {lead} (one value per normalized row), got {arr.shape}")
    return as_buffer(arr, _F64).reshape(-1)


def _normalize_rows(x, gamma, beta, axis, eps, centered, return_stats, out, num_threads, post=NO_POST_OP):
    x = as_array(x, "x")
    # float16 and bfloat16 rows are read and written as such, computed in float32 (gamma and beta too)
    storage, compute, result = storage_dtype(x.dtype, "x"), compute_dtype(x.dtype, "x"), result_dtype(x.dtype)
    M, D, shape = _trailing(x.shape, axis)
    eps = float(np.finfo(compute).eps) if eps is None else _eps(eps, compute)  # None: RMS norm's default
    lead = x.shape[:len(x.shape) - len(shape)]
    g = _feature_param(gamma, "gamma", shape, compute)
    b = _feature_param(beta, "beta", shape, compute)
    if x.size == 0:  # nothing to normalize: no kernel call
        if out is not None:
            check_out(out, x.shape, result)
        y = out if out is not None else np.empty(x.shape, result)
        nan = np.full(lead, np.nan)
        return y if not return_stats else ((y, nan, nan.copy()) if centered else (y, nan))
    if out is not None:
        check_out(out, x.shape, result)
    threads = resolve(num_threads)
    xb = as_buffer(x, storage)
    mean, rstd = np.empty(M), np.empty(M)
    # float64 in place goes through a buffer of its own, so that x is still there to rescue an overflow from
    buf = kernel_output(out, x.shape, storage, (xb,), (g, b, xb if storage == _F64 else None))
    # each row's statistics (RMS: the mean of squares, as variance + mean^2, without cancellation), then the row
    # normalized while it is in cache
    _C.ln_forward(xb, buf, M, D, eps, centered, g, b, mean, rstd, threads, *post)
    if storage == _F64 and (_overflowed(mean, rstd) or not rstd.all()):
        x2 = xb.reshape(M, D)
        k = _rescue_exponents(x2, (1,), ~(np.isfinite(mean) & (rstd > 0)))
        _C.ln_forward(np.ldexp(x2, k), buf, M, D, eps, centered, g, b, mean, rstd,
                      threads, *post)
        mean, rstd = np.ldexp(mean, -k.reshape(-1)), np.ldexp(rstd, k.reshape(-1))
    y = deliver(buf, out, result)
    if not return_stats:
        return y
    return (y, mean.reshape(lead), rstd.reshape(lead)) if centered else (y, rstd.reshape(lead))


def _normalize_rows_backward(dy, x, mean, rstd, gamma, axis, centered, dx_only, out, num_threads, beta=None,
                             post=NO_POST_OP):
    dy, x = as_array(dy, "dy"), as_array(x, "x")
    check_same_shape(x, dy, "x", "dy")
    common = common_dtype(dy.dtype, x.dtype)
    storage, compute, result = storage_dtype(common, "x"), compute_dtype(common, "x"), result_dtype(common)
    M, D, shape = _trailing(x.shape, axis)
    lead = x.shape[:len(x.shape) - len(shape)]
    mean = _row_stats(mean, "mean", lead) if centered else np.zeros(M)
    rstd = _row_stats(rstd, "rstd", lead, "layer_norm" if centered else "rms_norm")
    g = _feature_param(gamma, "gamma", shape, compute)
    b = _feature_param(beta, "beta", shape, compute)
    if x.size == 0:  # sums over nothing
        if out is not None:
            check_out(out, x.shape, result)
        dx = out if out is not None else np.empty(x.shape, result)
        if gamma is None or dx_only:
            return dx, None, None
        return dx, np.zeros(shape, _grad_dtype(result)), np.zeros(shape, _grad_dtype(result))
    if out is not None:
        check_out(out, x.shape, result)
    dyb, xb = as_buffer(dy, storage), as_buffer(x, storage)
    param_grads = gamma is not None and not dx_only
    dgamma, dbeta = (np.empty(D), np.empty(D)) if param_grads else (None, None)
    buf = kernel_output(out, x.shape, storage, (dyb, xb), (mean, rstd, g, b))
    _C.ln_backward(dyb, xb, buf, M, D, mean, rstd, g, centered, dgamma, dbeta,
                   resolve(num_threads), *post, b)
    dx = deliver(buf, out, result)
    if not param_grads:
        return dx, None, None
    pd = _grad_dtype(result)
    return dx, dgamma.reshape(shape).astype(pd), dbeta.reshape(shape).astype(pd)


@documented(_PARAMS, returns=("numpy.ndarray or tuple", "y, or (y, mean, rstd) with ``return_stats``."), axis=_ROW_AXIS,
            gamma=("array_like, optional", "The scale, of the normalized axes' shape (default 1)."),
            beta=("array_like, optional", "The shift, of the normalized axes' shape (default 0)."))
def layer_norm(x: ArrayLike, gamma: Optional[ArrayLike] = None, beta: Optional[ArrayLike] = None, *, axis: Any = -1,
               eps: Optional[float] = 1e-5, return_stats: bool = False, activation: Optional[str] = None,
               negative_slope: float = 0.01, out: Optional[np.ndarray] = None,
               num_threads: Optional[int] = None) -> Any:
    """Layer normalization over the trailing axes ``axis`` (an int or a tuple), per sample.

    y = (x - mean) / sqrt(var + eps) * gamma + beta, mean and (biased) var over the normalized axes of each row;
    gamma and beta have the normalized axes' shape.  Returns y, or (y, mean, rstd) with ``return_stats`` (float64,
    one value per row, of x's leading shape).  ``activation`` (None, "relu", "leaky_relu", "silu", "gelu") is
    applied in the same pass, as in :func:`batch_norm`.

    References
    ----------
    Ba, Kiros & Hinton, Layer normalization, arXiv:1607.06450, 2016.
    """
    if activation is None and out is None and num_threads is None:  # the common call, checked in C++
        done = _C.row_norm_common(x, gamma, beta, axis, eps, True, resolve(None))
        if done is not None:
            return done if return_stats else done[0]
    return _normalize_rows(x, gamma, beta, axis, eps, True, return_stats, out, num_threads,
                           post_op(activation, negative_slope))


@documented(_PARAMS, returns=_GRADS, mean=_ROW_MEAN, rstd=_ROW_RSTD, axis=_ROW_AXIS)
def layer_norm_backward(dy: ArrayLike, x: ArrayLike, mean: ArrayLike, rstd: ArrayLike,
                        gamma: Optional[ArrayLike] = None, *, axis: Any = -1, dx_only: bool = False,
                        beta: Optional[ArrayLike] = None, activation: Optional[str] = None,
                        negative_slope: float = 0.01, out: Optional[np.ndarray] = None,
                        num_threads: Optional[int] = None) -> NormGrads:
    """Gradients of :func:`layer_norm` from the saved mean and rstd only.

    With xhat = (x - mean) rstd and g = dy gamma, per row of D values::

      dx = rstd (g - mean(g) - xhat mean(g xhat)),  dgamma = sum over rows of dy xhat,  dbeta = sum of dy

    With a fused ``activation`` (give the forward's, and its ``beta``), dy is the activation output's gradient.
    Returns (dx, dgamma, dbeta); dgamma and dbeta are None without gamma or with ``dx_only``.
    """
    if activation is None and beta is None and out is None and num_threads is None:  # the common call
        done = _C.row_norm_backward_common(dy, x, mean, rstd, gamma, axis, True, bool(dx_only), resolve(None))
        if done is not None:
            return done
    return _normalize_rows_backward(dy, x, mean, rstd, gamma, axis, True, dx_only, out, num_threads, beta,
                                    post_op(activation, negative_slope))


@documented(_PARAMS, returns=("numpy.ndarray or tuple", "y, or (y, rstd) with ``return_stats``."), axis=_ROW_AXIS,
            eps=("float, optional", "Added to the mean square; None: the computation dtype's machine epsilon "
                                    "(PyTorch's default)."),
            gamma=("array_like, optional", "The scale, of the normalized axes' shape (default 1)."))
def rms_norm(x: ArrayLike, gamma: Optional[ArrayLike] = None, *, axis: Any = -1, eps: Optional[float] = None,
             return_stats: bool = False, activation: Optional[str] = None, negative_slope: float = 0.01,
             out: Optional[np.ndarray] = None, num_threads: Optional[int] = None) -> Any:
    """RMS normalization over the trailing axes ``axis``: y = x / sqrt(mean(x^2) + eps) * gamma.

    ``eps=None`` is the computation dtype's machine epsilon (PyTorch's default).  Returns y, or (y, rstd) with
    ``return_stats`` (float64, one value per row).

    References
    ----------
    Zhang & Sennrich, Root mean square layer normalization, NeurIPS 2019.
    """
    if activation is None and out is None and num_threads is None:  # the common call, checked in C++
        done = _C.row_norm_common(x, gamma, None, axis, eps, False, resolve(None))
        if done is not None:
            return (done[0], done[2]) if return_stats else done[0]
    return _normalize_rows(x, gamma, None, axis, eps, False, return_stats, out, num_threads,
                           post_op(activation, negative_slope))


@documented(_PARAMS, returns=("tuple", "(dx, dgamma): dgamma None without gamma or with ``dx_only``."),
            rstd=("array_like", "The forward's 1 / sqrt(mean(x^2) + eps), one value per row."), axis=_ROW_AXIS)
def rms_norm_backward(dy: ArrayLike, x: ArrayLike, rstd: ArrayLike, gamma: Optional[ArrayLike] = None, *,
                      axis: Any = -1, dx_only: bool = False, activation: Optional[str] = None,
                      negative_slope: float = 0.01, out: Optional[np.ndarray] = None,
                      num_threads: Optional[int] = None) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Gradients of :func:`rms_norm` from the saved rstd: with xhat = x rstd and g = dy gamma, per row,
    dx = rstd (g - xhat mean(g xhat)), dgamma = sum over rows of dy xhat.  Returns (dx, dgamma)."""
    done = None
    if activation is None and out is None and num_threads is None:  # the common call, checked in C++
        done = _C.row_norm_backward_common(dy, x, None, rstd, gamma, axis, False, bool(dx_only), resolve(None))
    dx, dgamma, _ = done or _normalize_rows_backward(dy, x, None, rstd, gamma, axis, False, dx_only, out,
                                                     num_threads, None, post_op(activation, negative_slope))
    return dx, dgamma
