"""Normalization with a fused activation (y = act(norm(x)) in one pass, and its backward without the normalized
tensor): against the two separate calls, a float64 gradient check, thread counts, bad input."""
import numpy as np
import pytest

import fastnorm

ACTS = [("relu", {}), ("leaky_relu", {"negative_slope": 0.2}), ("silu", {}), ("gelu", {})]
# batch and instance norm take gamma and beta by keyword only
BN = lambda x, g, b, **k: fastnorm.batch_norm(x, gamma=g, beta=b, **k)  # noqa: E731
IN = lambda x, g, b, **k: fastnorm.instance_norm(x, gamma=g, beta=b, **k)  # noqa: E731
# name: (forward, backward, x shape, per-channel parameter shape, keyword arguments of both)
NORMS = {
    "batch nchw": (BN, fastnorm.batch_norm_backward, (6, 5, 7, 3), (5,), {"axis": 1}),
    "batch nhwc": (BN, fastnorm.batch_norm_backward, (6, 7, 3, 5), (5,), {"axis": -1}),
    "batch rows": (BN, fastnorm.batch_norm_backward, (40, 6), (6,), {"axis": 1}),
    "layer": (fastnorm.layer_norm, fastnorm.layer_norm_backward, (9, 33), (33,), {}),
    "group nchw": (lambda x, g, b, **k: fastnorm.group_norm(x, 2, g, b, **k),
                   lambda dy, x, m, r, g, **k: fastnorm.group_norm_backward(dy, x, m, r, 2, g, **k),
                   (3, 6, 5, 4), (6,), {"axis": 1}),
    "instance nchw": (IN, fastnorm.instance_norm_backward, (3, 4, 5, 6), (4,), {"axis": 1}),
    "group nhwc": (lambda x, g, b, **k: fastnorm.group_norm(x, 3, g, b, **k),
                   lambda dy, x, m, r, g, **k: fastnorm.group_norm_backward(dy, x, m, r, 3, g, **k),
                   (3, 5, 4, 6), (6,), {"axis": -1}),
}


def inputs(norm, dtype, seed=0):
    shape, pshape = NORMS[norm][2], NORMS[norm][3]
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(dtype)
    gamma = rng.uniform(0.5, 1.5, pshape).astype(dtype)
    beta = rng.standard_normal(pshape).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    return x, gamma, beta, dy


def separate(norm, act, kw, x, gamma, beta, dy):
    """The two calls: the normalization, then the activation; and their backwards chained."""
    fwd, bwd, _, _, nkw = NORMS[norm]
    z, mean, rstd = fwd(x, gamma, beta, return_stats=True, **nkw)
    y = getattr(fastnorm, act)(z, **kw)
    dz = getattr(fastnorm, act + "_backward")(dy, z, **kw)
    return y, bwd(dz, x, mean, rstd, gamma, **nkw)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("act,kw", ACTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_equals_the_two_calls(norm, act, kw, dtype):
    fwd, bwd, _, _, nkw = NORMS[norm]
    x, gamma, beta, dy = inputs(norm, dtype)
    y_ref, grads_ref = separate(norm, act, kw, x, gamma, beta, dy)
    y, mean, rstd = fwd(x, gamma, beta, return_stats=True, activation=act, **kw, **nkw)
    grads = bwd(dy, x, mean, rstd, gamma, beta=beta, activation=act, **kw, **nkw)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    assert y.dtype == dtype
    np.testing.assert_allclose(y, y_ref, rtol=tol, atol=tol)
    for got, want in zip(grads, grads_ref):
        np.testing.assert_allclose(got, want, rtol=tol * 10, atol=tol * 10)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("act,kw", ACTS)
def test_fused_gradient_check_float64(norm, act, kw):
    fwd, bwd, _, _, nkw = NORMS[norm]
    x, gamma, beta, dy = inputs(norm, np.float64, seed=1)

    def f(x, gamma, beta):
        return fwd(x, gamma, beta, activation=act, **kw, **nkw)

    def grads(dy, x, gamma, beta):
        _, mean, rstd = fwd(x, gamma, beta, return_stats=True, **nkw)
        return bwd(dy, x, mean, rstd, gamma, beta=beta, activation=act, **kw, **nkw)

    fastnorm.gradcheck(f, [x, gamma, beta], grads, tol=1e-5)


@pytest.mark.parametrize("norm", ["batch nchw", "batch nhwc", "layer", "group nhwc"])
def test_fused_bits_do_not_depend_on_thread_count(norm):
    fwd, bwd, _, _, nkw = NORMS[norm]
    rng = np.random.default_rng(2)
    shape = {"batch nchw": (16, 8, 40, 40), "batch nhwc": (16, 40, 40, 8), "layer": (512, 300),
             "group nhwc": (8, 40, 40, 6)}[norm]
    c = shape[1] if nkw.get("axis") == 1 else shape[-1]
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    gamma, beta = np.ones(c, np.float32) * 1.1, np.full(c, 0.1, np.float32)
    results = []
    for t in (1, 2, 3):
        y, m, r = fwd(x, gamma, beta, return_stats=True, activation="silu", num_threads=t, **nkw)
        dx = bwd(dy, x, m, r, gamma, beta=beta, activation="silu", num_threads=t, **nkw)[0]
        results.append(y.tobytes() + dx.tobytes())
    assert results[0] == results[1] == results[2]


def test_test_mode_batch_norm_with_activation():
    x, gamma, beta, dy = inputs("batch nchw", np.float64)
    rm, rv = np.full(5, 0.3), np.full(5, 1.7)
    y = fastnorm.batch_norm(x, gamma=gamma, beta=beta, training=False, running_mean=rm, running_var=rv,
                            activation="relu")
    z = fastnorm.batch_norm(x, gamma=gamma, beta=beta, training=False, running_mean=rm, running_var=rv)
    np.testing.assert_allclose(y, np.maximum(z, 0), rtol=1e-12, atol=1e-14)
    rstd = 1 / np.sqrt(rv + 1e-5)
    dx = fastnorm.batch_norm_backward(dy, x, rm, rstd, gamma, training=False, beta=beta, activation="relu")[0]
    want = fastnorm.batch_norm_backward(dy * (z > 0), x, rm, rstd, gamma, training=False)[0]
    np.testing.assert_allclose(dx, want, rtol=1e-12, atol=1e-14)


def test_bad_activation():
    x = np.ones((4, 3))
    for call in (lambda: fastnorm.batch_norm(x, activation="tanh"),
                 lambda: fastnorm.layer_norm(x, activation="swish"),
                 lambda: fastnorm.group_norm(x, 1, activation="elu")):
        with pytest.raises(ValueError, match="activation: unknown .*; valid: None, 'relu', 'leaky_relu'"):
            call()
    with pytest.raises(ValueError, match="negative_slope"):
        fastnorm.batch_norm(x, activation="leaky_relu", negative_slope=float("nan"))


@pytest.mark.parametrize("make,shape", [
    (lambda: fastnorm.layers.BatchNorm(5, activation="relu"), (8, 5, 3, 3)),
    (lambda: fastnorm.layers.LayerNorm(7, activation="gelu"), (6, 7)),
    (lambda: fastnorm.layers.GroupNorm(2, 4, activation="leaky_relu", negative_slope=0.1), (3, 4, 5)),
])
def test_layers_with_a_fused_activation(make, shape):
    rng = np.random.default_rng(3)
    layer = make()
    layer.gamma[:] = rng.uniform(0.5, 1.5, layer.gamma.shape)
    layer.beta[:] = rng.standard_normal(layer.beta.shape)
    x = rng.standard_normal(shape).astype(np.float32)
    y = layer.forward(x)
    act = layer.post["activation"]
    plain = type(layer).__new__(type(layer))
    plain.__dict__.update({k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in layer.__dict__.items()})
    plain.post = {"activation": None, "negative_slope": 0.01}
    z = plain.forward(x)
    kw = {"negative_slope": layer.post["negative_slope"]} if act == "leaky_relu" else {}
    np.testing.assert_allclose(y, getattr(fastnorm, act)(z, **kw), rtol=2e-5, atol=2e-6)
    dy = rng.standard_normal(shape).astype(np.float32)
    dx = layer.backward(dy)
    dx_plain = plain.backward(getattr(fastnorm, act + "_backward")(dy, z, **kw))
    np.testing.assert_allclose(dx, dx_plain, rtol=1e-4, atol=1e-5)
    for name in ("weight", "bias"):
        np.testing.assert_allclose(layer.grads[name], plain.grads[name], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="activation"):
        fastnorm.layers.BatchNorm(3, activation="sigmoid")
