"""Layer classes over fastnorm's functional kernels, shaped like the PyTorch modules they mirror.

Constructor arguments come in PyTorch's order (``BatchNorm(num_features, eps, momentum, affine,
track_running_stats)``, ``LayerNorm(normalized_shape, eps, elementwise_affine, bias)``, ...), with fastnorm's own
options (``axis`` for channels-last data, a fused ``activation``, ``dtype``) by keyword after them.  Parameters
are ``weight`` and ``bias`` (also readable and writable as the lecture's ``gamma`` and ``beta``), buffers
``running_mean``, ``running_var`` and ``num_batches_tracked``, so ``state_dict()`` has PyTorch's keys:
``load_state_dict`` takes a PyTorch module's state dict (tensors or arrays), and ``torch_state_dict()`` gives one
that ``torch.nn.Module.load_state_dict`` takes.

A layer is called like a module (``y = layer(x)``, the same as ``layer.forward(x)``); ``backward(dy)`` returns dx
and leaves the parameter gradients in ``grads`` (keyed like the parameters); ``train()`` / ``eval()`` switch the
mode.  Arrays in, arrays out.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
from typing import Any, Dict, Optional, Tuple
from numpy.typing import ArrayLike, DTypeLike

from fastnorm import _validate
from fastnorm._docs import documented
from fastnorm._validate import integer, post_op, real
from fastnorm.activations import maxout, maxout_backward, prelu, prelu_backward
from fastnorm.group_norms import group_norm, group_norm_backward, instance_norm, instance_norm_backward
from fastnorm.normalization import batch_norm, batch_norm_backward
from fastnorm.row_norms import layer_norm, layer_norm_backward, rms_norm, rms_norm_backward

__all__ = ["Layer", "BatchNorm", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LayerNorm", "RMSNorm", "GroupNorm",
           "InstanceNorm", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "PReLU", "Maxout", "Dropout",
           "AlphaDropout", "ChannelDropout", "Dropout2d"]


def _post_op_kwargs(activation, negative_slope) -> Dict[str, Any]:
    """The fused activation's keyword arguments, validated now (a bad name fails at construction)."""
    post_op(activation, negative_slope)
    return {"activation": activation, "negative_slope": real(negative_slope, "negative_slope")}


def _to_numpy(value, name: str) -> np.ndarray:
    """A state value as an array: NumPy arrays as they are, PyTorch tensors through ``.detach().cpu()``."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        value = value.numpy()
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"state: {name} has dtype {arr.dtype}; expected numbers")
    return arr


# The constructor parameters the layers share, described once (fastnorm._docs), PyTorch's names and defaults.
_PARAMS = {
    "num_features": ("int", "C, the number of channels."),
    "eps": ("float, default 1e-5", "Added to the variance before its square root."),
    "momentum": ("float or None, default 0.1", "The running statistics' update weight, new = (1 - momentum) old + "
                                               "momentum batch; None: the cumulative average."),
    "affine": ("bool", "Learn a per-channel weight (scale, 1 at start) and bias (shift, 0 at start)."),
    "track_running_stats": ("bool", "Keep running_mean and running_var (and num_batches_tracked), updated in "
                                    "training and used in eval mode; without them the batch's own statistics are "
                                    "used in both modes."),
    "axis": ("int, default 1", "The channel axis: 1 for NCHW-style data, -1 for channels-last."),
    "activation": ("{None, 'relu', 'leaky_relu', 'silu', 'gelu'}, optional",
                   "An activation applied in the normalization's own pass (y = activation(norm(x)))."),
    "negative_slope": ("float, default 0.01", "leaky_relu's slope for negative inputs."),
    "dtype": ("data-type, default float32", "The parameters' and buffers' dtype."),
    "normalized_shape": ("int or tuple of int", "The shape of the trailing axes normalized together."),
    "elementwise_affine": ("bool, default True", "Learn a weight (and bias) of ``normalized_shape``."),
    "p": ("float, default 0.5", "The probability of dropping a value (or channel), in [0, 1)."),
    "generator": ("fastnorm.random.Generator, optional", "Where the masks come from; its state advances with every "
                                                          "training forward."),
    "seed": ("int, optional", "A seed for a new generator, when ``generator`` is not given."),
}

class Layer(ABC):
    """Base class: train/eval mode, parameters and buffers as named NumPy arrays, state dicts, ``__call__``."""

    _params: Tuple[str, ...] = ()   # names of learnable arrays (they get gradients)
    _buffers: Tuple[str, ...] = ()  # names of other state (running statistics)
    training: bool
    grads: Dict[str, np.ndarray]
    weight: Optional[np.ndarray]
    bias: Optional[np.ndarray]
    running_mean: Optional[np.ndarray]
    running_var: Optional[np.ndarray]
    num_batches_tracked: Optional[np.ndarray]

    def __init__(self) -> None:
        self.training = True
        self.grads = {}
        self._saved = None

    def __call__(self, x: ArrayLike) -> np.ndarray:
        return self.forward(x)

    @abstractmethod
    @documented({}, returns=("numpy.ndarray", "The output."), x=("array_like", "The input."))
    def forward(self, x: ArrayLike) -> np.ndarray:
        """The layer's output for ``x`` (keeping what ``backward`` needs)."""

    def train(self, mode: bool = True) -> "Layer":
        self.training = bool(mode)
        return self

    def eval(self) -> "Layer":
        return self.train(False)

    def parameters(self) -> Dict[str, Any]:
        return {name: getattr(self, name) for name in self._params if getattr(self, name) is not None}

    def state_dict(self) -> Dict[str, Any]:
        """Copies of the parameters and buffers as NumPy arrays, under PyTorch's names."""
        names = self._params + self._buffers
        return {n: np.array(getattr(self, n), copy=True) for n in names if getattr(self, n) is not None}

    def torch_state_dict(self) -> Dict[str, Any]:
        """``state_dict()`` as PyTorch tensors, for ``torch.nn.Module.load_state_dict``."""
        import torch
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.state_dict().items()}

    @documented({}, state=("dict", "Arrays (NumPy arrays or PyTorch tensors) by PyTorch's names."),
                strict=("bool, default True", "The keys must match exactly (else missing and unexpected keys are "
                                              "ignored)."))
    def load_state_dict(self, state: Dict[str, Any], strict: bool = True) -> None:
        """Copies ``state``'s values into this layer's arrays, cast to their dtypes."""
        names = [n for n in self._params + self._buffers if getattr(self, n) is not None]
        missing, unexpected = set(names) - set(state), set(state) - set(names)
        if strict and (missing or unexpected):
            raise ValueError(f"state: missing {sorted(missing)}, unexpected {sorted(unexpected)}")
        arrays = {n: _to_numpy(state[n], n) for n in names if n in state}
        for n, value in arrays.items():
            if value.shape != getattr(self, n).shape:
                raise ValueError(f"state: {n} has shape {value.shape}, expected {getattr(self, n).shape}")
        for n, value in arrays.items():  # all checked first: nothing changes when one is wrong
            getattr(self, n)[...] = value

    # the lecture's names for the affine parameters
    @property
    def gamma(self) -> Optional[np.ndarray]:
        return self.weight

    @gamma.setter
    def gamma(self, value: Optional[np.ndarray]) -> None:
        self.weight = value

    @property
    def beta(self) -> Optional[np.ndarray]:
        return self.bias

    @beta.setter
    def beta(self, value: Optional[np.ndarray]) -> None:
        self.bias = value

    def _create_state(self, count: int, affine: bool, track_running_stats: bool, dtype: DTypeLike) -> None:
        """weight = 1 and bias = 0 when ``affine``; running_mean = 0, running_var = 1 and a batch counter when
        ``track_running_stats``: PyTorch's initial state of a batch or instance norm."""
        self.weight = np.ones(count, dtype) if affine else None
        self.bias = np.zeros(count, dtype) if affine else None
        self.running_mean = np.zeros(count, dtype) if track_running_stats else None
        self.running_var = np.ones(count, dtype) if track_running_stats else None
        self.num_batches_tracked = np.array(0, dtype=np.int64) if track_running_stats else None

    def _set_affine_grads(self, dweight, dbias=None):
        """Keeps the parameter gradients (none for parameters the layer does not have)."""
        self.grads = {}
        if getattr(self, "weight", None) is not None and dweight is not None:
            self.grads["weight"] = np.asarray(dweight).reshape(self.weight.shape).astype(self.weight.dtype)
        if getattr(self, "bias", None) is not None and dbias is not None:
            self.grads["bias"] = np.asarray(dbias).reshape(self.bias.shape).astype(self.bias.dtype)

    def _need_saved(self):
        if self._saved is None:
            raise RuntimeError(f"{type(self).__name__}.backward: call forward first")
        return self._saved

    def _check_channels(self, x, count: int, axis: int, what: str = "num_features"):
        x = np.asarray(x)
        if x.ndim < 2 or not -x.ndim <= axis < x.ndim or x.shape[axis] != count:
            raise ValueError(f"x: expected {what}={count} channels along axis {axis} of a batch (N, C, ...), got "
                             f"shape {x.shape}")
        return x


@documented(_PARAMS, affine=("bool, default True", _PARAMS["affine"][1]),
            track_running_stats=("bool, default True", _PARAMS["track_running_stats"][1]))
class BatchNorm(Layer):
    """Batch normalization (Ioffe & Szegedy 2015) over every axis but ``axis``, with running statistics.

    ``BatchNorm(num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True)`` as PyTorch's
    BatchNorm1d/2d/3d: weight = 1, bias = 0 at start (``affine=False``: neither); running_mean = 0,
    running_var = 1.  Training uses the batch's statistics and updates the running ones (``momentum=None``: the
    cumulative average over ``num_batches_tracked``); eval uses the running ones, or the batch's without
    ``track_running_stats``.  An empty training batch gives an empty output and leaves the statistics as they were
    (only the counter moves, as in PyTorch).  Keywords: ``axis`` (the channel axis, 1 or -1 for channels-last),
    ``activation`` fused after the normalization (see :func:`fastnorm.batch_norm`), ``dtype``.
    """
    weight: Optional[np.ndarray]
    bias: Optional[np.ndarray]
    _params = ("weight", "bias")
    _buffers = ("running_mean", "running_var", "num_batches_tracked")
    _ranks: Tuple[int, ...] = ()  # input ranks accepted (BatchNorm1d/2d/3d); empty: any >= 2
    num_features: int
    axis: int
    eps: float
    momentum: Optional[float]
    affine: bool
    track_running_stats: bool
    running_mean: Optional[np.ndarray]
    running_var: Optional[np.ndarray]
    num_batches_tracked: Optional[np.ndarray]
    post: Dict[str, Any]

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1, affine: bool = True,
                 track_running_stats: bool = True, *, axis: int = 1, activation: Optional[str] = None,
                 negative_slope: float = 0.01, dtype: DTypeLike = np.float32) -> None:
        super().__init__()
        num_features = integer(num_features, "num_features", 1, "a positive int")
        self.num_features, self.axis, self.eps, self.momentum = num_features, axis, eps, momentum
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)
        self.post = _post_op_kwargs(activation, negative_slope)
        self._create_state(num_features, affine, track_running_stats, dtype)

    def forward(self, x: ArrayLike) -> np.ndarray:
        x = self._check_channels(x, self.num_features, self.axis)
        if self._ranks and x.ndim not in self._ranks:
            raise ValueError(f"x: {type(self).__name__} expects {' or '.join(f'{r}-d' for r in self._ranks)} input, "
                             f"got shape {x.shape}")
        batch_stats = self.training or self.running_mean is None
        if x.size == 0 and batch_stats:  # nothing to normalize or to learn from
            if self.training and self.num_batches_tracked is not None:
                self.num_batches_tracked += 1
            self._saved = (x, None, None, True)
            return np.empty(x.shape, x.dtype if x.dtype.kind == "f" else np.float64)
        y, mean, rstd = batch_norm(x, gamma=self.weight, beta=self.bias, axis=self.axis, training=batch_stats,
                                   running_mean=self.running_mean if self.training or not batch_stats else None,
                                   running_var=self.running_var if self.training or not batch_stats else None,
                                   momentum=self.momentum, eps=self.eps,
                                   num_batches_tracked=self.num_batches_tracked if self.training else None,
                                   return_stats=True, **self.post)
        self._saved = (x, mean, rstd, batch_stats)
        return y

    def backward(self, dy: ArrayLike) -> np.ndarray:
        x, mean, rstd, batch_stats = self._need_saved()
        if mean is None:  # an empty batch
            self._set_affine_grads(np.zeros(self.num_features), np.zeros(self.num_features))
            return np.zeros(x.shape, x.dtype if x.dtype.kind == "f" else np.float64)
        dx, dweight, dbias = batch_norm_backward(dy, x, mean, rstd, self.weight, axis=self.axis,
                                                 training=batch_stats, beta=self.bias, **self.post)
        self._set_affine_grads(dweight, dbias)
        return dx

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}, axis={self.axis}, "
                f"training={self.training})")


@documented(_PARAMS, affine=("bool, default True", _PARAMS["affine"][1]),
            track_running_stats=("bool, default True", _PARAMS["track_running_stats"][1]))
class BatchNorm1d(BatchNorm):
    """BatchNorm on (N, C) or (N, C, L) input, as PyTorch's BatchNorm1d."""
    _ranks = (2, 3)


@documented(_PARAMS, affine=("bool, default True", _PARAMS["affine"][1]),
            track_running_stats=("bool, default True", _PARAMS["track_running_stats"][1]))
class BatchNorm2d(BatchNorm):
    """BatchNorm on (N, C, H, W) input (channels-last with ``axis=-1``), as PyTorch's BatchNorm2d."""
    _ranks = (4,)


@documented(_PARAMS, affine=("bool, default True", _PARAMS["affine"][1]),
            track_running_stats=("bool, default True", _PARAMS["track_running_stats"][1]))
class BatchNorm3d(BatchNorm):
    """BatchNorm on (N, C, D, H, W) input, as PyTorch's BatchNorm3d."""
    _ranks = (5,)


def _normalized_shape(value) -> Tuple[Any, ...]:
    shape = _validate.shape(value, "normalized_shape")
    if not shape or min(shape) < 1:
        raise ValueError(f"normalized_shape: expected positive sizes, got {value}")
    return shape


@documented(_PARAMS, bias=("bool, default True", "Learn a bias too (with ``elementwise_affine``)."))
class LayerNorm(Layer):
    """Layer normalization (Ba et al. 2016) over the trailing axes of shape ``normalized_shape``.

    ``LayerNorm(normalized_shape, eps=1e-5, elementwise_affine=True, bias=True)`` as PyTorch's: weight = 1 and
    bias = 0 at start (``elementwise_affine=False``: neither; ``bias=False``: no bias).  Same in train and eval.
    """
    weight: Optional[np.ndarray]
    bias: Optional[np.ndarray]
    _params = ("weight", "bias")
    normalized_shape: Tuple[int, ...]
    eps: float
    elementwise_affine: bool
    post: Dict[str, Any]

    def __init__(self, normalized_shape: Any, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True,
                 *, activation: Optional[str] = None, negative_slope: float = 0.01,
                 dtype: DTypeLike = np.float32) -> None:
        super().__init__()
        shape = _normalized_shape(normalized_shape)
        self.normalized_shape, self.eps, self.elementwise_affine = shape, eps, bool(elementwise_affine)
        self.post = _post_op_kwargs(activation, negative_slope)
        self.weight = np.ones(shape, dtype) if elementwise_affine else None
        self.bias = np.zeros(shape, dtype) if elementwise_affine and bias else None

    def _axis(self):
        return tuple(range(-len(self.normalized_shape), 0))

    def forward(self, x: ArrayLike) -> np.ndarray:
        y, mean, rstd = layer_norm(x, self.weight, self.bias, axis=self._axis(), eps=self.eps, return_stats=True,
                                   **self.post)
        self._saved = (np.asarray(x), mean, rstd)
        return y

    def backward(self, dy: ArrayLike) -> np.ndarray:
        x, mean, rstd = self._need_saved()
        dx, dweight, dbias = layer_norm_backward(dy, x, mean, rstd, self.weight, axis=self._axis(), beta=self.bias,
                                                 **self.post)
        self._set_affine_grads(dweight, dbias)
        return dx

    def __repr__(self) -> str:
        return (f"LayerNorm({self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
                f"bias={self.bias is not None})")


@documented(_PARAMS, eps=("float, optional", "Added to the mean square; None: the dtype's machine epsilon."))
class RMSNorm(Layer):
    """RMS normalization (Zhang & Sennrich 2019) over the trailing axes of shape ``normalized_shape``.

    ``RMSNorm(normalized_shape, eps=None, elementwise_affine=True)`` as PyTorch's: weight = 1 at start;
    ``eps=None`` is the dtype's machine epsilon."""
    weight: Optional[np.ndarray]
    bias: Optional[np.ndarray]
    _params = ("weight",)
    normalized_shape: Tuple[int, ...]
    eps: Optional[float]
    elementwise_affine: bool

    def __init__(self, normalized_shape: Any, eps: Optional[float] = None, elementwise_affine: bool = True, *,
                 dtype: DTypeLike = np.float32) -> None:
        super().__init__()
        shape = _normalized_shape(normalized_shape)
        self.normalized_shape, self.eps, self.elementwise_affine = shape, eps, bool(elementwise_affine)
        self.weight = np.ones(shape, dtype) if elementwise_affine else None
        self.bias = None

    def _axis(self):
        return tuple(range(-len(self.normalized_shape), 0))

    def forward(self, x: ArrayLike) -> np.ndarray:
        y, rstd = rms_norm(x, self.weight, axis=self._axis(), eps=self.eps, return_stats=True)
        self._saved = (np.asarray(x), rstd)
        return y

    def backward(self, dy: ArrayLike) -> np.ndarray:
        x, rstd = self._need_saved()
        dx, dweight = rms_norm_backward(dy, x, rstd, self.weight, axis=self._axis())
        self._set_affine_grads(dweight)
        return dx

    def __repr__(self) -> str:
        return f"RMSNorm({self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine})"


@documented(_PARAMS, num_groups=("int", "Groups of consecutive channels, a divisor of ``num_channels``."),
            num_channels=("int", "C, the number of channels."), affine=("bool, default True", _PARAMS["affine"][1]))
class GroupNorm(Layer):
    """Group normalization (Wu & He 2018): ``num_groups`` groups of the ``num_channels`` channels along ``axis``
    (batch axis 0).  ``GroupNorm(num_groups, num_channels, eps=1e-5, affine=True)`` as PyTorch's: weight = 1 and
    bias = 0 per channel at start.  Same in train and eval mode."""
    weight: Optional[np.ndarray]
    bias: Optional[np.ndarray]
    _params = ("weight", "bias")
    num_groups: int
    num_channels: int
    axis: int
    eps: float
    affine: bool
    post: Dict[str, Any]

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True, *, axis: int = 1,
                 activation: Optional[str] = None, negative_slope: float = 0.01, dtype: DTypeLike = np.float32) -> None:
        super().__init__()
        num_channels = integer(num_channels, "num_channels", 1, "a positive int")
        num_groups = integer(num_groups, "num_groups", 1, "a positive int")
        if num_channels % num_groups:
            raise ValueError(f"num_groups: {num_groups} does not divide the {num_channels} channels")
        self.num_groups, self.num_channels, self.axis, self.eps = num_groups, num_channels, axis, eps
        self.affine = bool(affine)
        self.post = _post_op_kwargs(activation, negative_slope)
        self.weight = np.ones(num_channels, dtype) if affine else None
        self.bias = np.zeros(num_channels, dtype) if affine else None

    def forward(self, x: ArrayLike) -> np.ndarray:
        x = self._check_channels(x, self.num_channels, self.axis, "num_channels")
        y, mean, rstd = group_norm(x, self.num_groups, self.weight, self.bias, axis=self.axis, eps=self.eps,
                                   return_stats=True, **self.post)
        self._saved = (x, mean, rstd)
        return y

    def backward(self, dy: ArrayLike) -> np.ndarray:
        x, mean, rstd = self._need_saved()
        dx, dweight, dbias = group_norm_backward(dy, x, mean, rstd, self.num_groups, self.weight, axis=self.axis,
                                                 beta=self.bias, **self.post)
        self._set_affine_grads(dweight, dbias)
        return dx

    def __repr__(self) -> str:
        return (f"GroupNorm({self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
                f"axis={self.axis})")


@documented(_PARAMS, momentum=("float, default 0.1", "The running statistics' update weight."),
            affine=("bool, default False", _PARAMS["affine"][1]),
            track_running_stats=("bool, default False", _PARAMS["track_running_stats"][1]))
class InstanceNorm(Layer):
    """Instance normalization (Ulyanov et al. 2016) per (sample, channel).

    ``InstanceNorm(num_features, eps=1e-5, momentum=0.1, affine=False, track_running_stats=False)`` as PyTorch's
    InstanceNorm1d/2d/3d: ``affine`` adds weight and bias; ``track_running_stats`` keeps running statistics, used
    in eval mode (and a ``num_batches_tracked`` that, as PyTorch's, stays 0: the momentum is always used).  Input
    is batched, (N, C, ...) with the channels on ``axis``; InstanceNorm1d/2d/3d also take an unbatched (C, ...)
    input, as PyTorch does."""
    weight: Optional[np.ndarray]
    bias: Optional[np.ndarray]
    _params = ("weight", "bias")
    _buffers = ("running_mean", "running_var", "num_batches_tracked")
    _rank = 0  # the batched rank of InstanceNorm1d/2d/3d (one less: unbatched)
    num_features: int
    axis: int
    eps: float
    momentum: float
    affine: bool
    track_running_stats: bool
    running_mean: Optional[np.ndarray]
    running_var: Optional[np.ndarray]
    num_batches_tracked: Optional[np.ndarray]

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = False,
                 track_running_stats: bool = False, *, axis: int = 1, dtype: DTypeLike = np.float32) -> None:
        super().__init__()
        num_features = integer(num_features, "num_features", 1, "a positive int")
        self.num_features, self.axis, self.eps, self.momentum = num_features, axis, eps, momentum
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)
        self._create_state(num_features, affine, track_running_stats, dtype)

    def forward(self, x: ArrayLike) -> np.ndarray:
        x = np.asarray(x)
        unbatched = bool(self._rank) and x.ndim == self._rank - 1
        if unbatched:
            x = x[None]
        elif self._rank and x.ndim != self._rank:
            raise ValueError(f"x: {type(self).__name__} expects {self._rank}-d (batched) or {self._rank - 1}-d "
                             f"(unbatched) input, got shape {x.shape}")
        x = self._check_channels(x, self.num_features, self.axis)
        use_input_stats = self.training or self.running_mean is None
        y, mean, rstd = instance_norm(x, gamma=self.weight, beta=self.bias, axis=self.axis,
                                      use_input_stats=use_input_stats,
                                      running_mean=self.running_mean if self.training or not use_input_stats
                                      else None,
                                      running_var=self.running_var if self.training or not use_input_stats
                                      else None,
                                      momentum=self.momentum, eps=self.eps, return_stats=True)
        self._saved = (x, mean, rstd, use_input_stats, unbatched)
        return y[0] if unbatched else y

    def backward(self, dy: ArrayLike) -> np.ndarray:
        x, mean, rstd, use_input_stats, unbatched = self._need_saved()
        dy = np.asarray(dy)[None] if unbatched else dy
        dx, dweight, dbias = instance_norm_backward(dy, x, mean, rstd, self.weight, axis=self.axis,
                                                    use_input_stats=use_input_stats)
        self._set_affine_grads(dweight, dbias)
        return dx[0] if unbatched else dx

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}, axis={self.axis})")


@documented(_PARAMS, momentum=("float, default 0.1", "The running statistics' update weight."),
            affine=("bool, default False", _PARAMS["affine"][1]),
            track_running_stats=("bool, default False", _PARAMS["track_running_stats"][1]))
class InstanceNorm1d(InstanceNorm):
    """InstanceNorm on (N, C, L) or unbatched (C, L) input, as PyTorch's InstanceNorm1d."""
    _rank = 3


@documented(_PARAMS, momentum=("float, default 0.1", "The running statistics' update weight."),
            affine=("bool, default False", _PARAMS["affine"][1]),
            track_running_stats=("bool, default False", _PARAMS["track_running_stats"][1]))
class InstanceNorm2d(InstanceNorm):
    """InstanceNorm on (N, C, H, W) or unbatched (C, H, W) input, as PyTorch's InstanceNorm2d."""
    _rank = 4


@documented(_PARAMS, momentum=("float, default 0.1", "The running statistics' update weight."),
            affine=("bool, default False", _PARAMS["affine"][1]),
            track_running_stats=("bool, default False", _PARAMS["track_running_stats"][1]))
class InstanceNorm3d(InstanceNorm):
    """InstanceNorm on (N, C, D, H, W) or unbatched (C, D, H, W) input, as PyTorch's InstanceNorm3d."""
    _rank = 5


@documented(_PARAMS, num_parameters=("int, default 1", "1 (one slope) or the number of channels along ``axis``."),
            init=("float, default 0.25", "The slopes' starting value."))
class PReLU(Layer):
    """Parametric ReLU (He et al. 2015): ``PReLU(num_parameters=1, init=0.25)`` as PyTorch's, one learned slope
    (``weight``, also readable as ``alpha``) or one per channel along ``axis``."""
    weight: np.ndarray  # type: ignore[assignment]
    _params = ("weight",)
    axis: int

    def __init__(self, num_parameters: int = 1, init: float = 0.25, *, axis: int = 1,
                 dtype: DTypeLike = np.float32) -> None:
        super().__init__()
        num_parameters = integer(num_parameters, "num_parameters", 1, "a positive int")
        self.axis = axis
        self.weight = np.full(num_parameters, real(init, "init"), dtype=dtype)

    @property
    def alpha(self) -> np.ndarray:
        return self.weight

    def forward(self, x: ArrayLike) -> np.ndarray:
        self._saved = np.asarray(x)
        return prelu(x, self._slopes(), axis=self.axis)

    def backward(self, dy: ArrayLike) -> np.ndarray:
        x = self._need_saved()
        dx, dalpha = prelu_backward(dy, x, self._slopes(), axis=self.axis)
        self._set_affine_grads(dalpha)
        return dx

    def _slopes(self):
        return self.weight[0] if self.weight.size == 1 else self.weight

    def __repr__(self) -> str:
        return f"PReLU(num_parameters={self.weight.size}, axis={self.axis})"


@documented(_PARAMS, pieces=("int", "The size of each group the maximum is taken over."),
            axis=("int, default 1", "The axis of the groups."))
class Maxout(Layer):
    """Maxout (Goodfellow et al. 2013): the maximum over groups of ``pieces`` consecutive entries along ``axis``.
    No parameters; put it after a linear layer with pieces times as many outputs."""
    pieces: int
    axis: int

    def __init__(self, pieces: int, *, axis: int = 1) -> None:
        super().__init__()
        self.pieces, self.axis = integer(pieces, "pieces", 1, "a positive int"), axis

    def forward(self, x: ArrayLike) -> np.ndarray:
        self._saved = np.asarray(x)
        return maxout(x, self.pieces, axis=self.axis)

    def backward(self, dy: ArrayLike) -> np.ndarray:
        return maxout_backward(dy, self._need_saved(), self.pieces, axis=self.axis)

    def __repr__(self) -> str:
        return f"Maxout(pieces={self.pieces}, axis={self.axis})"


@documented(_PARAMS)
class Dropout(Layer):
    """Dropout (Srivastava et al. 2014) as PyTorch's ``Dropout(p=0.5)``: in training each value is zeroed with
    probability p and the others scaled by 1 / (1 - p); in eval mode the identity.  The mask comes from
    ``generator`` (a :class:`fastnorm.random.Generator`, or ``seed`` for a new one) and is regenerated in the
    backward, never stored."""
    p: float
    _kind = "dropout"

    def __init__(self, p: float = 0.5, *, generator: Optional[Any] = None, seed: Optional[int] = None) -> None:
        super().__init__()
        from fastnorm.regularization import _probability
        from fastnorm.random import Generator
        self.p = _probability(p)
        self.generator = generator if generator is not None else Generator(seed)

    def forward(self, x: ArrayLike) -> np.ndarray:
        y, state = self._apply(x)
        self._saved = state
        return y

    def _apply(self, x):
        from fastnorm import regularization as d
        f = d.dropout if self._kind == "dropout" else d.alpha_dropout
        return f(x, self.p, generator=self.generator, training=self.training, return_state=True)

    def backward(self, dy: ArrayLike) -> np.ndarray:
        from fastnorm import regularization as d
        if self._saved is None and not self.training:
            return d.dropout_backward(dy, None)
        state = self._need_saved()
        f = d.dropout_backward if self._kind == "dropout" else d.alpha_dropout_backward
        return f(dy, state)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p}, training={self.training})"


@documented(_PARAMS)
class AlphaDropout(Dropout):
    """Alpha dropout for SELU networks (Klambauer et al. 2017), as PyTorch's ``AlphaDropout(p=0.5)``: dropped
    values take SELU's saturation value and an affine map keeps zero mean and unit variance."""
    _kind = "alpha"


@documented(_PARAMS, axis=("int, default 1", "The channel axis: 1 for NCHW-style data, -1 for channels-last."))
class ChannelDropout(Dropout):
    """Channel dropout (PyTorch's Dropout1d / 2d / 3d): whole channels of a sample (along ``axis``, 1 for NCHW,
    -1 for channels-last) zeroed with probability p, the others scaled by 1 / (1 - p)."""
    axis: int

    def __init__(self, p: float = 0.5, *, axis: int = 1, generator: Optional[Any] = None,
                 seed: Optional[int] = None) -> None:
        super().__init__(p, generator=generator, seed=seed)
        self.axis = axis

    def _apply(self, x):
        from fastnorm.regularization import channel_dropout
        return channel_dropout(x, self.p, axis=self.axis, generator=self.generator, training=self.training,
                               return_state=True)

    def backward(self, dy: ArrayLike) -> np.ndarray:
        from fastnorm.regularization import channel_dropout_backward
        if self._saved is None and not self.training:
            return channel_dropout_backward(dy, None)
        return channel_dropout_backward(dy, self._need_saved(), axis=self.axis)

    def __repr__(self) -> str:
        return f"ChannelDropout(p={self.p}, axis={self.axis}, training={self.training})"


Dropout2d = ChannelDropout
