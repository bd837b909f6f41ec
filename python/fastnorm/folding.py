"""Folding a test-mode batch norm into the layer before it.

"During testing batchnorm becomes a linear operator, and can be fused with the previous fully-connected or
conv layer": BN(Wx + b) = (W s) x + (b - mean) s + beta with s = gamma / sqrt(var + eps) per output channel.
"""
from __future__ import annotations

import numpy as np
from typing import Optional, Tuple
from numpy.typing import ArrayLike

from fastnorm._array import as_array, compute_dtype, result_dtype

__all__ = ["fold_batch_norm"]


def fold_batch_norm(weight: ArrayLike, bias: ArrayLike, gamma: ArrayLike, beta: ArrayLike,
                    running_mean: Optional[np.ndarray], running_var: Optional[np.ndarray],
                    eps: Optional[float] = 1e-5, *, transposed: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """The (weight, bias) of a linear or convolution layer equal to that layer followed by BatchNorm in test mode.

    ``weight' = weight * s`` (along the output-channel axis), ``bias' = (bias - running_mean) * s + beta``,
    with ``s = gamma / sqrt(running_var + eps)``.

    Parameters
    ----------
    weight : array_like
        (out, in) for a linear layer, ``(out, in, *kernel)`` for a convolution of any kernel rank, or with
        ``transposed=True`` a transposed convolution's ``(in, out, *kernel)``: output channels second.
    bias : array_like of shape (out,) or None
        None for a layer without bias (the folded layer has one).
    gamma, beta, running_mean, running_var : array_like of shape (out,)
        The batch norm's parameters and running statistics; gamma None means 1, beta None means 0.
    eps : float > 0
    transposed : bool
        Output channels on axis 1 of ``weight`` (PyTorch's ConvTranspose layout).

    Returns
    -------
    (weight, bias) : new arrays in the weight's floating dtype (float64 for integer weights); the inputs are
    not modified.  The folding is computed in float64.
    """
    w = as_array(weight, "weight")
    dtype = result_dtype(w.dtype)
    compute_dtype(w.dtype, "weight")
    if w.ndim < 2:
        raise ValueError(f"weight: expected (out, in, *kernel) with at least 2 dimensions, got shape {w.shape}")
    axis = 1 if transposed else 0
    out_channels = w.shape[axis]

    def channel(value, name, default):
        if value is None:
            return np.full(out_channels, default, dtype=np.float64)
        arr = as_array(value, name)
        if arr.shape != (out_channels,):
            raise ValueError(f"{name}: expected shape ({out_channels},) (one value per output channel of weight"
                             f"{' axis 1' if transposed else ''}), got {arr.shape}")
        return arr.astype(np.float64)

    mean, var = channel(running_mean, "running_mean", 0.0), channel(running_var, "running_var", 1.0)
    if running_mean is None or running_var is None:
        raise ValueError("running_mean: folding needs the running mean and variance of the batch norm")
    g, b = channel(gamma, "gamma", 1.0), channel(beta, "beta", 0.0)
    b0 = channel(bias, "bias", 0.0)
    eps = float(eps)
    if not (np.isfinite(eps) and eps > 0):
        raise ValueError(f"eps: expected a finite number > 0, got {eps}")
    if (var + eps <= 0).any():
        raise ValueError("running_var: var + eps must be positive")
    s = g / np.sqrt(var + eps)
    shape = [1] * w.ndim
    shape[axis] = out_channels
    folded_w = (w.astype(np.float64) * s.reshape(shape)).astype(dtype)
    folded_b = ((b0 - mean) * s + b).astype(dtype)
    return folded_w, folded_b
