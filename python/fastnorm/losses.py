"""Softmax, log-softmax and cross-entropy, forward and backward: the loss end of a training step.

Stable for any finite input: every row is shifted by its maximum before ``exp`` (so nothing overflows, for ``|x|`` up
to the dtype's largest value), the sums are taken in float64, and log-softmax is ``x - max - log(sum)``, never
``log(softmax)`` (which loses everything below the smallest float).  -inf entries (masked logits) get exactly 0
probability; a row of only -inf gives NaN, as PyTorch's does (there is no distribution to normalize); NaN in a row
gives NaN for the whole row.  Any axis: the class axis may sit in the middle (NCHW score maps, ``axis=1``).

The backwards take the forward's output, so the input need not be kept:
softmax: dx = y (dy - sum(dy y)); log-softmax: dx = dy - exp(y) sum(dy).
"""
from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike

from fastnorm import _C
from fastnorm._array import (as_array, as_buffer, check_out, check_same_shape, common_dtype, compute_dtype, deliver,
                             kernel_output, normalize_axis, result_dtype)
from fastnorm._docs import documented
from fastnorm._memory import empty
from fastnorm._threads import resolve
from fastnorm._validate import real

__all__ = ["softmax", "softmax_backward", "log_softmax", "log_softmax_backward", "cross_entropy",
           "cross_entropy_backward", "nll_loss", "nll_loss_backward"]


# The parameters the losses share, described once (fastnorm._docs).
_PARAMS = {
    "x": ("array_like", "Logits (float16 / bfloat16 computed in float32, integers as float64)."),
    "logits": ("array_like", "Unnormalized log-probabilities, the classes along ``axis``."),
    "log_probs": ("array_like", "Log-probabilities, the classes along ``axis``."),
    "y": ("array_like", "The forward's output."),
    "dy": ("array_like", "The gradient of the loss with respect to y, y's shape."),
    "axis": ("int, default -1", "The class axis."),
    "target": ("array_like", "Class indices (integers, the logits' shape without the class axis) or, for "
                             "cross-entropy, probabilities (floating, the logits' shape, each row a distribution)."),
    "reduction": ("{'mean', 'sum', 'none'}, default 'mean'",
                  "'mean' divides the summed loss by the summed weights of the counted rows (NaN when none counts), "
                  "'sum' adds, 'none' returns one loss per row."),
    "label_smoothing": ("float in [0, 1], default 0", "The share s of the target spread uniformly over the classes."),
    "ignore_index": ("int, default -100", "Rows whose class index is this count nothing."),
    "weight": ("array_like of shape (C,), optional", "A weight per class (default 1)."),
    "grad": ("float or array_like, default 1", "The loss's own gradient: a scalar, or one per row for "
                                                 "``reduction='none'``."),
    "lse": ("array_like, optional", "Each row's log-sum-exp from ``cross_entropy(..., return_lse=True)``, which "
                                    "saves its recomputation."),
    "out": ("numpy.ndarray, optional", "Where to write the result (NumPy's out= rules; it may be an input)."),
    "num_threads": ("int, optional", "Threads to use (default: fastnorm's setting); the results do not depend on "
                                     "it."),
}
_LOSS = ("float or numpy.ndarray", "The loss (float64): a scalar, or one per row for ``reduction='none'``.")


def _layout(shape: tuple, axis) -> Tuple[int, int, int]:
    """(A, C, B) around the class axis ``axis`` (a 0-d array is one class)."""
    if not shape:
        return 1, 1, 1
    ax = normalize_axis(axis, len(shape))
    return math.prod(shape[:ax]), shape[ax], math.prod(shape[ax + 1:])


def _softmax(x, axis, log: bool, out, num_threads):
    x = as_array(x, "x")
    compute, result = compute_dtype(x.dtype, "x"), result_dtype(x.dtype)
    A, C, B = _layout(x.shape, axis)
    if out is not None:
        check_out(out, x.shape, result)
    xb = as_buffer(x, compute)
    buf = kernel_output(out, x.shape, compute, (xb,))
    _C.softmax_forward(xb, buf, A, C, B, log, resolve(num_threads))
    return deliver(buf, out, result)


def _softmax_backward(dy, y, axis, log: bool, out, num_threads):
    dy, y = as_array(dy, "dy"), as_array(y, "y")
    check_same_shape(y, dy, "y", "dy")
    common = common_dtype(dy.dtype, y.dtype)
    compute, result = compute_dtype(common, "y"), result_dtype(common)
    A, C, B = _layout(y.shape, axis)
    if out is not None:
        check_out(out, y.shape, result)
    dyb, yb = as_buffer(dy, compute), as_buffer(y, compute)
    buf = kernel_output(out, y.shape, compute, (dyb, yb))
    _C.softmax_backward(dyb, yb, buf, A, C, B, log, resolve(num_threads))
    return deliver(buf, out, result)


@documented(_PARAMS, returns=("numpy.ndarray", "y, x's shape and dtype."))
def softmax(x: ArrayLike, axis: int = -1, *, out: Optional[np.ndarray] = None,
            num_threads: Optional[int] = None) -> np.ndarray:
    """Softmax along ``axis``: y = exp(x - max) / sum(exp(x - max)), each slice along the axis summing to 1.

    Examples
    --------
    >>> fastnorm.softmax(np.array([1.0, 2.0, -np.inf]))
    array([0.26894142, 0.73105858, 0.        ])
    """
    return _softmax(x, axis, False, out, num_threads)


@documented(_PARAMS, returns=("numpy.ndarray", "y, x's shape and dtype."))
def log_softmax(x: ArrayLike, axis: int = -1, *, out: Optional[np.ndarray] = None,
                num_threads: Optional[int] = None) -> np.ndarray:
    """Log-softmax along ``axis``: y = x - max - log(sum(exp(x - max))), without forming softmax (so
    probabilities below the smallest float keep their logarithm)."""
    return _softmax(x, axis, True, out, num_threads)


@documented(_PARAMS, returns=("numpy.ndarray", "dx."))
def softmax_backward(dy: ArrayLike, y: ArrayLike, axis: int = -1, *, out: Optional[np.ndarray] = None,
                     num_threads: Optional[int] = None) -> np.ndarray:
    """Gradient of :func:`softmax` from its output y: dx = y (dy - sum(dy y)), the sum along ``axis``."""
    return _softmax_backward(dy, y, axis, False, out, num_threads)


@documented(_PARAMS, returns=("numpy.ndarray", "dx."))
def log_softmax_backward(dy: ArrayLike, y: ArrayLike, axis: int = -1, *, out: Optional[np.ndarray] = None,
                         num_threads: Optional[int] = None) -> np.ndarray:
    """Gradient of :func:`log_softmax` from its output y: dx = dy - exp(y) sum(dy), the sum along ``axis``."""
    return _softmax_backward(dy, y, axis, True, out, num_threads)


# ---- cross-entropy -------------------------------------------------------------------------------------------------

_REDUCTIONS = ("mean", "sum", "none")


def _class_rows(logits, axis):
    """The logits as C-contiguous rows (N, C) of the compute dtype, the class axis moved last (a copy only when it
    is not last already), with the shape of the other axes."""
    x = as_array(logits, "logits")
    if x.ndim < 1:
        raise ValueError("logits: expected at least one axis (the classes)")
    ax = normalize_axis(axis, x.ndim)
    rows = np.moveaxis(x, ax, -1)
    lead = rows.shape[:-1]
    compute = compute_dtype(x.dtype, "logits")
    return as_buffer(rows, compute).reshape(-1, x.shape[ax]), lead, ax, compute, result_dtype(x.dtype)


def _class_targets(target, lead, C, ignore_index):
    t = as_array(target, "target")
    if t.dtype.kind not in "iu":
        raise TypeError(f"target: expected integer class indices, got dtype {t.dtype} (probability targets: pass "
                        f"an array of the logits' shape)")
    if t.shape != lead:
        raise ValueError(f"target: expected shape {lead} (one class index per row of logits), got {t.shape}")
    t = t.astype(np.int64, copy=False).reshape(-1)
    if t.size and (t.min() < 0 or t.max() >= C):  # ignored rows, or an index out of range (two passes less)
        bad = (t != ignore_index) & ((t < 0) | (t >= C))
        if bad.any():
            raise ValueError(f"target: class index {int(t[np.argmax(bad)])} out of range [0, {C})")
    return np.ascontiguousarray(t)


def _probabilities(target, shape, ax):
    """A probability target of the logits' ``shape`` as float64 rows (N, C), the class axis last."""
    if target.shape != shape:
        raise ValueError(f"target: probability targets need the logits' shape {shape}, got {target.shape}")
    return as_buffer(np.moveaxis(target, ax, -1), np.dtype(np.float64)).reshape(-1, shape[ax])


def _options(reduction, label_smoothing, weight, C):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction: expected one of {_REDUCTIONS}, got {reduction!r}")
    eps = real(label_smoothing, "label_smoothing")
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing: expected a number in [0, 1], got {eps}")
    if weight is None:
        return eps, None
    w = as_array(weight, "weight")
    if w.shape != (C,):
        raise ValueError(f"weight: expected shape ({C},) (one weight per class), got {w.shape}")
    return eps, as_buffer(w, np.dtype(np.float64))


def _reduce(per_row, weights, reduction, lead):
    if reduction == "none":
        return per_row.reshape(lead)
    total = math.fsum(per_row) if per_row.size < 4096 else float(np.sum(per_row))
    if reduction == "sum":
        return np.float64(total)
    denom = float(np.sum(weights))
    return np.float64(total / denom) if denom else np.float64(np.nan)  # all ignored: NaN, as PyTorch


def _row_grads(grad, reduction, lead, row_weights, N):
    """Each row's share of the loss's gradient ``grad``: itself per row for "none", divided by the counted weight
    for "mean" (NaN when nothing counts, as the loss)."""
    g = np.asarray(grad, dtype=np.float64)
    if reduction == "none":
        return np.ascontiguousarray(np.broadcast_to(g, lead).reshape(-1), dtype=np.float64)
    denom = float(np.sum(row_weights)) if reduction == "mean" else 1.0
    return np.full(N, float(g) / denom if denom else np.nan)


def _row_weights(t, w, ignore_index):
    counted = t != ignore_index
    if w is None:
        return counted.astype(np.float64)
    return np.where(counted, w[np.where(counted, t, 0)], 0.0)


@documented(_PARAMS, returns=("float, numpy.ndarray or tuple",
                              "The loss; (loss, lse) with ``return_lse``; (loss, dlogits) with ``return_grad``."),
            return_lse=("bool, default False", "Also return each row's log-sum-exp (float64), for "
                                               ":func:`cross_entropy_backward`."),
            return_grad=("bool, default False", "Return (loss, dlogits) instead: the gradient of this loss from the "
                                                "same visit of each row, in the logits' dtype and shape."))
def cross_entropy(logits: ArrayLike, target: ArrayLike, axis: int = -1, *, reduction: str = "mean",
                  label_smoothing: float = 0.0, ignore_index: int = -100, weight: Optional[ArrayLike] = None,
                  return_lse: bool = False, return_grad: bool = False, num_threads: Optional[int] = None) -> Any:
    """Cross-entropy of softmax(logits) along ``axis`` against class indices or probabilities, in one pass over
    the logits (log-softmax fused in, no probabilities written).

    Class indices (an integer ``target`` of the logits' shape without the class axis)::

        loss_i = -(1 - s) w[t_i] logp_i[t_i] - (s / C) sum_c w[c] logp_i[c],   logp = log_softmax(logits)

    with s = ``label_smoothing`` and w = ``weight`` (default 1); rows whose target is ``ignore_index`` count
    nothing.  ``reduction="mean"`` divides by the sum of w[t_i] over the counted rows (PyTorch's convention: NaN
    when every row is ignored), ``"sum"`` adds, ``"none"`` returns one loss per row.  Probability targets (a
    floating ``target`` of the logits' shape, each row a distribution): loss_i = -sum_c target[c] logp_i[c].

    Returns the loss (float64), and with ``return_lse`` also the per-row log-sum-exp that
    :func:`cross_entropy_backward` takes (so that it need not recompute it).  With ``return_grad``, returns
    (loss, dlogits) instead: the gradient of this loss (its own gradient 1, or 1 per row for ``"none"``) from the
    same visit of each row, what a training step needs, in the logits' dtype and shape.

    References
    ----------
    Szegedy et al., Rethinking the Inception architecture for computer vision (label smoothing), CVPR 2016.
    """
    x = as_array(logits, "logits")
    rows, lead, ax, compute, _ = _class_rows(x, axis)
    N, C = rows.shape
    eps, w = _options(reduction, label_smoothing, weight, C)
    t_arr = as_array(target, "target")
    if t_arr.dtype.kind == "f":
        if w is not None or eps:
            raise ValueError("target: probability targets take neither weight nor label_smoothing")
        p = _probabilities(t_arr, x.shape, ax)
        logp = np.empty_like(rows)
        _C.softmax_forward(rows.reshape(-1), logp.reshape(-1), N, C, 1, True, resolve(num_threads))
        with np.errstate(invalid="ignore"):  # 0 * -inf: a masked class the target gives no mass
            per_row = -np.sum(np.where(p == 0, 0.0, p * logp), axis=1)
        loss = _reduce(per_row, np.ones(N), reduction, lead)
        if return_grad:
            return loss, cross_entropy_backward(x, t_arr, axis, reduction=reduction, num_threads=num_threads)
        return (loss, None) if return_lse else loss
    t = _class_targets(t_arr, lead, C, ignore_index)
    if return_grad:
        row_w = _row_weights(t, w, ignore_index)
        g = _row_grads(1.0, reduction, lead, row_w, N)
        per_row, d = np.empty(N), empty((N, C), compute)
        _C.cross_entropy_with_grad(rows.reshape(-1), t, g, d.reshape(-1), N, C, eps, w, ignore_index, per_row,
                                   resolve(num_threads))
        return _reduce(per_row, row_w, reduction, lead), _deliver_rows(d, ax, x.shape, None, result_dtype(x.dtype))
    per_row, lse = np.empty(N), np.empty(N)
    _C.cross_entropy_forward(rows.reshape(-1), t, N, C, eps, w, ignore_index, per_row, lse, resolve(num_threads))
    loss = _reduce(per_row, _row_weights(t, w, ignore_index), reduction, lead)
    return (loss, lse) if return_lse else loss


@documented(_PARAMS, returns=("numpy.ndarray", "dlogits, in the logits' dtype and shape."))
def cross_entropy_backward(logits: ArrayLike, target: ArrayLike, axis: int = -1, *, grad: Any = 1.0,
                           reduction: str = "mean", label_smoothing: float = 0.0, ignore_index: int = -100,
                           weight: Optional[ArrayLike] = None, lse: Optional[ArrayLike] = None,
                           out: Optional[np.ndarray] = None, num_threads: Optional[int] = None) -> np.ndarray:
    """d loss / d logits of :func:`cross_entropy` (same arguments), times ``grad`` (the loss's own gradient: a
    scalar, or one per row for ``reduction="none"``), in the logits' dtype and shape.

    For class indices, one pass over the logits: dlogits = g ((1 - s) w[t] + s W / C) softmax - g (1 - s) w[t]
    onehot(t) - g (s / C) w with W = sum(w), softmax = exp(logits - lse) formed in registers only; ``lse`` from
    ``cross_entropy(..., return_lse=True)`` saves its recomputation.  Probability targets: g (softmax sum(p) - p).
    """
    x = as_array(logits, "logits")
    rows, lead, ax, compute, result = _class_rows(x, axis)
    N, C = rows.shape
    eps, w = _options(reduction, label_smoothing, weight, C)
    if out is not None:
        check_out(out, x.shape, result)
    t_arr = as_array(target, "target")
    g_arr = np.asarray(grad, dtype=np.float64)
    if reduction == "none":
        g_rows = np.broadcast_to(g_arr, lead).reshape(-1) if g_arr.shape in ((), lead) else None
        if g_rows is None:
            raise ValueError(f"grad: expected a scalar or shape {lead} for reduction='none', got {g_arr.shape}")
    elif g_arr.shape != ():
        raise ValueError(f"grad: expected a scalar for reduction={reduction!r}, got shape {g_arr.shape}")
    if t_arr.dtype.kind == "f":
        p = _probabilities(t_arr, x.shape, ax)
        sm = np.empty_like(rows)
        _C.softmax_forward(rows.reshape(-1), sm.reshape(-1), N, C, 1, False, resolve(num_threads))
        scale = g_rows if reduction == "none" else np.full(N, float(g_arr) / (N if reduction == "mean" else 1))
        d = (sm * p.sum(axis=1, keepdims=True) - p) * scale[:, None]
        return _deliver_rows(d.astype(compute, copy=False), ax, x.shape, out, result)
    t = _class_targets(t_arr, lead, C, ignore_index)
    g = _row_grads(g_arr, reduction, lead, _row_weights(t, w, ignore_index), N)
    if lse is None:
        lse_rows = np.empty(N)
        _C.cross_entropy_forward(rows.reshape(-1), t, N, C, eps, w, ignore_index, np.empty(N), lse_rows,
                                 resolve(num_threads))
    else:
        lse_rows = as_buffer(as_array(lse, "lse"), np.dtype(np.float64)).reshape(-1)
        if lse_rows.shape != (N,):
            raise ValueError(f"lse: expected {N} values (one per row), got {lse_rows.size}")
    if ax == x.ndim - 1:  # rows as they are: straight into out where it can be written
        buf = kernel_output(out, x.shape, compute, (rows,), (w, lse_rows, g))
        _C.cross_entropy_backward(rows.reshape(-1), t, lse_rows, g, buf.reshape(-1), N, C, eps, w, ignore_index,
                                  resolve(num_threads))
        return deliver(buf, out, result)
    buf = np.empty((N, C), compute)
    _C.cross_entropy_backward(rows.reshape(-1), t, lse_rows, g, buf.reshape(-1), N, C, eps, w, ignore_index,
                              resolve(num_threads))
    return _deliver_rows(buf, ax, x.shape, out, result)


def _deliver_rows(rows, ax, shape, out, result):
    """(N, C) rows back to the logits' layout (the class axis where it was), into ``out`` when given."""
    moved_shape = tuple(n for i, n in enumerate(shape) if i != ax) + (shape[ax],)
    full = np.moveaxis(rows.reshape(moved_shape), -1, ax)
    if out is not None:
        np.copyto(out, full, casting="same_kind")
        return out
    return np.ascontiguousarray(full).astype(result, copy=False)


def _nll_inputs(log_probs, target, axis, reduction, ignore_index, weight):
    """What both NLL functions need: the rows (N, C) with their layout, the class indices and each row's weight."""
    lp = as_array(log_probs, "log_probs")
    rows, lead, ax, compute, result = _class_rows(lp, axis)
    _, w = _options(reduction, 0.0, weight, rows.shape[1])
    t = _class_targets(target, lead, rows.shape[1], ignore_index)
    return lp, rows, lead, ax, compute, result, t, _row_weights(t, w, ignore_index)


@documented(_PARAMS, returns=_LOSS)
def nll_loss(log_probs: ArrayLike, target: ArrayLike, axis: int = -1, *, reduction: str = "mean",
             ignore_index: int = -100, weight: Optional[ArrayLike] = None) -> Any:
    """Negative log-likelihood of class indices given log-probabilities (for example :func:`log_softmax`'s):
    loss_i = -w[t_i] log_probs_i[t_i], reduced as :func:`cross_entropy`."""
    _, rows, lead, _, _, _, t, rw = _nll_inputs(log_probs, target, axis, reduction, ignore_index, weight)
    picked = rows[np.arange(rows.shape[0]), np.where(t == ignore_index, 0, t)].astype(np.float64)
    per_row = np.where(rw > 0, -rw * picked, 0.0)
    return _reduce(per_row, rw, reduction, lead)


@documented(_PARAMS, returns=("numpy.ndarray", "d loss / d log_probs."))
def nll_loss_backward(log_probs: ArrayLike, target: ArrayLike, axis: int = -1, *, grad: Any = 1.0,
                      reduction: str = "mean", ignore_index: int = -100,
                      weight: Optional[ArrayLike] = None) -> np.ndarray:
    """d loss / d log_probs of :func:`nll_loss`: -g w[t] at each row's target, 0 elsewhere."""
    lp, rows, lead, ax, compute, result, t, rw = _nll_inputs(log_probs, target, axis, reduction, ignore_index,
                                                             weight)
    N, C = rows.shape
    g = _row_grads(grad, reduction, lead, rw, N)
    d = np.zeros((N, C), compute)
    d[np.arange(N), np.where(t == ignore_index, 0, t)] = np.where(rw > 0, -g * rw, 0.0)
    return _deliver_rows(d, ax, lp.shape, None, result)
