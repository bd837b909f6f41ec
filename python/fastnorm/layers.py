"""Layer classes over fastnorm's functional kernels: parameters, their gradients, state and train/eval mode.

Each layer has ``forward(x)`` and ``backward(dy) -> dx`` (the forward keeps what the backward needs: the input,
or for batch norm the input and its mean and rstd), gradients of its parameters in ``grads`` after a backward,
``train()`` / ``eval()``, and ``state_dict()`` / ``load_state_dict()`` with plain NumPy arrays.
"""
from __future__ import annotations

import numpy as np

from fastnorm import _validate
from fastnorm._validate import integer, real
from fastnorm.activations import maxout, maxout_backward, prelu, prelu_backward
from fastnorm.normalization import _post_op  # noqa: F401  (validation of a fused activation)
from fastnorm.normalization import (batch_norm, batch_norm_backward, group_norm, group_norm_backward,
                                    instance_norm, instance_norm_backward, layer_norm, layer_norm_backward,
                                    rms_norm, rms_norm_backward)

__all__ = ["Layer", "BatchNorm", "LayerNorm", "RMSNorm", "GroupNorm", "InstanceNorm", "PReLU", "Maxout"]


def _post_op_kwargs(activation, negative_slope) -> dict:
    """The fused activation's keyword arguments, validated now (a bad name fails at construction)."""
    _post_op(activation, negative_slope)
    return {"activation": activation, "negative_slope": real(negative_slope, "negative_slope")}


class Layer:
    """Base class: train/eval mode, parameters and buffers as named NumPy arrays, state dicts."""

    _params: tuple = ()   # names of learnable arrays (they get gradients)
    _buffers: tuple = ()  # names of other state (running statistics)

    def __init__(self):
        self.training = True
        self.grads: dict = {}
        self._saved = None

    def train(self, mode: bool = True) -> "Layer":
        self.training = bool(mode)
        return self

    def eval(self) -> "Layer":
        return self.train(False)

    def parameters(self) -> dict:
        return {name: getattr(self, name) for name in self._params if getattr(self, name) is not None}

    def state_dict(self) -> dict:
        """Copies of the parameters and buffers, by name."""
        names = self._params + self._buffers
        return {n: np.array(getattr(self, n), copy=True) for n in names if getattr(self, n) is not None}

    def load_state_dict(self, state: dict) -> None:
        """Copies ``state``'s arrays into this layer's (same names, shapes; cast to this layer's dtypes)."""
        names = [n for n in self._params + self._buffers if getattr(self, n) is not None]
        missing, unexpected = set(names) - set(state), set(state) - set(names)
        if missing or unexpected:
            raise ValueError(f"state: missing {sorted(missing)}, unexpected {sorted(unexpected)}")
        for n in names:
            current, value = getattr(self, n), np.asarray(state[n])
            if value.shape != current.shape:
                raise ValueError(f"state: {n} has shape {value.shape}, expected {current.shape}")
            current[...] = value

    def _set_affine_grads(self, dgamma, dbeta=None):
        """Keeps the parameter gradients of a normalization layer (none without affine parameters)."""
        self.grads = {} if self.gamma is None else {"gamma": dgamma, **({} if dbeta is None else {"beta": dbeta})}

    def _need_saved(self):
        if self._saved is None:
            raise RuntimeError(f"{type(self).__name__}.backward: call forward first")
        return self._saved


class BatchNorm(Layer):
    """Batch normalization (Ioffe & Szegedy 2015) over every axis but ``axis``, with running statistics.

    gamma = 1, beta = 0 at start (``affine=False``: neither); running_mean = 0, running_var = 1.  In training mode
    the forward uses the batch's statistics and updates the running ones (see :func:`fastnorm.batch_norm`); in
    eval mode it uses the running ones.  ``activation`` ("relu", "leaky_relu", "silu", "gelu") is fused after the
    normalization, forward and backward, as in :func:`fastnorm.batch_norm`.
    """
    _params = ("gamma", "beta")
    _buffers = ("running_mean", "running_var", "num_batches_tracked")

    def __init__(self, num_features: int, *, axis: int = 1, eps: float = 1e-5, momentum=0.1, affine: bool = True,
                 activation=None, negative_slope: float = 0.01, dtype=np.float32):
        super().__init__()
        num_features = integer(num_features, "num_features", 1, "a positive int")
        self.num_features, self.axis, self.eps, self.momentum = num_features, axis, eps, momentum
        self.post = _post_op_kwargs(activation, negative_slope)
        self.gamma = np.ones(num_features, dtype) if affine else None
        self.beta = np.zeros(num_features, dtype) if affine else None
        self.running_mean = np.zeros(num_features, dtype)
        self.running_var = np.ones(num_features, dtype)
        self.num_batches_tracked = np.array(0, dtype=np.int64)

    def forward(self, x):
        y, mean, rstd = batch_norm(x, gamma=self.gamma, beta=self.beta, axis=self.axis, training=self.training,
                                   running_mean=self.running_mean, running_var=self.running_var,
                                   momentum=self.momentum, eps=self.eps,
                                   num_batches_tracked=self.num_batches_tracked if self.training else None,
                                   return_stats=True, **self.post)
        self._saved = (np.asarray(x), mean, rstd, self.training)
        return y

    def backward(self, dy):
        x, mean, rstd, training = self._need_saved()
        dx, dgamma, dbeta = batch_norm_backward(dy, x, mean, rstd, self.gamma, axis=self.axis, training=training,
                                                beta=self.beta, **self.post)
        self._set_affine_grads(dgamma, dbeta)
        return dx

    def __repr__(self):
        return (f"BatchNorm({self.num_features}, axis={self.axis}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.gamma is not None}, training={self.training})")


class LayerNorm(Layer):
    """Layer normalization (Ba et al. 2016) over the trailing axes of shape ``normalized_shape``; gamma = 1 and
    beta = 0 at start (``affine=False``: neither).  Same in train and eval mode."""
    _params = ("gamma", "beta")

    def __init__(self, normalized_shape, *, eps: float = 1e-5, affine: bool = True, activation=None,
                 negative_slope: float = 0.01, dtype=np.float32):
        super().__init__()
        shape = _validate.shape(normalized_shape, "normalized_shape")
        if not shape or min(shape) < 1:
            raise ValueError(f"normalized_shape: expected positive sizes, got {normalized_shape}")
        self.normalized_shape, self.eps = shape, eps
        self.post = _post_op_kwargs(activation, negative_slope)
        self.gamma = np.ones(shape, dtype) if affine else None
        self.beta = np.zeros(shape, dtype) if affine else None

    def _axis(self):
        return tuple(range(-len(self.normalized_shape), 0))

    def forward(self, x):
        y, mean, rstd = layer_norm(x, self.gamma, self.beta, axis=self._axis(), eps=self.eps, return_stats=True,
                                   **self.post)
        self._saved = (np.asarray(x), mean, rstd)
        return y

    def backward(self, dy):
        x, mean, rstd = self._need_saved()
        dx, dgamma, dbeta = layer_norm_backward(dy, x, mean, rstd, self.gamma, axis=self._axis(), beta=self.beta,
                                                **self.post)
        self._set_affine_grads(dgamma, dbeta)
        return dx

    def __repr__(self):
        return f"LayerNorm({self.normalized_shape}, eps={self.eps}, affine={self.gamma is not None})"


class RMSNorm(Layer):
    """RMS normalization (Zhang & Sennrich 2019) over the trailing axes of shape ``normalized_shape``; gamma = 1
    at start.  ``eps=None``: the dtype's machine epsilon."""
    _params = ("gamma",)

    def __init__(self, normalized_shape, *, eps=None, affine: bool = True, dtype=np.float32):
        super().__init__()
        shape = _validate.shape(normalized_shape, "normalized_shape")
        if not shape or min(shape) < 1:
            raise ValueError(f"normalized_shape: expected positive sizes, got {normalized_shape}")
        self.normalized_shape, self.eps = shape, eps
        self.gamma = np.ones(shape, dtype) if affine else None

    def _axis(self):
        return tuple(range(-len(self.normalized_shape), 0))

    def forward(self, x):
        y, rstd = rms_norm(x, self.gamma, axis=self._axis(), eps=self.eps, return_stats=True)
        self._saved = (np.asarray(x), rstd)
        return y

    def backward(self, dy):
        x, rstd = self._need_saved()
        dx, dgamma = rms_norm_backward(dy, x, rstd, self.gamma, axis=self._axis())
        self._set_affine_grads(dgamma)
        return dx

    def __repr__(self):
        return f"RMSNorm({self.normalized_shape}, eps={self.eps}, affine={self.gamma is not None})"


class GroupNorm(Layer):
    """Group normalization (Wu & He 2018): ``num_groups`` groups of the ``num_channels`` channels along ``axis``
    (batch axis 0); gamma = 1 and beta = 0 per channel at start.  Same in train and eval mode."""
    _params = ("gamma", "beta")

    def __init__(self, num_groups: int, num_channels: int, *, axis: int = 1, eps: float = 1e-5,
                 affine: bool = True, activation=None, negative_slope: float = 0.01, dtype=np.float32):
        super().__init__()
        num_channels = integer(num_channels, "num_channels", 1, "a positive int")
        num_groups = integer(num_groups, "num_groups", 1, "a positive int")
        if num_channels % num_groups:
            raise ValueError(f"num_groups: {num_groups} does not divide the {num_channels} channels")
        self.num_groups, self.num_channels, self.axis, self.eps = num_groups, num_channels, axis, eps
        self.post = _post_op_kwargs(activation, negative_slope)
        self.gamma = np.ones(num_channels, dtype) if affine else None
        self.beta = np.zeros(num_channels, dtype) if affine else None

    def forward(self, x):
        y, mean, rstd = group_norm(x, self.num_groups, self.gamma, self.beta, axis=self.axis, eps=self.eps,
                                   return_stats=True, **self.post)
        self._saved = (np.asarray(x), mean, rstd)
        return y

    def backward(self, dy):
        x, mean, rstd = self._need_saved()
        dx, dgamma, dbeta = group_norm_backward(dy, x, mean, rstd, self.num_groups, self.gamma, axis=self.axis,
                                                beta=self.beta, **self.post)
        self._set_affine_grads(dgamma, dbeta)
        return dx

    def __repr__(self):
        return f"GroupNorm({self.num_groups}, {self.num_channels}, axis={self.axis}, eps={self.eps})"


class InstanceNorm(Layer):
    """Instance normalization (Ulyanov et al. 2016) per (sample, channel).  ``affine`` adds gamma/beta (off by
    default, as PyTorch); ``track_running_stats`` keeps running statistics, used in eval mode."""
    _params = ("gamma", "beta")
    _buffers = ("running_mean", "running_var")

    def __init__(self, num_features: int, *, axis: int = 1, eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = False, track_running_stats: bool = False, dtype=np.float32):
        super().__init__()
        num_features = integer(num_features, "num_features", 1, "a positive int")
        self.num_features, self.axis, self.eps, self.momentum = num_features, axis, eps, momentum
        self.gamma = np.ones(num_features, dtype) if affine else None
        self.beta = np.zeros(num_features, dtype) if affine else None
        self.running_mean = np.zeros(num_features, dtype) if track_running_stats else None
        self.running_var = np.ones(num_features, dtype) if track_running_stats else None

    def forward(self, x):
        use_input_stats = self.training or self.running_mean is None
        y, mean, rstd = instance_norm(x, gamma=self.gamma, beta=self.beta, axis=self.axis,
                                      use_input_stats=use_input_stats,
                                      running_mean=self.running_mean, running_var=self.running_var,
                                      momentum=self.momentum, eps=self.eps, return_stats=True)
        self._saved = (np.asarray(x), mean, rstd, use_input_stats)
        return y

    def backward(self, dy):
        x, mean, rstd, use_input_stats = self._need_saved()
        dx, dgamma, dbeta = instance_norm_backward(dy, x, mean, rstd, self.gamma, axis=self.axis,
                                                   use_input_stats=use_input_stats)
        self._set_affine_grads(dgamma, dbeta)
        return dx

    def __repr__(self):
        return (f"InstanceNorm({self.num_features}, axis={self.axis}, affine={self.gamma is not None}, "
                f"track_running_stats={self.running_mean is not None})")


class PReLU(Layer):
    """Parametric ReLU (He et al. 2015): one learned slope, or one per channel along ``axis``; init 0.25."""
    _params = ("alpha",)

    def __init__(self, num_parameters: int = 1, *, init: float = 0.25, axis: int = 1, dtype=np.float32):
        super().__init__()
        num_parameters = integer(num_parameters, "num_parameters", 1, "a positive int")
        self.axis = axis
        self.alpha = np.full(num_parameters, real(init, "init"), dtype=dtype)

    def forward(self, x):
        self._saved = np.asarray(x)
        return prelu(x, self._slopes(), axis=self.axis)

    def backward(self, dy):
        x = self._need_saved()
        dx, dalpha = prelu_backward(dy, x, self._slopes(), axis=self.axis)
        self.grads = {"alpha": np.asarray(dalpha, dtype=self.alpha.dtype).reshape(self.alpha.shape)}
        return dx

    def _slopes(self):
        return self.alpha[0] if self.alpha.size == 1 else self.alpha

    def __repr__(self):
        return f"PReLU(num_parameters={self.alpha.size}, axis={self.axis})"


class Maxout(Layer):
    """Maxout (Goodfellow et al. 2013): the maximum over groups of ``pieces`` consecutive entries along ``axis``.
    No parameters; put it after a linear layer with pieces times as many outputs."""

    def __init__(self, pieces: int, *, axis: int = 1):
        super().__init__()
        self.pieces, self.axis = integer(pieces, "pieces", 1, "a positive int"), axis

    def forward(self, x):
        self._saved = np.asarray(x)
        return maxout(x, self.pieces, axis=self.axis)

    def backward(self, dy):
        return maxout_backward(dy, self._need_saved(), self.pieces, axis=self.axis)

    def __repr__(self):
        return f"Maxout(pieces={self.pieces}, axis={self.axis})"
