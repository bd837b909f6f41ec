"""Scalar arguments: one place that turns them into Python numbers or says, naming the argument, why it cannot.

Every helper raises TypeError for a value of the wrong kind (a string, None, a float where an int is meant) and
ValueError for a value of the right kind out of range, never OverflowError, KeyError or an unnamed conversion
error.  NumPy scalars and 0-d arrays are taken like the Python numbers they hold.
"""
from __future__ import annotations

import math
import numbers
import operator

import numpy as np

from typing import Any, Tuple


def _kind(value) -> str:
    return type(value).__name__


def real(value, name: str, *, finite: bool = True, minimum: float | None = None, positive: bool = False,
         maximum: float | None = None) -> float:
    """``value`` as a float: a real number (bool, int, float, NumPy real scalar or 0-d array), finite unless
    ``finite=False``, > 0 with ``positive``, within [minimum, maximum] when given."""
    if type(value) is float and math.isfinite(value):  # the common case, without the general checks' 0.4 us
        if (not positive or value > 0) and (minimum is None or value >= minimum) and \
                (maximum is None or value <= maximum):
            return value
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (str, bytes)) or not isinstance(value, (numbers.Real, np.number)) \
            or isinstance(value, np.complexfloating):
        raise TypeError(f"{name}: expected a real number, got {_kind(value)}")
    v = float(value)
    if finite and not math.isfinite(v):
        raise ValueError(f"{name}: expected a finite number, got {v}")
    if math.isnan(v):
        raise ValueError(f"{name}: expected a number, got nan")
    if positive and not v > 0:
        raise ValueError(f"{name}: expected a number > 0, got {v}")
    if minimum is not None and v < minimum:
        raise ValueError(f"{name}: expected a number >= {minimum}, got {v}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name}: expected a number <= {maximum}, got {v}")
    return v


def integer(value, name: str, minimum: int | None = None, what: str | None = None) -> int:
    """``value`` as an int (anything with ``__index__``: int, NumPy integer, 0-d integer array, not bool-like
    floats), at least ``minimum`` when given; ``what`` names the expectation in the error."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name}: expected an int, got {_kind(value)}") from None
    if minimum is not None and v < minimum:
        raise ValueError(f"{name}: expected {what or f'an int >= {minimum}'}, got {v}")
    return v


def shape(value, name: str = "shape") -> Tuple[Any, ...]:
    """``value`` (an int or a sequence of ints, each >= 0) as a tuple of ints."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name}: expected an int or a tuple of ints, got {_kind(value)}")
    if hasattr(value, "__index__"):
        return (integer(value, name, 0, "a non-negative size"),)
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(f"{name}: expected an int or a tuple of ints, got {_kind(value)}") from None
    return tuple(integer(s, name, 0, "non-negative sizes") for s in items)


# The activations a normalization can apply in its own pass (oneDNN's post-ops), as the kernels name them
# (post_op.h's table; "none" is the kernels' name for no activation).
POST_OPS: Tuple[str, ...] = ("relu", "leaky_relu", "silu", "gelu")
NO_POST_OP: Tuple[str, float] = ("none", 0.01)


def post_op(activation, negative_slope) -> Tuple[str, float]:
    """(name, slope), as the normalization kernels take a fused activation, for ``activation`` (None or one of
    POST_OPS) and leaky_relu's ``negative_slope``; ValueError naming ``activation`` otherwise."""
    if activation is None:
        return NO_POST_OP
    if not isinstance(activation, str) or activation not in POST_OPS:
        raise ValueError(f"activation: unknown {activation!r}; valid: None, " + ", ".join(repr(k) for k in POST_OPS))
    return activation, real(negative_slope, "negative_slope")
