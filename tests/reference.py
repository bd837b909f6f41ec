"""Plain float64 NumPy references, written to be obviously right rather than fast.

Each forward is the textbook formula, arranged only where the float64 formula itself would cancel (sigmoid of a
large negative x, softplus, 1 - tanh^2 in the tails, the GELU's negative tail).  Each backward is the textbook
derivative, returning dy * f'(x), with NaN where x is NaN.  Inputs are converted to float64 first.
"""
import math
from typing import Callable, NamedTuple, Tuple

import numpy as np

SELU_ALPHA = 1.6732632423543772848
SELU_SCALE = 1.0507009873554804934
GELU_K0 = math.sqrt(2 / math.pi)
GELU_K1 = 0.044715

_erfc = np.vectorize(math.erfc, otypes=[np.float64])


def f64(a):
    return np.asarray(a, dtype=np.float64)


def _nan_where_x_nan(x, d):
    return np.where(np.isnan(x), np.nan, d)


def sigmoid(x):
    x = f64(x)
    e = np.exp(-np.abs(x))  # never overflows
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def sigmoid_grad(x):
    s = sigmoid(x)
    return s * sigmoid(-f64(x))  # s (1 - s), with 1 - s = sigmoid(-x) exact in the tail


def tanh(x):
    return np.tanh(f64(x))


def tanh_grad(x):
    with np.errstate(over="ignore"):
        return 1 / np.cosh(f64(x)) ** 2


def relu(x):
    return np.maximum(f64(x), 0)


def relu_grad(x):
    x = f64(x)
    return _nan_where_x_nan(x, (x > 0).astype(np.float64))


def leaky_relu(x, negative_slope=0.01):
    x = f64(x)
    return np.where(x > 0, x, negative_slope * x)


def leaky_relu_grad(x, negative_slope=0.01):
    x = f64(x)
    return _nan_where_x_nan(x, np.where(x > 0, 1.0, negative_slope))


def channel_values(alpha, ndim, axis):
    """alpha (one value, or one per channel along axis) shaped to broadcast against an ndim-array."""
    alpha = f64(alpha)
    if alpha.size == 1:
        return alpha.reshape(())
    shape = [1] * ndim
    shape[axis] = alpha.size
    return alpha.reshape(shape)


def prelu(x, alpha, axis=1):
    x = f64(x)
    a = channel_values(alpha, x.ndim, axis)
    return np.where(x > 0, x, a * x)


def prelu_grads(dy, x, alpha, axis=1):
    """(dx, dalpha) of prelu for upstream gradient dy."""
    x, dy = f64(x), f64(dy)
    a = channel_values(alpha, x.ndim, axis)
    dx = np.where(x > 0, dy, dy * a)
    contrib = np.where(x > 0, 0.0, dy * x)
    if np.size(alpha) == 1:
        return dx, contrib.sum()
    return dx, contrib.sum(axis=tuple(i for i in range(x.ndim) if i != axis))


def elu(x, alpha=1.0):
    x = f64(x)
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))


def elu_grad(x, alpha=1.0):
    x = f64(x)
    return np.where(x > 0, 1.0, alpha * np.exp(np.minimum(x, 0)))


def selu(x):
    return SELU_SCALE * elu(x, SELU_ALPHA)


def selu_grad(x):
    return SELU_SCALE * elu_grad(x, SELU_ALPHA)


def normal_cdf(x):
    return 0.5 * _erfc(-f64(x) / math.sqrt(2))


def normal_pdf(x):
    x = f64(x)
    return np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def gelu(x):
    x = f64(x)
    return x * normal_cdf(x)


def gelu_grad(x):
    x = f64(x)
    return normal_cdf(x) + x * normal_pdf(x)


def _gelu_tanh_2u(x):
    return 2 * GELU_K0 * (x + GELU_K1 * x ** 3)


def gelu_tanh(x):
    x = f64(x)
    with np.errstate(over="ignore", invalid="ignore"):
        return x * sigmoid(_gelu_tanh_2u(x))  # 0.5 (1 + tanh(u)) = sigmoid(2u)


def gelu_tanh_grad(x):
    x = f64(x)
    with np.errstate(over="ignore", invalid="ignore"):
        two_u = _gelu_tanh_2u(x)
        du = GELU_K0 * (1 + 3 * GELU_K1 * x * x)
        g = sigmoid(two_u) + x * 2 * sigmoid_grad(two_u) * du
    # far out (|x| > 1e100: x^3 overflows, and inf * 0 is nan) the derivative is its limit, 0 or 1
    return np.where(np.abs(x) > 1e100, (x > 0).astype(np.float64), g)


def silu(x):
    x = f64(x)
    return x * sigmoid(x)


def silu_grad(x):
    x = f64(x)
    return sigmoid(x) + x * sigmoid_grad(x)


def softplus(x, beta=1.0, threshold=20.0):
    x = f64(x)
    bx = beta * x
    smooth = (np.maximum(bx, 0) + np.log1p(np.exp(-np.abs(bx)))) / beta
    return np.where(bx > threshold, x, smooth)


def softplus_grad(x, beta=1.0, threshold=20.0):
    x = f64(x)
    return np.where(beta * x > threshold, 1.0, sigmoid(beta * x))


def mish(x):
    x = f64(x)
    return x * np.tanh(softplus(x, 1.0, np.inf))


def mish_grad(x):
    x = f64(x)
    sp = softplus(x, 1.0, np.inf)
    return np.tanh(sp) + x * tanh_grad(sp) * sigmoid(x)


def hardtanh(x, min_val=-1.0, max_val=1.0):
    return np.clip(f64(x), min_val, max_val)


def hardtanh_grad(x, min_val=-1.0, max_val=1.0):
    x = f64(x)
    return _nan_where_x_nan(x, ((x > min_val) & (x < max_val)).astype(np.float64))


def hardsigmoid(x):
    return np.clip(f64(x) + 3, 0, 6) / 6


def hardsigmoid_grad(x):
    x = f64(x)
    return _nan_where_x_nan(x, np.where((x > -3) & (x < 3), 1 / 6, 0.0))


def hardswish(x):
    x = f64(x)
    return x * np.clip(x + 3, 0, 6) / 6


def hardswish_grad(x):
    x = f64(x)
    return _nan_where_x_nan(x, np.where(x < -3, 0.0, np.where(x <= 3, (2 * x + 3) / 6, 1.0)))


def maxout(x, pieces, axis=1):
    x = f64(x)
    axis = axis % x.ndim
    shape = x.shape[:axis] + (x.shape[axis] // pieces, pieces) + x.shape[axis + 1:]
    return x.reshape(shape).max(axis=axis + 1)


# name -> (forward, derivative, keyword arguments used by the tests)
ELEMENTWISE = {
    "sigmoid": (sigmoid, sigmoid_grad, {}),
    "tanh": (tanh, tanh_grad, {}),
    "relu": (relu, relu_grad, {}),
    "leaky_relu": (leaky_relu, leaky_relu_grad, {"negative_slope": 0.05}),
    "elu": (elu, elu_grad, {"alpha": 1.3}),
    "selu": (selu, selu_grad, {}),
    "gelu": (gelu, gelu_grad, {}),
    "gelu_tanh": (gelu_tanh, gelu_tanh_grad, {"approximate": "tanh"}),
    "silu": (silu, silu_grad, {}),
    "softplus": (softplus, softplus_grad, {"beta": 1.5, "threshold": 15.0}),
    "mish": (mish, mish_grad, {}),
    "hardtanh": (hardtanh, hardtanh_grad, {"min_val": -0.5, "max_val": 2.0}),
    "hardsigmoid": (hardsigmoid, hardsigmoid_grad, {}),
    "hardswish": (hardswish, hardswish_grad, {}),
}

def forward(name, x, **kw):
    """Reference forward of ELEMENTWISE[name] with the public function's keyword arguments."""
    kw.pop("approximate", None)
    return ELEMENTWISE[name][0](x, **kw)


def derivative(name, x, **kw):
    kw.pop("approximate", None)
    return ELEMENTWISE[name][1](x, **kw)


# ---- normalization ------------------------------------------------------------------------------------------------

def _reduce_axes(ndim, axis):
    axis %= ndim
    return tuple(i for i in range(ndim) if i != axis)


def batch_norm(x, gamma=None, beta=None, axis=1, eps=1e-5):
    """Training-mode batch norm with the batch's biased variance: the textbook formula."""
    x = f64(x)
    red = _reduce_axes(x.ndim, axis)
    mean = x.mean(axis=red, keepdims=True)
    var = x.var(axis=red, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    if gamma is not None:
        y = y * channel_values(gamma, x.ndim, axis % x.ndim)
    if beta is not None:
        y = y + channel_values(beta, x.ndim, axis % x.ndim)
    return y


def batch_norm_grads(dy, x, gamma=None, axis=1, eps=1e-5):
    """(dx, dgamma, dbeta) of training-mode batch norm, from the chain rule written out in full."""
    x, dy = f64(x), f64(dy)
    red = _reduce_axes(x.ndim, axis)
    n = np.prod([x.shape[i] for i in red])
    mean = x.mean(axis=red, keepdims=True)
    var = x.var(axis=red, keepdims=True)
    rstd = 1 / np.sqrt(var + eps)
    xhat = (x - mean) * rstd
    g = 1.0 if gamma is None else channel_values(gamma, x.ndim, axis % x.ndim)
    dxhat = dy * g
    dvar = (dxhat * (x - mean) * -0.5 * rstd ** 3).sum(axis=red, keepdims=True)
    dmean = (-dxhat * rstd).sum(axis=red, keepdims=True) + dvar * (-2 * (x - mean)).sum(axis=red, keepdims=True) / n
    dx = dxhat * rstd + dvar * 2 * (x - mean) / n + dmean / n
    return dx, (dy * xhat).sum(axis=red), dy.sum(axis=red)


def layer_norm(x, gamma=None, beta=None, k=1, eps=1e-5):
    """Layer norm over the last k axes: the textbook formula."""
    x = f64(x)
    axes = tuple(range(x.ndim - k, x.ndim))
    mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    return y * (1 if gamma is None else f64(gamma)) + (0 if beta is None else f64(beta))


def layer_norm_grads(dy, x, gamma=None, k=1, eps=1e-5):
    """(dx, dgamma, dbeta) of layer norm over the last k axes, from the chain rule written out in full."""
    x, dy = f64(x), f64(dy)
    axes = tuple(range(x.ndim - k, x.ndim))
    lead = tuple(range(x.ndim - k))
    n = np.prod(x.shape[x.ndim - k:])
    mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    rstd = 1 / np.sqrt(var + eps)
    xhat = (x - mean) * rstd
    g = dy * (1 if gamma is None else f64(gamma))
    dvar = (g * (x - mean) * -0.5 * rstd ** 3).sum(axis=axes, keepdims=True)
    dmean = (-g * rstd).sum(axis=axes, keepdims=True) + dvar * (-2 * (x - mean)).sum(axis=axes, keepdims=True) / n
    dx = g * rstd + dvar * 2 * (x - mean) / n + dmean / n
    return dx, (dy * xhat).sum(axis=lead), dy.sum(axis=lead)


def rms_norm(x, gamma=None, k=1, eps=None):
    x = f64(x)
    eps = np.finfo(np.float64).eps if eps is None else eps
    axes = tuple(range(x.ndim - k, x.ndim))
    return x / np.sqrt((x * x).mean(axis=axes, keepdims=True) + eps) * (1 if gamma is None else f64(gamma))


def group_norm(x, num_groups, gamma=None, beta=None, axis=1, eps=1e-5):
    """Group norm with batch axis 0: per sample, groups of consecutive channels along axis, the textbook way."""
    x = np.moveaxis(f64(x), axis, 1)  # (N, C, ...)
    n, c = x.shape[:2]
    xg = x.reshape(n, num_groups, -1)
    y = ((xg - xg.mean(axis=2, keepdims=True)) / np.sqrt(xg.var(axis=2, keepdims=True) + eps)).reshape(x.shape)
    shape = (1, c) + (1,) * (x.ndim - 2)
    if gamma is not None:
        y = y * f64(gamma).reshape(shape)
    if beta is not None:
        y = y + f64(beta).reshape(shape)
    return np.moveaxis(y, 1, axis)


def num_groups(channels):
    """The group count the suites give group norm over ``channels`` channels: groups of several channels each."""
    return next(g for g in (3, 2, 1) if channels % g == 0 and (g < channels or g == 1))


class NormCase(NamedTuple):
    """A normalization as the suites see it: ``reference(x, gamma, beta, axis)`` its float64 forward (``axis`` the
    channel axis of batch / instance / group norm, the normalized last axis of layer / RMS norm; gamma and beta of
    shape ``(x.shape[axis],)``), whether it takes beta, and the (shape, axis) layouts its small cases take."""
    reference: Callable
    has_beta: bool
    layouts: Tuple[Tuple[Tuple[int, ...], int], ...]


# Every normalization, by its public name: the counterpart of ELEMENTWISE for the fused, streaming, thread and
# half-storage suites (helpers.norm_forward / norm_backward call the fastnorm functions).  A new normalization is
# covered by all of them through one entry here and its two calls in helpers.NORM_CALLS.
NORMS = {
    "batch_norm": NormCase(lambda x, g, b, axis: batch_norm(x, g, b, axis), True,
                           (((6, 5, 7, 3), 1), ((6, 7, 3, 5), -1), ((40, 6), 1))),
    "instance_norm": NormCase(lambda x, g, b, axis: group_norm(x, x.shape[axis], g, b, axis), True,
                              (((3, 4, 5, 6), 1), ((3, 5, 6, 4), -1))),
    "group_norm": NormCase(lambda x, g, b, axis: group_norm(x, num_groups(x.shape[axis]), g, b, axis), True,
                           (((3, 6, 5, 4), 1), ((3, 5, 4, 6), -1))),
    "layer_norm": NormCase(lambda x, g, b, axis: layer_norm(x, g, b), True, (((9, 33), -1), ((2, 5, 16), -1))),
    "rms_norm": NormCase(lambda x, g, b, axis: rms_norm(x, g), False, (((9, 33), -1), ((7, 64), -1))),
}


def standardize(x, axis):
    """(x - mean) / std over ``axis`` (biased variance); zero-variance slots are only centered."""
    x = f64(x)
    mean, std = x.mean(axis=axis, keepdims=True), x.std(axis=axis, keepdims=True)
    return (x - mean) / np.where(std > 0, std, 1.0)


def pca(x, k):
    """Top-k principal components of rows x (N, D) by the SVD of the centered data, the textbook way: rows of
    components (sign: largest-magnitude entry positive), variances (divisor N - 1), projected data."""
    x = f64(x)
    centered = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(centered, full_matrices=False)
    vt = vt[:k] * np.sign(vt[:k][np.arange(k), np.abs(vt[:k]).argmax(axis=1)])[:, None]
    return vt, s[:k] ** 2 / (x.shape[0] - 1), centered @ vt.T


# ---- softmax and losses: the textbook formulas in float64 (mpmath where the doubles would not do) ---------------

def log_softmax(x, axis=-1):
    """x - max - log(sum(exp(x - max))) along ``axis``, in float64, the log of the sum taken as log1p of its part
    beyond 1 (the maximum's own exp(0)): log(1 + 1e-13) in float64 keeps only three digits of 1e-13, the largest
    logit's log-probability when the others are 30 below it."""
    x = f64(x)
    if x.size == 0:
        return x.copy()
    m = np.max(x, axis=axis, keepdims=True)
    with np.errstate(invalid="ignore"):
        shifted = x - m
        at_max = shifted == 0
        beyond_one = np.sum(np.where(at_max, 0.0, np.exp(shifted)), axis=axis, keepdims=True) + \
            (np.sum(at_max, axis=axis, keepdims=True) - 1)
        return shifted - np.log1p(beyond_one)


def softmax(x, axis=-1):
    return np.exp(log_softmax(x, axis))


def cross_entropy(logits, target, weight=None, label_smoothing=0.0, ignore_index=-100, reduction="mean"):
    """PyTorch's definition, one row at a time: rows (N, C) and class indices (N,)."""
    logp = log_softmax(logits, -1)
    N, C = logp.shape
    w = np.ones(C) if weight is None else f64(weight)
    losses, weights = [], []
    for i in range(N):
        t = int(target[i])
        if t == ignore_index:
            losses.append(0.0)
            weights.append(0.0)
            continue
        losses.append(-(1 - label_smoothing) * w[t] * logp[i, t] - label_smoothing / C * np.sum(w * logp[i]))
        weights.append(w[t])
    losses = np.array(losses)
    if reduction == "none":
        return losses
    return losses.sum() if reduction == "sum" else losses.sum() / np.sum(weights)
