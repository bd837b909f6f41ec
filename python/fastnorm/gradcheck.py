"""Gradient checking: compare an analytic gradient with centered finite differences, as the lecture teaches.

    >>> x = np.random.default_rng(0).standard_normal((4, 5))
    >>> fastnorm.gradcheck(fastnorm.tanh, [x], lambda dy, x: [fastnorm.tanh_backward(dy, x)])
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Sequence

import numpy as np
from numpy.typing import ArrayLike

from fastnorm._docs import documented

__all__ = ["numerical_gradient", "gradcheck", "GradcheckReport", "GradcheckError"]


def _as_inputs(inputs) -> List[Any]:
    """The inputs as a list of float64 arrays: an ndarray (or a number) is one input, not a sequence of rows."""
    if isinstance(inputs, (np.ndarray, np.generic, int, float)) or not isinstance(inputs, (list, tuple)):
        inputs = [inputs]
    return [np.array(a, dtype=np.float64) for a in inputs]



# The parameters described once (fastnorm._docs).
_PARAMS = {
    "f": ("callable", "The function, of NumPy arrays, returning an array."),
    "inputs": ("list, tuple or array_like", "f's arguments; one array for a function of one argument."),
    "dy": ("array_like, optional", "The weights of f's output in the checked sum(f * dy): ones for "
                                   ":func:`numerical_gradient`, a fixed random array (seed 0) for :func:`gradcheck`, "
                                   "which exercises more than the all-ones gradient."),
    "eps": ("float, default 1e-6", "The step h of the centered differences."),
}

@documented(_PARAMS, returns=("numpy.ndarray", "The gradient, float64, of inputs[wrt]'s shape."),
            wrt=("int, default 0", "Which input the gradient is taken with respect to."))
def numerical_gradient(f: Callable[..., Any], inputs: Any, dy: Optional[ArrayLike] = None, *, wrt: int = 0,
                       eps: float = 1e-6) -> np.ndarray:
    """``d sum(f(*inputs) * dy) / d inputs[wrt]`` by centered differences ``(f(x + h) - f(x - h)) / 2h``, element by
    element, in float64.  ``dy`` defaults to ones (the gradient of sum(f)).  ``inputs`` is a list or tuple of
    f's arguments, or one array for a function of one argument.  The inputs are not modified."""
    xs = _as_inputs(inputs)
    if not 0 <= wrt < len(xs):
        raise ValueError(f"wrt: {wrt} is not the index of one of the {len(xs)} inputs")
    y = np.asarray(f(*xs), dtype=np.float64)
    dy = np.ones_like(y) if dy is None else np.asarray(dy, dtype=np.float64)
    if dy.shape != y.shape:
        raise ValueError(f"dy: shape {dy.shape} does not match the output's {y.shape}")
    x = xs[wrt]
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        plus = float(np.sum(np.asarray(f(*xs), dtype=np.float64) * dy))
        flat[i] = old - eps
        minus = float(np.sum(np.asarray(f(*xs), dtype=np.float64) * dy))
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * eps)
    return grad


@dataclass
class GradcheckReport:
    """Per input: the largest relative error ``|a - n| / max(|a|, |n|)`` and where it is."""
    max_rel_error: List[Optional[float]] = field(default_factory=list)
    worst_index: List[Any] = field(default_factory=list)
    analytic: List[Optional[float]] = field(default_factory=list)
    numerical: List[Optional[float]] = field(default_factory=list)
    tol: float = 0.0

    @property
    def ok(self) -> bool:
        return all(e <= self.tol for e in self.max_rel_error if e is not None)

    def __str__(self) -> str:
        lines = [f"gradcheck {'passed' if self.ok else 'FAILED'} (tolerance {self.tol:g})"]
        for k, err in enumerate(self.max_rel_error):
            if err is None:
                lines.append(f"  input {k}: not checked")
                continue
            lines.append(f"  input {k}: max relative error {err:.3g} at index {self.worst_index[k]} "
                         f"(analytic {self.analytic[k]:.10g}, numerical {self.numerical[k]:.10g})")
        return "\n".join(lines)


class GradcheckError(AssertionError):
    """An analytic gradient disagrees with the numerical one; the message is the report."""


@documented(_PARAMS, returns=("GradcheckReport", "The worst error and where, per input."),
            grads=("sequence, array or callable", "The analytic gradients of ``sum(f(*inputs) * dy)``, one per input "
                                                  "(None to skip an input), or a callable ``grads(dy, *inputs)`` "
                                                  "returning them (a backward function); with one array as "
                                                  "``inputs``, one array (or a callable returning it) will do."),
            tol=("float, default 1e-6", "The largest relative error accepted."),
            floor=("float, default 1e-3", "Entries below floor times the gradient's scale are judged on that "
                                          "scale."),
            raise_on_failure=("bool, default True", "Raise GradcheckError when the worst error exceeds ``tol``."))
def gradcheck(f: Callable[..., Any], inputs: Any, grads: Any, dy: Optional[ArrayLike] = None, *, eps: float = 1e-6,
              tol: float = 1e-6, floor: float = 1e-3, raise_on_failure: bool = True) -> GradcheckReport:
    """Checks analytic gradients of ``f(*inputs)`` against centered differences, in float64.

    The error per element is the lecture's
    relative error ``|a - n| / max(|a|, |n|, floor * m)``, m the input's largest ``|a|`` or ``|n|``: entries far
    below the gradient's scale are judged on that scale, since centered differences carry an absolute error of
    about ``1e-16 |f| / eps`` (two zeros agree).
    Returns a :class:`GradcheckReport`; raises :class:`GradcheckError` with it when the worst error exceeds
    ``tol`` and ``raise_on_failure``.  Relative errors around 1e-7 and below are typical of correct float64
    gradients of smooth functions; at kinks (relu at 0) expect larger ones.
    """
    single = not isinstance(inputs, (list, tuple))
    xs = _as_inputs(inputs)
    y = np.asarray(f(*xs), dtype=np.float64)
    if dy is None:
        dy = np.random.default_rng(0).standard_normal(y.shape)
    dy = np.asarray(dy, dtype=np.float64)
    analytic = grads(dy, *xs) if callable(grads) else grads
    if single and (analytic is None or isinstance(analytic, np.ndarray)):
        analytic = [analytic]  # one input, one gradient
    if len(analytic) != len(xs):
        raise ValueError(f"grads: expected {len(xs)} gradients (None to skip an input), got {len(analytic)}")
    report = GradcheckReport(tol=tol)
    for k, g in enumerate(analytic):
        if g is None:
            for lst in (report.max_rel_error, report.worst_index, report.analytic, report.numerical):
                lst.append(None)
            continue
        g = np.asarray(g, dtype=np.float64)
        if g.shape != xs[k].shape:
            raise ValueError(f"grads[{k}]: shape {g.shape} does not match input {k}'s {xs[k].shape}")
        n = numerical_gradient(f, xs, dy, wrt=k, eps=eps)
        scale = np.maximum(np.abs(g), np.abs(n))
        rel = np.abs(g - n) / np.maximum(scale, max(floor * (scale.max() if scale.size else 0.0), 1e-300))
        i = int(np.argmax(rel)) if rel.size else 0
        report.max_rel_error.append(float(rel.reshape(-1)[i]) if rel.size else 0.0)
        report.worst_index.append(np.unravel_index(i, rel.shape) if rel.size else ())
        report.analytic.append(float(g.reshape(-1)[i]) if rel.size else 0.0)
        report.numerical.append(float(n.reshape(-1)[i]) if rel.size else 0.0)
    if raise_on_failure and not report.ok:
        raise GradcheckError(str(report))
    return report
