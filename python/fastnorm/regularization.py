"""Dropout (Srivastava et al. 2014), alpha dropout for SELU networks (Klambauer et al. 2017) and channel dropout,
forward and backward, on fastnorm's counter-based generator.

The mask is a pure function of the generator's key and counter and of each value's index, so a call gives the
same bits for any thread count and ISA level, and the backward regenerates the mask from the forward's ``state``
(a small dict) instead of storing it: no mask memory.  A value is kept when its 16 random bits reach p 2**16 (p
rounded to a multiple of 2**-16, 1.5e-5), and kept values are scaled by 1 / (1 - p) ("inverted dropout"), so
nothing changes at test time.  NaN stays NaN, dropped or
not, as in PyTorch's x * mask.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike

from fastnorm import _C
from fastnorm._array import (as_array, as_buffer, check_out, compute_dtype, deliver, kernel_output, normalize_axis,
                             result_dtype)
from fastnorm._docs import documented
from fastnorm._memory import fresh
from fastnorm._threads import resolve
from fastnorm._validate import real
from fastnorm.random import Generator, _MASK64

__all__ = ["dropout", "dropout_backward", "alpha_dropout", "alpha_dropout_backward", "channel_dropout",
           "channel_dropout_backward"]

DropoutState = Dict[str, Any]

# SELU's negative saturation value, -lambda alpha (Klambauer et al. 2017)
_SELU_SATURATION = -1.0507009873554804934193349852946 * 1.6732632423543772848170429916717



# The parameters the dropout functions share, described once (fastnorm._docs).
_PARAMS = {
    "x": ("array_like", "The activations."),
    "dy": ("array_like", "The gradient of the loss with respect to the forward's output."),
    "p": ("float in [0, 1], default 0.5", "The probability of dropping a value (or a channel)."),
    "generator": ("fastnorm.random.Generator, optional", "Where the mask's randomness comes from (its counter "
                                                          "moves on); or ``seed`` for a fresh generator (neither: "
                                                          "fresh entropy)."),
    "seed": ("int, optional", "A seed for a fresh generator, when ``generator`` is not given."),
    "training": ("bool, default True", "False: the identity (x itself), as at test time."),
    "return_state": ("bool, default False", "Also return the state the backward regenerates the mask from (None "
                                            "when nothing was dropped)."),
    "state": ("DropoutState or None", "The forward's state (``return_state=True``); None: nothing was dropped."),
    "axis": ("int, default 1", "The channel axis: 1 for NCHW-style data, -1 for channels-last; the batch axis is "
                               "0."),
    "out": ("numpy.ndarray, optional", "Where to write the result (NumPy's out= rules; it may be an input)."),
    "num_threads": ("int, optional", "Threads to use; the mask does not depend on them."),
}
_FORWARD = ("numpy.ndarray or tuple", "y, or (y, state) with ``return_state``.")
_BACKWARD = ("numpy.ndarray", "dx.")

def _probability(p) -> float:
    p = real(p, "p")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p: expected a drop probability in [0, 1], got {p}")
    return p


def _threshold(p: float) -> int:
    """The drop threshold on the mask's 16 random bits per value: p rounded to a multiple of 2**-16."""
    return min(1 << 16, int(round(p * (1 << 16))))


def _state_of(generator, seed) -> Tuple[Generator, DropoutState]:
    if generator is not None and seed is not None:
        raise TypeError("seed: give a generator or a seed, not both")
    if generator is None:
        generator = Generator(seed)
    elif not isinstance(generator, Generator):
        raise TypeError(f"generator: expected a fastnorm.random.Generator, got {type(generator).__name__}")
    return generator, {"key": generator._key, "counter": generator._counter}


def _check_state(state) -> Tuple[int, int]:
    try:
        if not isinstance(state, dict):
            raise TypeError
        key, counter = int(state["key"]), int(state["counter"])
    except (TypeError, KeyError, ValueError):
        raise TypeError("state: expected the dict the forward returned (return_state=True): key and counter") \
            from None
    if not (0 <= key <= _MASK64 and 0 <= counter <= _MASK64):
        raise ValueError("state: key and counter must be in [0, 2**64)")
    return key, counter


def _identity(x, out, name="x"):
    """x unchanged (x itself where it already has the result's dtype), or copied into ``out``."""
    x = as_array(x, name)
    result = result_dtype(x.dtype)
    if out is not None:
        check_out(out, x.shape, result)
        np.copyto(out, x, casting="unsafe")
        return out
    return x if x.dtype == result else x.astype(result)


def _masked(x, key, counter, threshold, scale, shift, drop_shift, out, num_threads, name="x"):
    """y = x scale + shift where kept, x * 0 + drop_shift where dropped; returns (y, the counter after)."""
    x = as_array(x, name)
    compute, result = compute_dtype(x.dtype, name), result_dtype(x.dtype)
    if out is not None:
        check_out(out, x.shape, result)
    xb = as_buffer(x, compute)
    buf = kernel_output(out, x.shape, compute, (xb,))
    after = _C.dropout(key, counter, xb, buf, threshold, scale, shift, drop_shift,
                       resolve(num_threads), fresh(buf, out))
    return deliver(buf, out, result), after & _MASK64


def _forward(x, p, generator, seed, training, return_state, out, num_threads, coefficients):
    p = _probability(p)
    if not training or p == 0.0:
        y = _identity(x, out)
        return (y, None) if return_state else y
    gen, state = _state_of(generator, seed)
    state["p"] = p
    scale, shift, drop_shift = coefficients(p)
    y, gen._counter = _masked(x, state["key"], state["counter"], _threshold(p), scale, shift, drop_shift, out,
                              num_threads)
    return (y, state) if return_state else y


def _backward(dy, state, out, num_threads, slope):
    if state is None:  # the forward was the identity (eval mode or p = 0)
        return _identity(dy, out, "dy")
    key, counter = _check_state(state)
    p = _probability(state.get("p"))
    return _masked(dy, key, counter, _threshold(p), slope(p), 0.0, 0.0, out, num_threads, "dy")[0]


def _standard(p: float) -> Tuple[float, float, float]:
    return (1.0 / (1.0 - p) if p < 1.0 else 0.0), 0.0, 0.0


def _alpha(p: float) -> Tuple[float, float, float]:
    """SELU-preserving affine map: kept a x + b, dropped a s + b (s the saturation value), with a and b keeping
    zero mean and unit variance."""
    s = _SELU_SATURATION
    a = ((1.0 - p) * (1.0 + p * s * s)) ** -0.5 if p < 1.0 else 0.0
    b = -a * s * p
    return a, b, a * s + b


@documented(_PARAMS, returns=_FORWARD)
def dropout(x: ArrayLike, p: float = 0.5, *, generator: Optional[Generator] = None, seed: Optional[int] = None,
            training: bool = True, return_state: bool = False, out: Optional[np.ndarray] = None,
            num_threads: Optional[int] = None) -> Any:
    """Inverted dropout: each value zeroed with probability ``p``, the others scaled by 1 / (1 - p).

    References
    ----------
    Srivastava et al., Dropout: a simple way to prevent neural networks from overfitting, JMLR 2014.
    """
    return _forward(x, p, generator, seed, training, return_state, out, num_threads, _standard)


@documented(_PARAMS, returns=_BACKWARD)
def dropout_backward(dy: ArrayLike, state: Optional[DropoutState], *, out: Optional[np.ndarray] = None,
                     num_threads: Optional[int] = None) -> np.ndarray:
    """dx = dy * mask / (1 - p), the mask regenerated from the forward's ``state``."""
    return _backward(dy, state, out, num_threads, lambda p: _standard(p)[0])


@documented(_PARAMS, returns=_FORWARD)
def alpha_dropout(x: ArrayLike, p: float = 0.5, *, generator: Optional[Generator] = None,
                  seed: Optional[int] = None, training: bool = True, return_state: bool = False,
                  out: Optional[np.ndarray] = None, num_threads: Optional[int] = None) -> Any:
    """Alpha dropout for SELU networks: dropped values set to SELU's saturation value -lambda alpha, then an affine
    map a y + b that keeps zero-mean unit-variance inputs so.  Arguments as :func:`dropout`.

    References
    ----------
    Klambauer, Unterthiner, Mayr & Hochreiter, Self-normalizing neural networks, NeurIPS 2017.
    """
    return _forward(x, p, generator, seed, training, return_state, out, num_threads, _alpha)


@documented(_PARAMS, returns=_BACKWARD)
def alpha_dropout_backward(dy: ArrayLike, state: Optional[DropoutState], *, out: Optional[np.ndarray] = None,
                           num_threads: Optional[int] = None) -> np.ndarray:
    """dx = a dy where kept, 0 where dropped (the mask regenerated from ``state``)."""
    return _backward(dy, state, out, num_threads, lambda p: _alpha(p)[0])


def _channel_mask(shape, axis, state) -> np.ndarray:
    """Per (sample, channel) keep-and-scale factors, shaped to broadcast over x."""
    ax = normalize_axis(axis, len(shape))
    if ax == 0 or len(shape) < 2:
        raise ValueError("axis: the channel axis cannot be the batch axis 0 (x needs rank >= 2)")
    key, counter = _check_state(state)
    p = _probability(state.get("p"))
    m, _ = _masked(np.ones((shape[0], shape[ax])), key, counter, _threshold(p), _standard(p)[0], 0.0, 0.0, None,
                   1)
    return m.reshape([shape[0] if i == 0 else shape[ax] if i == ax else 1 for i in range(len(shape))])


@documented(_PARAMS, returns=_FORWARD)
def channel_dropout(x: ArrayLike, p: float = 0.5, *, axis: int = 1, generator: Optional[Generator] = None,
                    seed: Optional[int] = None, training: bool = True, return_state: bool = False,
                    out: Optional[np.ndarray] = None) -> Any:
    """Channel dropout (PyTorch's Dropout1d/2d/3d, Tompson et al. 2015): whole channels of each sample (along
    ``axis``, 1 for NCHW, -1 for channels-last; batch axis 0) zeroed with probability ``p``, the others scaled by
    1 / (1 - p).  Arguments as :func:`dropout`."""
    p = _probability(p)
    x = as_array(x, "x")
    if not training or p == 0.0:
        y = _identity(x, out)
        return (y, None) if return_state else y
    gen, state = _state_of(generator, seed)
    state["p"] = p
    mask = _channel_mask(x.shape, axis, state)
    gen._counter = (gen._counter + _C.dropout_blocks(mask.size)) & _MASK64
    result = result_dtype(x.dtype)
    if out is not None:
        check_out(out, x.shape, result)
    with np.errstate(invalid="ignore"):  # inf * 0 in a dropped channel: NaN, as x * mask gives elsewhere
        y = np.multiply(x, mask.astype(compute_dtype(x.dtype, "x")), out=out, casting="same_kind") \
            if out is not None else (x * mask.astype(compute_dtype(x.dtype, "x"))).astype(result, copy=False)
    return (y, state) if return_state else y


@documented(_PARAMS, returns=_BACKWARD)
def channel_dropout_backward(dy: ArrayLike, state: Optional[DropoutState], *, axis: int = 1,
                             out: Optional[np.ndarray] = None) -> np.ndarray:
    """dx = dy * the forward's per-channel mask / (1 - p), regenerated from ``state``."""
    dy = as_array(dy, "dy")
    if state is None:
        return _identity(dy, out, "dy")
    mask = _channel_mask(dy.shape, axis, state).astype(compute_dtype(dy.dtype, "dy"))
    with np.errstate(invalid="ignore"):
        if out is not None:
            check_out(out, dy.shape, result_dtype(dy.dtype))
            return np.multiply(dy, mask, out=out, casting="same_kind")
        return (dy * mask).astype(result_dtype(dy.dtype), copy=False)
