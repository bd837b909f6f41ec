"""Activation functions and their derivatives, with NumPy's manners (see ``fastnorm._array``).

Every ``f(x, ..., out=None, num_threads=None)`` returns ``f`` applied elementwise; every
``f_backward(dy, x, ..., out=None, num_threads=None)`` returns ``dx = dy * f'(x)``, the gradient of a loss with
respect to ``x`` given its gradient ``dy`` with respect to ``f(x)``.  ``sigmoid``, ``tanh``, ``relu`` and ``elu``
also take the forward's output instead of ``x`` (``f_backward(dy, y=y)``), so a pipeline need not keep ``x``.
The transcendental functions are fastnorm's own vectorised approximations; docs/accuracy.md lists their
measured error in ulps.
"""
from __future__ import annotations

import math

import numpy as np
from typing import Any, Callable, Optional, Tuple, TypeVar
from numpy.typing import ArrayLike

from fastnorm import _C
from fastnorm._array import (as_array, as_buffer, check_out, check_same_shape, common_dtype, compute_dtype, deliver,
                             kernel_output, normalize_axis, result_dtype, storage_dtype)
from fastnorm._memory import fresh
from fastnorm._threads import resolve
from fastnorm._validate import integer, real

__all__ = [
    "sigmoid", "sigmoid_backward", "tanh", "tanh_backward", "relu", "relu_backward", "leaky_relu",
    "leaky_relu_backward", "prelu", "prelu_backward", "elu", "elu_backward", "selu", "selu_backward", "gelu",
    "gelu_backward", "silu", "silu_backward", "softplus", "softplus_backward", "mish", "mish_backward",
    "hardtanh", "hardtanh_backward", "hardsigmoid", "hardsigmoid_backward", "hardswish", "hardswish_backward",
    "maxout", "maxout_backward",
]

_OP = {name: i for i, name in enumerate(_C.activation_names())}

_COMMON = """
    out : ndarray, optional
        Where to write the result: the right shape, a dtype the result casts to (same_kind), writable; it may be
        the input itself.
    num_threads : int, optional
        Threads to use; default :func:`fastnorm.get_num_threads`.  Results do not depend on it.
"""


_F = TypeVar("_F", bound=Callable[..., Any])


def _doc(summary: str, formula: str, extra: str = "", ref: str = "") -> Callable[[_F], _F]:
    """Docstring decorator: one summary, the formula, extra parameters, the common ones, a reference."""
    def wrap(fn: _F) -> _F:
        fn.__doc__ = f"{summary}\n\n    {formula}\n\n    Parameters\n    ----------\n{extra}{_COMMON}"
        if ref:
            fn.__doc__ += f"\n    References\n    ----------\n    {ref}\n"
        return fn
    return wrap


_X = "    x : array_like\n        Input.\n"
_DY_X = ("    dy : array_like\n        Gradient of the loss with respect to the forward's output.\n"
         "    x : array_like\n        The forward's input (same shape as ``dy``).\n")
_DY_XY = _DY_X + "    y : array_like, optional\n        The forward's output, instead of ``x``.\n"


def _forward(op: str, x, out, num_threads, a: float = 0.0, b: float = 0.0):
    x = as_array(x, "x")
    compute, result = storage_dtype(x.dtype, "x"), result_dtype(x.dtype)
    if out is not None:
        check_out(out, x.shape, result)
    xb = as_buffer(x, compute)
    buf = kernel_output(out, x.shape, compute, (xb,))
    _C.activation_forward(_OP[op], xb, buf, a, b, resolve(num_threads), fresh(buf, out))
    return deliver(buf, out, result)


def _backward(op: str, dy, x, y, out, num_threads, a: float = 0.0, b: float = 0.0):
    if (x is None) == (y is None):
        raise TypeError(f"{op}_backward: pass exactly one of x (the forward's input) and y (its output)")
    from_output = y is not None
    name = "y" if from_output else "x"
    dy = as_array(dy, "dy")
    xy = as_array(y if from_output else x, name)
    check_same_shape(dy, xy, "dy", name)
    common = common_dtype(dy.dtype, xy.dtype)
    compute, result = storage_dtype(common, name), result_dtype(common)
    if out is not None:
        check_out(out, dy.shape, result)
    dyb, xyb = as_buffer(dy, compute), as_buffer(xy, compute)
    buf = kernel_output(out, dy.shape, compute, (dyb, xyb))
    _C.activation_backward(_OP[op], dyb, xyb, buf, a, b, from_output, resolve(num_threads), fresh(buf, out))
    return deliver(buf, out, result)


# ---- sigmoid, tanh, relu ----------------------------------------------------------------------------------------

@_doc("Logistic sigmoid.", "sigmoid(x) = 1 / (1 + exp(-x))", _X)
def sigmoid(x: ArrayLike, *, out: Optional[np.ndarray] = None, num_threads: Optional[int] = None) -> np.ndarray:
    return _forward("sigmoid", x, out, num_threads)


@_doc("Gradient of :func:`sigmoid`.", "dx = dy * s * (1 - s),  s = sigmoid(x)", _DY_XY)
def sigmoid_backward(dy: ArrayLike, x: Optional[ArrayLike] = None, *, y: Optional[ArrayLike] = None,
                     out: Optional[np.ndarray] = None, num_threads: Optional[int] = None) -> np.ndarray:
    return _backward("sigmoid", dy, x, y, out, num_threads)


@_doc("Hyperbolic tangent, accurate to a few ulps everywhere, including near 0.", "tanh(x)", _X)
def tanh(x: ArrayLike, *, out: Optional[np.ndarray] = None, num_threads: Optional[int] = None) -> np.ndarray:
    return _forward("tanh", x, out, num_threads)


@_doc("Gradient of :func:`tanh`.", "dx = dy * (1 - tanh(x)^2)", _DY_XY)
def tanh_backward(dy: ArrayLike, x: Optional[ArrayLike] = None, *, y: Optional[ArrayLike] = None,
                  out: Optional[np.ndarray] = None, num_threads: Optional[int] = None) -> np.ndarray:
    return _backward("tanh", dy, x, y, out, num_threads)


@_doc("Rectified linear unit (NaN stays NaN).", "relu(x) = max(x, 0)", _X,
      "Nair & Hinton, Rectified linear units improve restricted Boltzmann machines, ICML 2010.")
def relu(x: ArrayLike, *, out: Optional[np.ndarray] = None, num_threads: Optional[int] = None) -> np.ndarray:
    return _forward("relu", x, out, num_threads)


@_doc("Gradient of :func:`relu` (0 at x = 0, as PyTorch).", "dx = dy * (x > 0)", _DY_XY)
def relu_backward(dy: ArrayLike, x: Optional[ArrayLike] = None, *, y: Optional[ArrayLike] = None,
                  out: Optional[np.ndarray] = None, num_threads: Optional[int] = None) -> np.ndarray:
    return _backward("relu", dy, x, y, out, num_threads)


# ---- leaky and parametric ReLU ----------------------------------------------------------------------------------

_SLOPE = "    negative_slope : float\n        Slope for x <= 0.\n"


@_doc("Leaky ReLU.", "leaky_relu(x) = x if x > 0 else negative_slope * x", _X + _SLOPE,
      "Maas, Hannun & Ng, Rectifier nonlinearities improve neural network acoustic models, ICML 2013.")
def leaky_relu(x: ArrayLike, negative_slope: float = 0.01, *, out: Optional[np.ndarray] = None,
               num_threads: Optional[int] = None) -> np.ndarray:
    return _forward("leaky_relu", x, out, num_threads, real(negative_slope, "negative_slope"))


@_doc("Gradient of :func:`leaky_relu`.", "dx = dy * (1 if x > 0 else negative_slope)", _DY_X + _SLOPE)
def leaky_relu_backward(dy: ArrayLike, x: ArrayLike, negative_slope: float = 0.01, *,
                        out: Optional[np.ndarray] = None, num_threads: Optional[int] = None) -> np.ndarray:
    return _backward("leaky_relu", dy, x, None, out, num_threads, real(negative_slope, "negative_slope"))


def _prelu_layout(x: np.ndarray, alpha: np.ndarray, axis):
    """(outer, channels, inner) of ``x`` for slopes ``alpha``: one slope for all, or one per entry of ``axis``."""
    if alpha.ndim > 1:
        raise ValueError(f"alpha: expected a scalar or a 1-d array, got shape {alpha.shape}")
    channels = alpha.size
    if channels == 1:
        return 1, 1, x.size
    ax = normalize_axis(axis, x.ndim)
    if x.shape[ax] != channels:
        raise ValueError(f"alpha: has {channels} values but x has {x.shape[ax]} channels along axis {axis}")
    outer = math.prod(x.shape[:ax])
    return outer, channels, math.prod(x.shape[ax + 1:])


_ALPHA = ("    alpha : float or array_like\n        One slope, or one per channel along ``axis``.\n"
          "    axis : int\n        The channel axis (used when alpha has more than one value).\n")


@_doc("Parametric ReLU: a leaky ReLU whose slopes are learned, one per channel.",
      "prelu(x) = x if x > 0 else alpha[c] * x,  c = the index along ``axis``", _X + _ALPHA,
      "He, Zhang, Ren & Sun, Delving deep into rectifiers, ICCV 2015.")
def prelu(x: ArrayLike, alpha: Any, axis: Any = 1, *, out: Optional[np.ndarray] = None,
          num_threads: Optional[int] = None) -> np.ndarray:
    x = as_array(x, "x")
    compute, result = compute_dtype(x.dtype, "x"), result_dtype(x.dtype)
    alpha_b = as_buffer(as_array(alpha, "alpha"), compute)
    outer, channels, inner = _prelu_layout(x, alpha_b, axis)
    if out is not None:
        check_out(out, x.shape, result)
    xb = as_buffer(x, compute)
    buf = kernel_output(out, x.shape, compute, (xb,), (alpha_b,))
    _C.prelu_forward(xb, alpha_b.reshape(-1), buf, outer, channels, inner, resolve(num_threads))
    return deliver(buf, out, result)


def prelu_backward(dy: ArrayLike, x: ArrayLike, alpha: Any, axis: Any = 1, *, out: Optional[np.ndarray] = None,
                   num_threads: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Gradients of :func:`prelu`.

    dx = dy * (1 if x > 0 else alpha[c]),   dalpha[c] = sum of dy * x over the entries of channel c with x <= 0

    dalpha is accumulated in float64 in a fixed order (the same bits for any thread count) and returned with
    alpha's shape, in the computation's dtype.

    Parameters
    ----------
    dy, x : array_like
        Gradient with respect to the output, and the forward's input (same shape).
    alpha, axis :
        As for :func:`prelu`.
    out : ndarray, optional
        Where to write dx.
    num_threads : int, optional
        Threads to use.

    Returns
    -------
    (dx, dalpha)
    """
    dy, x = as_array(dy, "dy"), as_array(x, "x")
    check_same_shape(dy, x, "dy", "x")
    common = common_dtype(dy.dtype, x.dtype)
    compute, result = compute_dtype(common, "x"), result_dtype(common)
    alpha_arr = as_array(alpha, "alpha")
    alpha_b = as_buffer(alpha_arr, compute)
    outer, channels, inner = _prelu_layout(x, alpha_b, axis)
    if out is not None:
        check_out(out, x.shape, result)
    dyb, xb = as_buffer(dy, compute), as_buffer(x, compute)
    buf = kernel_output(out, x.shape, compute, (dyb, xb), (alpha_b,))
    dalpha = np.empty(channels, dtype=np.float64)
    _C.prelu_backward(dyb, xb, alpha_b.reshape(-1), buf, dalpha, outer, channels, inner, resolve(num_threads))
    return deliver(buf, out, result), dalpha.reshape(alpha_arr.shape).astype(result)


# ---- exponential units ------------------------------------------------------------------------------------------

_ELU_ALPHA = "    alpha : float\n        Saturation value for x -> -inf is -alpha.\n"


@_doc("Exponential linear unit.", "elu(x) = x if x > 0 else alpha * (exp(x) - 1)", _X + _ELU_ALPHA,
      "Clevert, Unterthiner & Hochreiter, Fast and accurate deep network learning by ELUs, ICLR 2016.")
def elu(x: ArrayLike, alpha: Any = 1.0, *, out: Optional[np.ndarray] = None,
        num_threads: Optional[int] = None) -> np.ndarray:
    return _forward("elu", x, out, num_threads, real(alpha, "alpha"))


@_doc("Gradient of :func:`elu`.", "dx = dy * (1 if x > 0 else alpha * exp(x));  from y: dy * (y + alpha) for y <= 0",
      _DY_XY + _ELU_ALPHA)
def elu_backward(dy: ArrayLike, x: Optional[ArrayLike] = None, alpha: Any = 1.0, *, y: Optional[ArrayLike] = None,
                 out: Optional[np.ndarray] = None, num_threads: Optional[int] = None) -> np.ndarray:
    return _backward("elu", dy, x, y, out, num_threads, real(alpha, "alpha"))


@_doc("Scaled ELU, self-normalizing.", "selu(x) = scale * elu(x, alpha), alpha = 1.6732632..., scale = 1.0507009...",
      _X, "Klambauer, Unterthiner, Mayr & Hochreiter, Self-normalizing neural networks, NeurIPS 2017.")
def selu(x: ArrayLike, *, out: Optional[np.ndarray] = None, num_threads: Optional[int] = None) -> np.ndarray:
    return _forward("selu", x, out, num_threads)


@_doc("Gradient of :func:`selu`.", "dx = dy * scale * (1 if x > 0 else alpha * exp(x))", _DY_X)
def selu_backward(dy: ArrayLike, x: ArrayLike, *, out: Optional[np.ndarray] = None,
                  num_threads: Optional[int] = None) -> np.ndarray:
    return _backward("selu", dy, x, None, out, num_threads)


# ---- smooth gated units -----------------------------------------------------------------------------------------

_APPROX = ('    approximate : {"none", "tanh"}\n        "none": the exact x * Phi(x), computed without cancellation '
           'in the negative tail;\n        "tanh": 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).\n')


def _gelu_op(approximate) -> str:
    if approximate == "none":
        return "gelu"
    if approximate == "tanh":
        return "gelu_tanh"
    raise ValueError(f"approximate: expected 'none' or 'tanh', got {approximate!r}")


@_doc("Gaussian error linear unit.", "gelu(x) = x * Phi(x),  Phi the standard normal CDF", _X + _APPROX,
      "Hendrycks & Gimpel, Gaussian error linear units (GELUs), arXiv:1606.08415, 2016.")
def gelu(x: ArrayLike, approximate: str = "none", *, out: Optional[np.ndarray] = None,
         num_threads: Optional[int] = None) -> np.ndarray:
    return _forward(_gelu_op(approximate), x, out, num_threads)


@_doc("Gradient of :func:`gelu`.", "dx = dy * (Phi(x) + x * phi(x)),  phi the standard normal density",
      _DY_X + _APPROX)
def gelu_backward(dy: ArrayLike, x: ArrayLike, approximate: str = "none", *, out: Optional[np.ndarray] = None,
                  num_threads: Optional[int] = None) -> np.ndarray:
    return _backward(_gelu_op(approximate), dy, x, None, out, num_threads)


@_doc("Sigmoid-weighted linear unit (swish).", "silu(x) = x * sigmoid(x)", _X,
      "Elfwing, Uchibe & Doya, Sigmoid-weighted linear units, Neural Networks 2018; "
      "Ramachandran et al., Searching for activation functions, 2017.")
def silu(x: ArrayLike, *, out: Optional[np.ndarray] = None, num_threads: Optional[int] = None) -> np.ndarray:
    return _forward("silu", x, out, num_threads)


@_doc("Gradient of :func:`silu`.", "dx = dy * s * (1 + x * (1 - s)),  s = sigmoid(x)", _DY_X)
def silu_backward(dy: ArrayLike, x: ArrayLike, *, out: Optional[np.ndarray] = None,
                  num_threads: Optional[int] = None) -> np.ndarray:
    return _backward("silu", dy, x, None, out, num_threads)


_SOFTPLUS = ("    beta : float\n        Sharpness, > 0.\n"
             "    threshold : float\n        Above beta * x > threshold the function is taken as linear.\n")


def _softplus_params(beta, threshold):
    beta = real(beta, "beta")
    if beta <= 0:
        raise ValueError(f"beta: expected a positive number, got {beta}")
    return beta, real(threshold, "threshold")


@_doc("Softplus, a smooth ReLU.", "softplus(x) = log(1 + exp(beta * x)) / beta  (x where beta * x > threshold)",
      _X + _SOFTPLUS)
def softplus(x: ArrayLike, beta: ArrayLike = 1.0, threshold: float = 20.0, *, out: Optional[np.ndarray] = None,
             num_threads: Optional[int] = None) -> np.ndarray:
    return _forward("softplus", x, out, num_threads, *_softplus_params(beta, threshold))


@_doc("Gradient of :func:`softplus`.", "dx = dy * sigmoid(beta * x)  (dy where beta * x > threshold)",
      _DY_X + _SOFTPLUS)
def softplus_backward(dy: ArrayLike, x: ArrayLike, beta: ArrayLike = 1.0, threshold: float = 20.0, *,
                      out: Optional[np.ndarray] = None, num_threads: Optional[int] = None) -> np.ndarray:
    return _backward("softplus", dy, x, None, out, num_threads, *_softplus_params(beta, threshold))


@_doc("Mish.", "mish(x) = x * tanh(softplus(x))", _X,
      "Misra, Mish: a self regularized non-monotonic activation function, BMVC 2020.")
def mish(x: ArrayLike, *, out: Optional[np.ndarray] = None, num_threads: Optional[int] = None) -> np.ndarray:
    return _forward("mish", x, out, num_threads)


@_doc("Gradient of :func:`mish`.", "dx = dy * (t + x * (1 - t^2) * sigmoid(x)),  t = tanh(softplus(x))", _DY_X)
def mish_backward(dy: ArrayLike, x: ArrayLike, *, out: Optional[np.ndarray] = None,
                  num_threads: Optional[int] = None) -> np.ndarray:
    return _backward("mish", dy, x, None, out, num_threads)


# ---- piecewise-linear "hard" functions --------------------------------------------------------------------------

_HARDTANH = "    min_val, max_val : float\n        The clamp's bounds, min_val <= max_val.\n"


def _hardtanh_params(min_val, max_val):
    lo, hi = real(min_val, "min_val"), real(max_val, "max_val")
    if lo > hi:
        raise ValueError(f"min_val: {lo} is greater than max_val {hi}")
    return lo, hi


@_doc("Hard tanh: a clamp.", "hardtanh(x) = min(max(x, min_val), max_val)", _X + _HARDTANH)
def hardtanh(x: ArrayLike, min_val: float = -1.0, max_val: float = 1.0, *, out: Optional[np.ndarray] = None,
             num_threads: Optional[int] = None) -> np.ndarray:
    return _forward("hardtanh", x, out, num_threads, *_hardtanh_params(min_val, max_val))


@_doc("Gradient of :func:`hardtanh`.", "dx = dy * (min_val < x < max_val)", _DY_X + _HARDTANH)
def hardtanh_backward(dy: ArrayLike, x: ArrayLike, min_val: float = -1.0, max_val: float = 1.0, *,
                      out: Optional[np.ndarray] = None, num_threads: Optional[int] = None) -> np.ndarray:
    return _backward("hardtanh", dy, x, None, out, num_threads, *_hardtanh_params(min_val, max_val))


@_doc("Hard sigmoid.", "hardsigmoid(x) = min(max(x + 3, 0), 6) / 6", _X,
      "Howard et al., Searching for MobileNetV3, ICCV 2019.")
def hardsigmoid(x: ArrayLike, *, out: Optional[np.ndarray] = None, num_threads: Optional[int] = None) -> np.ndarray:
    return _forward("hardsigmoid", x, out, num_threads)


@_doc("Gradient of :func:`hardsigmoid`.", "dx = dy / 6 where -3 < x < 3, else 0", _DY_X)
def hardsigmoid_backward(dy: ArrayLike, x: ArrayLike, *, out: Optional[np.ndarray] = None,
                         num_threads: Optional[int] = None) -> np.ndarray:
    return _backward("hardsigmoid", dy, x, None, out, num_threads)


@_doc("Hard swish.", "hardswish(x) = x * min(max(x + 3, 0), 6) / 6", _X,
      "Howard et al., Searching for MobileNetV3, ICCV 2019.")
def hardswish(x: ArrayLike, *, out: Optional[np.ndarray] = None, num_threads: Optional[int] = None) -> np.ndarray:
    return _forward("hardswish", x, out, num_threads)


@_doc("Gradient of :func:`hardswish` (PyTorch's values at the kinks).",
      "dx = dy * (0 if x < -3 else (2x + 3) / 6 if x <= 3 else 1)", _DY_X)
def hardswish_backward(dy: ArrayLike, x: ArrayLike, *, out: Optional[np.ndarray] = None,
                       num_threads: Optional[int] = None) -> np.ndarray:
    return _backward("hardswish", dy, x, None, out, num_threads)


# ---- maxout -----------------------------------------------------------------------------------------------------

def _maxout_layout(shape: tuple, pieces, axis):
    k = integer(pieces, "pieces", 1, "a positive int")
    ax = normalize_axis(axis, len(shape))
    if shape[ax] % k:
        raise ValueError(f"pieces: axis {axis} has length {shape[ax]}, not a multiple of pieces={k}")
    outer, inner = math.prod(shape[:ax]), math.prod(shape[ax + 1:])
    out_shape = shape[:ax] + (shape[ax] // k,) + shape[ax + 1:]
    return (outer, shape[ax] // k, k, inner), out_shape


_PIECES = ("    pieces : int\n        Size of each group of consecutive entries along ``axis``.\n"
           "    axis : int\n        The axis the groups run along; its length must be a multiple of pieces.\n")


@_doc("Maxout: the maximum over groups of ``pieces`` consecutive entries along ``axis``.",
      "maxout(x)[..., g, ...] = max(x[..., g*pieces : (g+1)*pieces, ...])  (NaN wins, as in numpy.max)",
      _X + _PIECES, "Goodfellow, Warde-Farley, Mirza, Courville & Bengio, Maxout networks, ICML 2013.")
def maxout(x: ArrayLike, pieces: int, axis: Any = 1, *, out: Optional[np.ndarray] = None,
           num_threads: Optional[int] = None) -> np.ndarray:
    x = as_array(x, "x")
    compute, result = compute_dtype(x.dtype, "x"), result_dtype(x.dtype)
    layout, out_shape = _maxout_layout(x.shape, pieces, axis)
    if out is not None:
        check_out(out, out_shape, result)
    xb = as_buffer(x, compute)
    buf = kernel_output(out, out_shape, compute, (xb,))
    _C.maxout_forward(xb, buf, *layout, resolve(num_threads))
    return deliver(buf, out, result)


@_doc("Gradient of :func:`maxout`: dy goes to the entry that was the maximum (the first one on ties).",
      "dx[..., g*pieces + k, ...] = dy[..., g, ...] if k is the group's arg-max else 0",
      "    dy : array_like\n        Gradient with respect to maxout's output.\n"
      "    x : array_like\n        The forward's input.\n" + _PIECES)
def maxout_backward(dy: ArrayLike, x: ArrayLike, pieces: int, axis: Any = 1, *, out: Optional[np.ndarray] = None,
                    num_threads: Optional[int] = None) -> np.ndarray:
    dy, x = as_array(dy, "dy"), as_array(x, "x")
    layout, out_shape = _maxout_layout(x.shape, pieces, axis)
    if dy.shape != out_shape:
        raise ValueError(f"dy: expected shape {out_shape} (maxout's output), got {dy.shape}")
    common = common_dtype(dy.dtype, x.dtype)
    compute, result = compute_dtype(common, "x"), result_dtype(common)
    if out is not None:
        check_out(out, x.shape, result)
    dyb, xb = as_buffer(dy, compute), as_buffer(x, compute)
    buf = kernel_output(out, x.shape, compute, (dyb, xb))
    _C.maxout_backward(dyb, xb, buf, *layout, resolve(num_threads))
    return deliver(buf, out, result)
