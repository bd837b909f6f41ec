"""What the normalization families share: parameter checks (channels, running statistics, momentum, eps), the
rescue of float64 statistics past the largest doubles, and the parameters' documentation (fastnorm._docs)."""
from __future__ import annotations

import math

import numpy as np
from typing import Optional, Tuple

from fastnorm._array import as_array, as_buffer, normalize_axis
from fastnorm._validate import real


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

def _required(value, name: str, forward: str) -> None:
    """A backward's saved statistic must be given: a ValueError that says where it comes from otherwise."""
    if value is None:
        raise ValueError(f"{name}: required; pass the forward's statistics ({forward}(..., return_stats=True) "
                         f"returns them)")
