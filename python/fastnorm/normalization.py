"""Normalization layers, functional forward and backward: batch, layer, RMS, group and instance normalization.

"You want zero-mean unit-variance activations? Just make them so." (Ioffe & Szegedy 2015).  x is viewed as
(A, C, B) around its channel axis, so NCHW (axis=1), channels-last (axis=-1) and any other axis run natively,
without transposes.  Statistics come from :func:`fastnorm.moments` (float64, shifted sums merged with Chan's
formula): accurate for data whose mean is far above its spread and bitwise the same for any thread count.
"""
from __future__ import annotations

import math

import numpy as np
from typing import Any, Optional, Tuple
from numpy.typing import ArrayLike

from fastnorm import _C
from fastnorm._array import (as_array, as_buffer, check_out, check_same_shape, check_updated_apart, common_dtype,
                             compute_dtype, deliver, kernel_output, normalize_axis, result_dtype, storage_dtype)
from fastnorm._docs import documented
from fastnorm._threads import resolve
from fastnorm._validate import NO_POST_OP, integer, post_op, real

__all__ = ["batch_norm", "batch_norm_backward", "layer_norm", "layer_norm_backward", "rms_norm", "rms_norm_backward",
           "group_norm", "group_norm_backward", "instance_norm", "instance_norm_backward"]


_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)

# The parameters the normalizations share, described once (fastnorm._docs); each function's own in its decorator.
_PARAMS = {
    "x": ("array_like", "The activations (float16, bfloat16, float32 or float64 keep their dtype; integers and bools "
                        "become float64)."),
    "dy": ("array_like", "The gradient of the loss with respect to the forward's output, x's shape."),
    "gamma": ("array_like, optional", "The scale, one value per feature (default 1)."),
    "beta": ("array_like, optional", "The shift, one value per feature (default 0); a backward with a fused "
                                     "activation needs the forward's, to recompute the activation's input."),
    "eps": ("float, default 1e-5", "Added to the variance before its square root (> 0, large enough that "
                                   "1 / sqrt(eps) is finite in the computation's dtype)."),
    "return_stats": ("bool, default False", "Also return the statistics the backward takes (float64)."),
    "activation": ("{None, 'relu', 'leaky_relu', 'silu', 'gelu'}, optional",
                   "Applied to the normalized value in the same pass, so the normalized tensor is never written; "
                   "give the backward the forward's."),
    "negative_slope": ("float, default 0.01", "leaky_relu's slope for negative inputs."),
    "dx_only": ("bool, default False", "Return the parameter gradients as None instead of computing them."),
    "out": ("numpy.ndarray, optional", "Where to write the result (NumPy's out= rules); may be x itself."),
    "num_threads": ("int, optional", "Threads to use (default: fastnorm's setting); the results do not depend on "
                                     "it."),
    "running_mean": ("numpy.ndarray of shape (C,), optional", "The running mean, updated in place in training and "
                                                             "read otherwise."),
    "running_var": ("numpy.ndarray of shape (C,), optional", "The running variance, as ``running_mean``."),
    "momentum": ("float in [0, 1] or None, default 0.1", "The running statistics' update weight: new = (1 - "
                                                          "momentum) old + momentum batch."),
    "num_groups": ("int", "Groups of consecutive channels, a divisor of the channel count."),
}
_ROW_AXIS = ("int or tuple of int, default -1", "The normalized axes: the trailing ones.")
_CHANNEL_AXIS = ("int, default 1", "The channel axis: 1 for NCHW-style data, -1 for channels-last; the batch axis "
                                   "is 0.")
_ROW_MEAN = ("array_like", "The forward's mean, one value per row (x's leading shape).")
_ROW_RSTD = ("array_like", "The forward's 1 / sqrt(var + eps), one value per row.")
_GROUP_MEAN = ("array_like of shape (N, num_groups)", "The forward's mean per sample and group.")
_GROUP_RSTD = ("array_like of shape (N, num_groups)", "The forward's 1 / sqrt(var + eps) per sample and group.")
_GRADS = ("tuple", "(dx, dgamma, dbeta): dgamma and dbeta None without gamma or with ``dx_only``, else in the "
                   "result's dtype (float32 for half data).")

# What the backwards return: dx, and dgamma and dbeta (None without gamma, or with dx_only).
NormGrads = Tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]

def _layout(shape: tuple, axis, name: str = "axis"):
    if len(shape) < 2:
        raise ValueError(f"x: batch norm needs an array of rank >= 2, got shape {shape}")
    ax = normalize_axis(axis, len(shape), name)
    return math.prod(shape[:ax]), shape[ax], math.prod(shape[ax + 1:])


def _channel_param(value, name: str, channels: int):
    """gamma, beta, mean, rstd: None, or C contiguous values as float64."""
    if value is None:
        return None
    if type(value) is np.ndarray and value.shape == (channels,) and value.dtype.kind == "f" \
            and value.dtype.itemsize in (4, 8) and value.dtype.isnative:  # the common case, 0.4 us faster
        if value.dtype.itemsize == 8 and value.flags.c_contiguous and value.flags.aligned:
            return value
        return value.astype(_F64)  # a new array: contiguous and aligned
    arr = as_array(value, name)
    if arr.shape != (channels,):
        raise ValueError(f"{name}: expected shape ({channels},) (one value per channel), got {arr.shape}")
    return as_buffer(arr, _F64)


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


def _running_pair(running_mean, running_var, channels: int):
    rm, rv = _running(running_mean, "running_mean", channels), _running(running_var, "running_var", channels)
    if (rm is None) != (rv is None):
        raise ValueError("running_mean: give running_mean and running_var together")
    return rm, rv


def _momentum(momentum, allow_none: bool):
    if momentum is None and allow_none:
        return None
    m = real(momentum, "momentum")
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"momentum: expected a number in [0, 1]{' or None' if allow_none else ''}, got {m}")
    return m


def _update_running(rm, rv, factor: float, batch_mean, batch_var) -> None:
    """new = (1 - factor) old + factor batch, in place (PyTorch's convention), computed in float64."""
    rm[...] = (1 - factor) * rm.astype(np.float64) + factor * batch_mean
    rv[...] = (1 - factor) * rv.astype(np.float64) + factor * batch_var


def _advance_running(rm, rv, momentum, counter, batch_mean, batch_var) -> None:
    """One training step of the running statistics: the counter (when given) incremented, then the update with
    ``momentum``, or with 1 / counter (the cumulative average) for momentum None."""
    if counter is not None:
        counter += 1
    _update_running(rm, rv, momentum if momentum is not None else 1.0 / int(counter), batch_mean, batch_var)


def _check_counter(counter) -> None:
    """num_batches_tracked: a writable 0-d ndarray of a signed or unsigned integer of 32 bits or more (PyTorch's is
    int64), >= 0 and below its dtype's maximum, so that adding one can neither wrap nor leave a zero."""
    if not (isinstance(counter, np.ndarray) and counter.shape == () and counter.dtype.kind in "iu"):
        raise TypeError("num_batches_tracked: expected a 0-d integer ndarray, updated in place")
    if counter.dtype.itemsize < 4:
        raise TypeError(f"num_batches_tracked: expected an integer dtype of 32 bits or more (int64 as PyTorch), got "
                        f"{counter.dtype}: a narrow counter wraps")
    if not counter.flags.writeable:
        raise ValueError("num_batches_tracked: array is read-only")
    if not 0 <= int(counter) < np.iinfo(counter.dtype).max:
        raise ValueError(f"num_batches_tracked: expected a count >= 0 below {np.iinfo(counter.dtype).max}, got "
                         f"{int(counter)}")


def _eps(eps, compute: np.dtype) -> float:
    """eps > 0, large enough that 1 / sqrt(eps), the largest rstd, is finite in the computation's dtype (float32
    for float32 and half data): below that a constant channel would normalize to 0 * inf = NaN."""
    if type(eps) is float and _MIN_EPS.get(compute, 0.0) <= eps < math.inf and eps > 0:  # the common case
        return eps
    e = real(eps, "eps", finite=False)
    if not (math.isfinite(e) and e > 0):
        raise ValueError(f"eps: expected a finite number > 0, got {e}")
    if e < _MIN_EPS.get(compute, 0.0):
        raise ValueError(f"eps: at least {_MIN_EPS[compute]:.3g} for data computed in {compute} (1 / sqrt(eps) "
                         f"must be finite there), got {e}")
    return e


_MIN_EPS = {np.dtype(np.float32): float(np.finfo(np.float32).max) ** -2}


def _grad_dtype(result: np.dtype) -> np.dtype:
    """The dtype of parameter gradients (dgamma, dbeta): the result's, but float32 for float16 / bfloat16 data,
    whose sums over a batch would overflow float16 (as PyTorch's mixed precision keeps them in float32)."""
    return result if result.itemsize >= 4 else _F32



# ---- float64 statistics past the largest doubles ------------------------------------------------------------------
#
# A unit (channel, row, group) of float64 values spread beyond about 1e154 has a sum of squares past the largest
# double, so its statistics overflow and the normalized values come out NaN although every true value is finite.
# The kernels run at full speed on everything else; when a call's statistics come out non-finite, the units
# concerned are normalized again from x * 2**k (a power of two: exact), with k per unit such that its largest
# magnitude times sqrt(count) is about 2**500.  Their variance is then so far above eps that eps plays no part,
# as in the unscaled maths, and their mean and rstd scale back exactly.  Other units keep k = 0 and their bits.

def _overflowed(*stats) -> bool:
    """Whether a float64 call's statistics hold inf or NaN; cheap, and a false alarm only where finite statistics
    overflow their sum.  (An rstd of 0 is a variance that overflowed: callers check it apart.)"""
    return not math.isfinite(sum(float(np.sum(s)) for s in stats))


def _rescue_exponents(xv, reduce: tuple, bad) -> np.ndarray:
    """k per unit (``xv``'s axes other than ``reduce``, kept with size 1): as above where ``bad``, 0 elsewhere and
    where the unit holds inf or NaN (its NaN is genuine)."""
    with np.errstate(invalid="ignore"):
        a = np.abs(xv)
        finite = np.isfinite(a)
        top = np.max(a, axis=reduce, keepdims=True, where=finite, initial=0.0)
        whole = finite.all(axis=reduce, keepdims=True)
    count = math.prod(xv.shape[i] for i in reduce)
    k = 500 - np.frexp(top)[1] - (count.bit_length() + 1) // 2
    return np.where(bad.reshape(top.shape) & whole & (top > 0), k, 0)


_TINY_RSTD = 2.0 ** -500  # rstd below it: a spread past about 1e150, where the backward's constant of (x - mean),
#                           of the size of rstd**2, would leave the range of doubles


def _backward_exponents(rstd) -> Optional[np.ndarray]:
    """For a float64 backward: None when every rstd is at least _TINY_RSTD, else k per unit, 2**k the power of two
    that brings the unit's spread (1 / rstd) near 1 where rstd is below it, and 0 elsewhere.  The backward then
    runs on x * 2**k, mean * 2**k and rstd * 2**-k, and dx comes back as 2**k times its result (dx scales as
    1 / x; the parameter gradients do not scale)."""
    if not rstd.size or not rstd.min() < _TINY_RSTD:  # NaN statistics (no values) stay as they are
        return None
    return np.where((rstd > 0) & (rstd < _TINY_RSTD), np.frexp(rstd)[1], 0)


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


# ---- layer and RMS normalization ---------------------------------------------------------------------------------

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


def _required(value, name: str, forward: str) -> None:
    """A backward's saved statistic must be given: a ValueError that says where it comes from otherwise."""
    if value is None:
        raise ValueError(f"{name}: required; pass the forward's statistics ({forward}(..., return_stats=True) "
                         f"returns them)")


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
    dx, dgamma, _ = _normalize_rows_backward(dy, x, None, rstd, gamma, axis, False, dx_only, out, num_threads,
                                             None, post_op(activation, negative_slope))
    return dx, dgamma


# ---- group and instance normalization -----------------------------------------------------------------------------
#
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
