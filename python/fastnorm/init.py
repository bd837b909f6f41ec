"""Weight initialization on fastnorm's reproducible sampler (``fastnorm.random``).

Every initializer takes the weight's ``shape`` (or ``out=``, an array to fill in place), ``dtype=`` (float32 by
default) and ``rng=`` (None, an int seed, a ``fastnorm.random.Generator`` or a ``numpy.random.Generator``), and
returns the array.  Weight layouts (``layout=``):

- ``"out_in"``: (out, in) for a linear layer, ``(out, in, *kernel)`` for a convolution (PyTorch, and ``x @ W.T``);
- ``"in_out"``: (in, out) for a dense matrix applied as ``x @ W`` (Keras, the lecture's ``h @ W``) and
  ``(in, out, *kernel)`` for a transposed convolution (PyTorch's ConvTranspose weights);
- ``None`` (the default): ``"out_in"`` for convolutions and square matrices, whose fans cannot be misread, and
  a ValueError for a non-square 2-d weight used with fan_in or fan_out: its fans swap between the layouts, so
  the layout must be said (Xavier's average of the two needs nothing).

fan_in = in * prod(kernel) and fan_out = out * prod(kernel): as the lecture puts it, for conv layers D_in is
kernel_size^2 * input_channels.
"""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Sequence

import numpy as np
from typing import Any, Tuple, Union
from numpy.typing import ArrayLike, DTypeLike

from fastnorm import _validate
from fastnorm._array import check_fill
from fastnorm._docs import documented
from fastnorm.random import as_generator
from fastnorm.statistics import moments

__all__ = ["calculate_gain", "compute_fans", "normal", "uniform", "constant", "zeros", "ones", "trunc_normal",
           "xavier_normal", "xavier_uniform", "kaiming_normal", "kaiming_uniform", "lecun_normal",
           "lecun_uniform", "variance_scaling", "orthogonal", "identity", "dirac", "sparse", "lsuv",
           "data_dependent"]

_LAYOUTS = ("out_in", "in_out")
_MODES = ("fan_in", "fan_out", "fan_avg")
_DISTRIBUTIONS = ("truncated_normal", "normal", "uniform")
_LINEAR_GAIN = ("linear", "identity", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                "conv_transpose3d", "sigmoid")
_NONLINEARITIES = _LINEAR_GAIN + ("tanh", "relu", "leaky_relu", "selu")
# A standard normal truncated to [-2, 2] has this standard deviation (Keras' variance_scaling constant).
_TRUNC2_STD = 0.87962566103423978

# The parameters the initializers share, described once (fastnorm._docs).
_PARAMS = {
    "shape": ("int or tuple of int, optional", "The weight's shape; may be left out when ``out`` is given."),
    "layout": ("{'out_in', 'in_out'} or None, optional",
               "How the weight's first two axes are read for its fans (see the module's docstring): 'out_in' for "
               "``x @ W.T`` and convolutions, 'in_out' for ``x @ W``; None: 'out_in' where that cannot be misread "
               "(convolutions, square matrices), else a ValueError."),
    "dtype": ("data-type, default float32", "The result's dtype (ignored when ``out`` is given)."),
    "out": ("numpy.ndarray, optional", "An array to fill in place and return instead of a new one."),
    "rng": ("None, int, fastnorm.random.Generator or numpy.random.Generator, optional",
            "Where the values come from: None for fresh entropy, an int seed, or a generator (whose state "
            "advances)."),
    "num_threads": ("int, optional",
                    "Threads to sample with (default: fastnorm's setting); the values do not depend on it."),
    "gain": ("float, default 1", "A factor on the standard deviation or bound (see :func:`calculate_gain`)."),
    "mode": ("{'fan_in', 'fan_out', 'fan_avg'}, default 'fan_in'",
             "Which fan the variance is divided by: fan_in keeps the forward pass's variance, fan_out the "
             "backward's."),
    "nonlinearity": ("str, default 'leaky_relu'", "The activation after the layer, for :func:`calculate_gain`."),
    "a": ("float, default 0", "leaky_relu's negative slope, for :func:`calculate_gain` (0: relu's gain)."),
}
_WEIGHT = ("numpy.ndarray", "The weight (``out`` when given).")


@documented(_PARAMS, returns=("float", "The gain."),
            nonlinearity=("str", "One of linear, identity, conv1d, conv2d, conv3d, conv_transpose1d / 2d / 3d, "
                                 "sigmoid, tanh, relu, leaky_relu, selu."),
            param=("float, optional", "leaky_relu's negative slope (default 0.01)."))
def calculate_gain(nonlinearity: str, param: Optional[float] = None) -> float:
    """The recommended gain for a nonlinearity (PyTorch's values): 1 for linear, convolutions and sigmoid, 5/3 for
    tanh, sqrt(2) for relu, sqrt(2 / (1 + slope^2)) for leaky_relu (slope ``param``, default 0.01), 3/4 for selu.
    """
    if nonlinearity not in _NONLINEARITIES:
        raise ValueError(f"nonlinearity: unknown {nonlinearity!r}; expected one of {', '.join(_NONLINEARITIES)}")
    if nonlinearity in _LINEAR_GAIN:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "selu":
        return 3.0 / 4
    slope = 0.01 if param is None else _validate.real(param, "param")
    return math.sqrt(2.0 / (1 + slope ** 2))


@documented(_PARAMS, returns=("tuple of int", "(fan_in, fan_out): in * prod(kernel) and out * prod(kernel)."),
            shape=("tuple of int", "The weight's shape, at least 2-d: ``(out, in, *kernel)`` or "
                                   "``(in, out, *kernel)``."))
def compute_fans(shape: Optional[Union[int, Tuple[int, ...]]], layout: Optional[str] = None) -> Tuple[Any, ...]:
    """(fan_in, fan_out) of a weight of this shape and layout (see the module's docstring).

    ``layout=None`` means ``"out_in"`` where that cannot be misread: convolution weights (3 or more dimensions)
    and square matrices.  A non-square 2-d weight is (out, in) when used as ``x @ W.T`` (PyTorch's Linear) and
    (in, out) when used as ``x @ W`` (Keras, the lecture's ``h @ W``): its fans are swapped between the two, so it
    needs ``layout`` said (ValueError otherwise) rather than silently getting the other convention's scale."""
    shape = _validate.shape(shape)
    if len(shape) < 2:
        raise ValueError(f"shape: fans need a weight with at least 2 dimensions (out, in, *kernel), got {shape}")
    if layout is None:
        if len(shape) == 2 and shape[0] != shape[1]:
            raise ValueError(f"layout: a weight of shape {shape} is (out, in) for x @ W.T (PyTorch) or (in, out) "
                             f"for x @ W (Keras), with fan_in {shape[1]} or {shape[0]}; say which: "
                             f"layout='out_in' or layout='in_out'")
        layout = "out_in"
    if layout not in _LAYOUTS:
        raise ValueError(f"layout: unknown {layout!r}; expected one of {', '.join(_LAYOUTS)}")
    receptive = math.prod(shape[2:])
    n_out, n_in = (shape[0], shape[1]) if layout == "out_in" else (shape[1], shape[0])
    return n_in * receptive, n_out * receptive


def _fan(shape, mode: str, layout: Optional[str]) -> float:
    if mode not in _MODES:
        raise ValueError(f"mode: unknown {mode!r}; expected one of {', '.join(_MODES)}")
    if mode == "fan_avg" and layout is None:
        layout = "out_in"  # the average of the two fans is the same in either layout
    fan_in, fan_out = compute_fans(shape, layout)
    fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
    if fan == 0:
        raise ValueError(f"shape: {tuple(shape)} has a zero {mode}")
    return fan


def _target(shape, out, dtype):
    """(shape, dtype) of the result: out's when given."""
    if out is not None:
        check_fill(out, None if shape is None else _validate.shape(shape))
        return out.shape, out.dtype
    if shape is None:
        raise ValueError("shape: give a shape or out=")
    return _validate.shape(shape), np.dtype(dtype)


def _positive(name: str, value) -> float:
    return _validate.real(value, name, positive=True)


def _normal(shape, std, mean, dtype, out, rng, num_threads=None):
    shape, dtype = _target(shape, out, dtype)
    return as_generator(rng).normal(shape, mean, std, dtype=dtype, out=out, num_threads=num_threads)


def _uniform(shape, low, high, dtype, out, rng, num_threads=None):
    shape, dtype = _target(shape, out, dtype)
    return as_generator(rng).uniform(shape, low, high, dtype=dtype, out=out, num_threads=num_threads)


def _trunc(shape, std, mean, a_std, b_std, dtype, out, rng, num_threads=None):
    shape, dtype = _target(shape, out, dtype)
    return as_generator(rng).truncated_normal(shape, mean, std, a_std, b_std, dtype=dtype, out=out,
                                              num_threads=num_threads)


@documented(_PARAMS, returns=_WEIGHT, mean=("float", "The mean."), std=("float", "The standard deviation (>= 0)."))
def normal(shape: Optional[Union[int, Tuple[int, ...]]] = None, mean: ArrayLike = 0.0, std: Any = 1.0, *,
           dtype: DTypeLike = np.float32, out: Optional[np.ndarray] = None, rng: Any = None,
           num_threads: Optional[int] = None) -> np.ndarray:
    """N(mean, std^2) values: the lecture's "small random numbers" are ``normal(shape, std=0.01)``."""
    _validate.real(std, "std", minimum=0.0)
    return _normal(shape, std, mean, dtype, out, rng, num_threads)


@documented(_PARAMS, returns=_WEIGHT, a=("float", "The lower bound."), b=("float", "The upper bound (> a)."))
def uniform(shape: Optional[Union[int, Tuple[int, ...]]] = None, a: Any = 0.0, b: Any = 1.0, *,
            dtype: DTypeLike = np.float32, out: Optional[np.ndarray] = None, rng: Any = None,
            num_threads: Optional[int] = None) -> np.ndarray:
    """U(a, b) values."""
    if not _validate.real(a, "a") < _validate.real(b, "b"):
        raise ValueError(f"a, b: need a < b, got a={a}, b={b}")
    return _uniform(shape, a, b, dtype, out, rng, num_threads)


@documented(_PARAMS, returns=_WEIGHT, value=("float", "The value of every entry."))
def constant(shape: Optional[Union[int, Tuple[int, ...]]] = None, value: Any = 0.0, *, dtype: DTypeLike = np.float32,
             out: Optional[np.ndarray] = None) -> np.ndarray:
    """Every entry ``value``."""
    shape, dtype = _target(shape, out, dtype)
    value = _validate.real(value, "value", finite=False)
    if out is None:
        return np.full(shape, value, dtype=dtype)
    out[...] = value
    return out


@documented(_PARAMS, returns=_WEIGHT)
def zeros(shape: Optional[Union[int, Tuple[int, ...]]] = None, *, dtype: DTypeLike = np.float32,
          out: Optional[np.ndarray] = None) -> np.ndarray:
    return constant(shape, 0.0, dtype=dtype, out=out)


@documented(_PARAMS, returns=_WEIGHT)
def ones(shape: Optional[Union[int, Tuple[int, ...]]] = None, *, dtype: DTypeLike = np.float32,
         out: Optional[np.ndarray] = None) -> np.ndarray:
    return constant(shape, 1.0, dtype=dtype, out=out)


@documented(_PARAMS, returns=_WEIGHT, mean=("float", "The mean of the normal before truncation."),
            std=("float", "Its standard deviation (> 0)."), a=("float", "The lower bound, absolute."),
            b=("float", "The upper bound, absolute (> a)."))
def trunc_normal(shape: Optional[Union[int, Tuple[int, ...]]] = None, mean: ArrayLike = 0.0, std: Any = 1.0,
                 a: Any = -2.0, b: Any = 2.0, *, dtype: DTypeLike = np.float32, out: Optional[np.ndarray] = None,
                 rng: Any = None, num_threads: Optional[int] = None) -> np.ndarray:
    """N(mean, std^2) restricted to [a, b], with absolute bounds as PyTorch's ``trunc_normal_`` (default
    [-2, 2]); one pass, no rejection (see ``Generator.truncated_normal``)."""
    std = _positive("std", std)
    a, b, mean = _validate.real(a, "a"), _validate.real(b, "b"), _validate.real(mean, "mean")
    if not a < b:
        raise ValueError(f"a, b: need a < b, got a={a}, b={b}")
    return _trunc(shape, std, mean, (a - mean) / std, (b - mean) / std, dtype, out, rng, num_threads)


@documented(_PARAMS, returns=_WEIGHT)
def xavier_normal(shape: Optional[Union[int, Tuple[int, ...]]] = None, gain: float = 1.0, *,
                  layout: Optional[str] = None, dtype: DTypeLike = np.float32, out: Optional[np.ndarray] = None,
                  rng: Any = None) -> np.ndarray:
    """Glorot & Bengio 2010: N(0, std^2), std = gain sqrt(2 / (fan_in + fan_out))."""
    shape, dtype = _target(shape, out, dtype)
    return _normal(shape, _validate.real(gain, "gain") * math.sqrt(1.0 / _fan(shape, "fan_avg", layout)), 0.0, dtype,
                   out, rng)


@documented(_PARAMS, returns=_WEIGHT)
def xavier_uniform(shape: Optional[Union[int, Tuple[int, ...]]] = None, gain: float = 1.0, *,
                   layout: Optional[str] = None, dtype: DTypeLike = np.float32, out: Optional[np.ndarray] = None,
                   rng: Any = None) -> np.ndarray:
    """Glorot & Bengio 2010: U(-a, a), a = gain sqrt(6 / (fan_in + fan_out))."""
    shape, dtype = _target(shape, out, dtype)
    bound = _validate.real(gain, "gain") * math.sqrt(3.0 / _fan(shape, "fan_avg", layout))
    return _uniform(shape, -bound, bound, dtype, out, rng)


@documented(_PARAMS, returns=_WEIGHT)
def kaiming_normal(shape: Optional[Union[int, Tuple[int, ...]]] = None, a: Any = 0.0, mode: str = "fan_in",
                   nonlinearity: str = "leaky_relu", *, layout: Optional[str] = None, dtype: DTypeLike = np.float32,
                   out: Optional[np.ndarray] = None, rng: Any = None) -> np.ndarray:
    """He et al. 2015: N(0, std^2), std = gain / sqrt(fan), gain = calculate_gain(nonlinearity, a); with relu
    that is the lecture's sqrt(2 / D_in)."""
    shape, dtype = _target(shape, out, dtype)
    std = calculate_gain(nonlinearity, _validate.real(a, "a")) / math.sqrt(_fan(shape, mode, layout))
    return _normal(shape, std, 0.0, dtype, out, rng)


@documented(_PARAMS, returns=_WEIGHT)
def kaiming_uniform(shape: Optional[Union[int, Tuple[int, ...]]] = None, a: Any = 0.0, mode: str = "fan_in",
                    nonlinearity: str = "leaky_relu", *, layout: Optional[str] = None, dtype: DTypeLike = np.float32,
                    out: Optional[np.ndarray] = None, rng: Any = None) -> np.ndarray:
    """He et al. 2015: U(-b, b), b = gain sqrt(3 / fan)."""
    shape, dtype = _target(shape, out, dtype)
    bound = calculate_gain(nonlinearity, _validate.real(a, "a")) * math.sqrt(3.0 / _fan(shape, mode, layout))
    return _uniform(shape, -bound, bound, dtype, out, rng)


@documented(_PARAMS, returns=_WEIGHT, scale=("float, default 1", "The target variance times fan (> 0)."),
            distribution=("{'truncated_normal', 'normal', 'uniform'}, default 'truncated_normal'",
                          "The distribution of the values."))
def variance_scaling(shape: Optional[Union[int, Tuple[int, ...]]] = None, scale: Any = 1.0, mode: str = "fan_in",
                     distribution: str = "truncated_normal", *, layout: Optional[str] = None,
                     dtype: DTypeLike = np.float32, out: Optional[np.ndarray] = None, rng: Any = None) -> np.ndarray:
    """Keras' VarianceScaling: variance scale / fan.  ``truncated_normal``: N(0, std^2) truncated at 2 std, with
    std = sqrt(scale / fan) / 0.8796 so that the truncated values have the target variance; ``normal``: std =
    sqrt(scale / fan); ``uniform``: U(-b, b), b = sqrt(3 scale / fan)."""
    scale = _positive("scale", scale)
    if distribution not in _DISTRIBUTIONS:
        raise ValueError(f"distribution: unknown {distribution!r}; expected one of {', '.join(_DISTRIBUTIONS)}")
    shape, dtype = _target(shape, out, dtype)
    var = scale / _fan(shape, mode, layout)
    if distribution == "truncated_normal":
        return _trunc(shape, math.sqrt(var) / _TRUNC2_STD, 0.0, -2.0, 2.0, dtype, out, rng)
    if distribution == "normal":
        return _normal(shape, math.sqrt(var), 0.0, dtype, out, rng)
    bound = math.sqrt(3.0 * var)
    return _uniform(shape, -bound, bound, dtype, out, rng)


@documented(_PARAMS, returns=_WEIGHT)
def lecun_normal(shape: Optional[Union[int, Tuple[int, ...]]] = None, *, layout: Optional[str] = None,
                 dtype: DTypeLike = np.float32, out: Optional[np.ndarray] = None, rng: Any = None) -> np.ndarray:
    """LeCun et al. 1998 (and SELU's init): variance 1 / fan_in, truncated normal as Keras."""
    return variance_scaling(shape, 1.0, "fan_in", "truncated_normal", layout=layout, dtype=dtype, out=out, rng=rng)


@documented(_PARAMS, returns=_WEIGHT)
def lecun_uniform(shape: Optional[Union[int, Tuple[int, ...]]] = None, *, layout: Optional[str] = None,
                  dtype: DTypeLike = np.float32, out: Optional[np.ndarray] = None, rng: Any = None) -> np.ndarray:
    """LeCun et al. 1998: U(-b, b), b = sqrt(3 / fan_in)."""
    return variance_scaling(shape, 1.0, "fan_in", "uniform", layout=layout, dtype=dtype, out=out, rng=rng)


@documented(_PARAMS, returns=_WEIGHT)
def orthogonal(shape: Optional[Union[int, Tuple[int, ...]]] = None, gain: float = 1.0, *,
               dtype: DTypeLike = np.float32, out: Optional[np.ndarray] = None, rng: Any = None) -> np.ndarray:
    """Saxe et al. 2013: a (semi-)orthogonal matrix times ``gain``.  The weight is flattened to
    (shape[0], prod(shape[1:])); its rows are orthonormal when rows <= columns, its columns otherwise.  Uniformly
    (Haar) distributed: a product of Householder reflections of Gaussian vectors (Stewart 1980), the law of the Q
    factor of a Gaussian matrix with the signs of R's diagonal folded in, without factorising one.  Computed in
    float32 for outputs of 4 bytes or fewer (orthonormal to about 1e-6), else in float64."""
    shape, dtype = _target(shape, out, dtype)
    if len(shape) < 2:
        raise ValueError(f"shape: orthogonal needs at least 2 dimensions, got {shape}")
    gain = _validate.real(gain, "gain")
    rows, cols = shape[0], math.prod(shape[1:])
    work = np.float32 if np.dtype(dtype).itemsize <= 4 else np.float64
    q = _haar_columns(as_generator(rng).normal((max(rows, cols), min(rows, cols)), dtype=work))
    if rows < cols:
        q = q.T
    q *= gain
    w = q.reshape(shape)
    if out is None:
        return w.astype(dtype, copy=False)
    np.copyto(out, w, casting="same_kind")
    return out


def _haar_columns(g, block=64):
    """The first k columns of H_1 H_2 ... H_k D for a Gaussian (m, k) matrix g, m >= k: a Haar-distributed matrix
    with orthonormal columns (Stewart, "The efficient generation of random orthogonal matrices", 1980).

    H_j reflects coordinates j.. m-1 and sends column j's x = g[j:, j] to -s ||x|| e_j (s the sign of x's first
    value), as Householder QR's j-th reflection does to a column that is Gaussian given the earlier ones; D =
    diag(-s) makes R's diagonal positive.  The reflections are accumulated from the last block of ``block`` to the
    first, each block as one update I - V T V' (T = inverse of striu(V'V) + diag(1 / tau): Joffrain et al. 2006),
    so the work is matrix products, about 4/3 m k^2 flops, half of a QR factorisation and its Q."""
    m, k = g.shape
    dt = g.dtype
    first = np.diagonal(g)  # each x's first value
    s = np.where(first >= 0, 1.0, -1.0)
    v = np.tril(g)  # column j: x below the diagonal, the reflection's vector once its head is replaced
    norm = np.sqrt(np.einsum("ij,ij->j", v, v, dtype=np.float64))
    head = first + s * norm  # v's first value, |head| >= ||x||; 0 only when x is all zeros
    reflect = head != 0
    v /= np.where(reflect, head, 1.0).astype(dt)  # scaled so that v[j, j] = 1
    v[np.arange(k), np.arange(k)] = 1
    v[:, ~reflect] = 0  # an all-zero x: no reflection (v = 0 drops out of V T V')
    inv_tau = np.where(reflect, np.einsum("ij,ij->j", v, v, dtype=np.float64) / 2, 1.0)  # tau = 2 / v'v
    q = np.eye(m, k, dtype=dt)
    for j0 in range((k - 1) // block * block, -1, -block):
        j1 = min(k, j0 + block)
        vb = v[j0:, j0:j1]
        a = q[j0:, j0:]  # the blocks after this one touched rows and columns >= j1 only
        t_inv = np.triu(vb.T @ vb, 1).astype(np.float64)
        t_inv[np.diag_indices(j1 - j0)] = inv_tau[j0:j1]
        a -= vb @ (np.linalg.inv(t_inv).astype(dt) @ (vb.T @ a))
    q *= (-s).astype(dt)
    return q


@documented(_PARAMS, returns=_WEIGHT, shape=("int or tuple of int, optional", "A 2-d shape; may be left out when "
                                                                               "``out`` is given."))
def identity(shape: Optional[Union[int, Tuple[int, ...]]] = None, gain: float = 1.0, *, dtype: DTypeLike = np.float32,
             out: Optional[np.ndarray] = None) -> np.ndarray:
    """``gain`` times the identity matrix (2-d; the rectangular part is zero), as PyTorch's ``eye_``."""
    shape, dtype = _target(shape, out, dtype)
    if len(shape) != 2:
        raise ValueError(f"shape: identity needs a 2-d weight, got {shape}")
    w = _validate.real(gain, "gain") * np.eye(*shape, dtype=np.float64)
    if out is None:
        return w.astype(dtype)
    np.copyto(out, w, casting="same_kind")
    return out


@documented(_PARAMS, returns=_WEIGHT, groups=("int, default 1", "Groups of a grouped convolution: out and in split "
                                                          "into this many blocks, each an identity."))
def dirac(shape: Optional[Union[int, Tuple[int, ...]]] = None, groups: int = 1, *, dtype: DTypeLike = np.float32,
          out: Optional[np.ndarray] = None) -> np.ndarray:
    """Convolution weights ``(out, in, *kernel)`` that pass their input through: in each of ``groups`` groups,
    output channel i copies input channel i at the kernel's centre (PyTorch's ``dirac_``)."""
    shape, dtype = _target(shape, out, dtype)
    if len(shape) not in (3, 4, 5):
        raise ValueError(f"shape: dirac needs a 3-, 4- or 5-d convolution weight, got {shape}")
    groups = _validate.integer(groups, "groups")
    if 0 in shape[2:]:
        raise ValueError(f"shape: dirac needs a kernel of at least one position, got {shape}")
    if groups < 1 or shape[0] % groups:
        raise ValueError(f"groups: must divide the {shape[0]} output channels, got {groups}")
    w = np.zeros(shape, dtype=np.float64)
    per_group = shape[0] // groups
    centre = tuple(k // 2 for k in shape[2:])
    for g in range(groups):
        for i in range(min(per_group, shape[1])):
            w[(g * per_group + i, i) + centre] = 1.0
    if out is None:
        return w.astype(dtype)
    np.copyto(out, w, casting="same_kind")
    return out


@documented(_PARAMS, returns=_WEIGHT, sparsity=("float, default 0.9", "The fraction of each column set to 0."),
            std=("float, default 0.01", "The standard deviation of the other entries."))
def sparse(shape: Optional[Union[int, Tuple[int, ...]]] = None, sparsity: float = 0.9, std: Any = 0.01, *,
           dtype: DTypeLike = np.float32, out: Optional[np.ndarray] = None, rng: Any = None) -> np.ndarray:
    """Martens 2010: a 2-d weight with N(0, std^2) values and, in every column, ceil(sparsity * rows) zeros at
    random rows (PyTorch's ``sparse_``)."""
    shape, dtype = _target(shape, out, dtype)
    if len(shape) != 2:
        raise ValueError(f"shape: sparse needs a 2-d weight, got {shape}")
    sparsity = _validate.real(sparsity, "sparsity", minimum=0.0, maximum=1.0)
    rows, cols = shape
    gen = as_generator(rng)
    w = gen.normal(shape, 0.0, std, dtype=np.float64)
    zeros_per_col = math.ceil(sparsity * rows)
    order = np.argsort(gen.uniform((rows, cols), dtype=np.float64), axis=0, kind="stable")
    np.put_along_axis(w, order[:zeros_per_col], 0.0, axis=0)
    if out is None:
        return w.astype(dtype)
    np.copyto(out, w, casting="same_kind")
    return out


# ---- data-dependent initialization --------------------------------------------------------------------------

def _check_network(weights, forward, x):
    if not isinstance(weights, (list, tuple)) or not weights:
        raise ValueError("weights: expected a non-empty list of weight arrays")
    for i, w in enumerate(weights):
        if not isinstance(w, np.ndarray) or not w.flags.writeable:
            raise TypeError(f"weights[{i}]: expected a writable numpy.ndarray (it is updated in place)")
    if not callable(forward):
        raise TypeError("forward: expected a callable forward(x) -> list of layer outputs")


def _layer_output(forward, x, i, n):
    outputs = forward(x)
    if len(outputs) != n:
        raise ValueError(f"forward: returned {len(outputs)} outputs for {n} weights (one per weight expected)")
    return np.asarray(outputs[i], dtype=np.float64)


@documented(_PARAMS, returns=("list of float", "The final output variance of each layer."),
            weights=("sequence of numpy.ndarray", "The network's weight arrays, updated in place."),
            forward=("callable", "``forward(x)`` runs the network on the batch ``x`` with the current weights and "
                                 "returns one output per weight: the output of that weight's layer (before or after "
                                 "its activation, as the paper allows)."),
            x=("array_like", "The batch the variances are measured on."),
            tol=("float, default 0.02", "How close to 1 each output variance is made."),
            max_iter=("int, default 10", "Rescaling passes per layer at most."),
            orthogonal_init=("bool, default True", "Start each weight from an orthogonal matrix (Saxe et al.)."),
            rng=_PARAMS["rng"])
def lsuv(weights: Sequence[np.ndarray], forward: Callable, x: ArrayLike, *, tol: float = 0.02, max_iter: int = 10,
         orthogonal_init: bool = True, rng: Any = None) -> List[Any]:
    """Layer-sequential unit-variance initialization (Mishkin & Matas 2016, "All you need is a good init").

    Layer by layer, from the first: the weight is made orthogonal, then divided by the standard deviation of its
    layer's output until that variance is within ``tol`` of 1.

    Examples
    --------
    ::

        W = [np.empty((256, 784), np.float32), np.empty((10, 256), np.float32)]
        def forward(x):
            h = x @ W[0].T
            return [h, fastnorm.relu(h) @ W[1].T]
        fastnorm.init.lsuv(W, forward, x_batch, rng=0)
    """
    _check_network(weights, forward, x)
    tol = _validate.real(tol, "tol", minimum=0.0)
    max_iter = _validate.integer(max_iter, "max_iter", 0, "an int >= 0")
    gen = as_generator(rng)
    variances = []
    for i, w in enumerate(weights):
        if orthogonal_init:
            orthogonal(gain=1.0, out=w, rng=gen)
        var = float(_layer_output(forward, x, i, len(weights)).var())
        for _ in range(max_iter):
            if abs(var - 1.0) <= tol or var == 0.0:
                break
            w /= np.asarray(math.sqrt(var), dtype=w.dtype)
            var = float(_layer_output(forward, x, i, len(weights)).var())
        variances.append(var)
    return variances


@documented(_PARAMS, returns=("list of tuple of float", "Per layer, the largest deviation of a unit's mean from 0 "
                                                       "and of its standard deviation from 1, measured after the "
                                                       "update."),
            weights=("sequence of numpy.ndarray", "Per layer, the weight, updated in place."),
            biases=("sequence of numpy.ndarray or None", "Per layer, the bias, updated in place (None for a layer "
                                                         "without one: then only the scale is set)."),
            forward=("callable", "``forward(x)`` returns each layer's pre-activation output (before its "
                                 "nonlinearity), computed with the current weights."),
            x=("array_like", "The batch the statistics are measured on."),
            output_axis=("int, default -1", "The unit axis of the outputs (-1 for (N, D), 1 for NCHW)."),
            layout=("{'out_in', 'in_out'}, default 'out_in'", "The weights' layout: which axis holds the units."),
            eps=("float, default 1e-8", "Added to each unit's variance before its square root."))
def data_dependent(weights: Sequence[np.ndarray], biases: Sequence[Optional[np.ndarray]], forward: Callable,
                   x: ArrayLike, *, output_axis: int = -1, layout: str = "out_in", eps: float = 1e-8) -> List[Any]:
    """Data-dependent initialization of Krähenbühl et al. 2016 (ICLR): layer by layer, each output unit's
    pre-activation is made zero-mean and unit-variance on the batch ``x``: with the mean mu and standard deviation
    sigma of a unit, W <- W / sigma and b <- (b - mu) / sigma.
    """
    _check_network(weights, forward, x)
    eps = _validate.real(eps, "eps", minimum=0.0)
    output_axis = _validate.integer(output_axis, "output_axis")
    if len(biases) != len(weights):
        raise ValueError(f"biases: expected {len(weights)} entries (None for a layer without bias)")
    if layout not in _LAYOUTS:
        raise ValueError(f"layout: unknown {layout!r}; expected one of {', '.join(_LAYOUTS)}")
    unit_axis = 0 if layout == "out_in" else 1
    report = []
    for i, (w, b) in enumerate(zip(weights, biases)):
        y = _layer_output(forward, x, i, len(weights))
        axes = tuple(a for a in range(y.ndim) if a != output_axis % y.ndim)
        m = moments(y, axis=axes)
        mu, sigma = m.mean, np.sqrt(m.var() + eps)
        shape = [1] * w.ndim
        shape[unit_axis] = -1
        w /= sigma.reshape(shape).astype(w.dtype)
        if b is not None:
            b[...] = ((b - mu) / sigma).astype(b.dtype)
        y = _layer_output(forward, x, i, len(weights))
        m = moments(y, axis=axes)
        report.append((float(np.abs(m.mean).max()), float(np.abs(np.sqrt(m.var()) - 1).max())))
    return report
