"""Normalization with a fused activation (y = act(norm(x)) in one pass, and its backward without the normalized
tensor): every normalization of reference.NORMS against its float64 reference and against the two separate calls,
a float64 gradient check, thread counts, bad input."""
import numpy as np
import pytest

import fastnorm
import reference as ref
from helpers import norm_backward, norm_forward, norm_layouts, norm_params

ACTS = [("relu", {}), ("leaky_relu", {"negative_slope": 0.2}), ("silu", {}), ("gelu", {})]
LAYOUTS = norm_layouts()  # every normalization of reference.NORMS, every layout


def inputs(name, shape, axis, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(dtype)
    gamma, beta = norm_params(name, shape, axis, rng, dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    return x, gamma, beta, dy


def separate(name, axis, act, kw, x, gamma, beta, dy):
    """The two calls: the normalization, then the activation; and their backwards chained."""
    z, stats = norm_forward(name, x, gamma, beta, axis)
    y = getattr(fastnorm, act)(z, **kw)
    dz = getattr(fastnorm, act + "_backward")(dy, z, **kw)
    return y, norm_backward(name, dz, x, stats, gamma, beta, axis)


@pytest.mark.parametrize("name,shape,axis", LAYOUTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_normalization_matches_its_reference(name, shape, axis, dtype):
    x, gamma, beta, _ = inputs(name, shape, axis, dtype)
    y, _ = norm_forward(name, x, gamma, beta, axis)
    assert y.dtype == dtype
    tol = 2e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, ref.NORMS[name].reference(x, gamma, beta, axis), rtol=tol, atol=tol)


@pytest.mark.parametrize("name,shape,axis", LAYOUTS)
@pytest.mark.parametrize("act,kw", ACTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_equals_the_two_calls(name, shape, axis, act, kw, dtype):
    x, gamma, beta, dy = inputs(name, shape, axis, dtype)
    y_ref, grads_ref = separate(name, axis, act, kw, x, gamma, beta, dy)
    y, stats = norm_forward(name, x, gamma, beta, axis, activation=act, **kw)
    grads = norm_backward(name, dy, x, stats, gamma, beta, axis, activation=act, **kw)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    assert y.dtype == dtype
    np.testing.assert_allclose(y, y_ref, rtol=tol, atol=tol)
    assert len(grads) == len(grads_ref)
    for got, want in zip(grads, grads_ref):
        np.testing.assert_allclose(got, want, rtol=tol * 10, atol=tol * 10)


@pytest.mark.parametrize("name,shape,axis", LAYOUTS)
@pytest.mark.parametrize("act,kw", ACTS)
def test_fused_gradient_check_float64(name, shape, axis, act, kw):
    x, gamma, beta, dy = inputs(name, shape, axis, np.float64, seed=1)
    params = [x, gamma] + ([beta] if beta is not None else [])

    def f(x, gamma, beta=None):
        return norm_forward(name, x, gamma, beta, axis, activation=act, **kw)[0]

    def grads(dy, x, gamma, beta=None):
        _, stats = norm_forward(name, x, gamma, beta, axis)
        return norm_backward(name, dy, x, stats, gamma, beta, axis, activation=act, **kw)

    fastnorm.gradcheck(f, params, grads, tol=1e-5)


@pytest.mark.parametrize("name,shape,axis", [
    ("batch_norm", (16, 8, 40, 40), 1), ("batch_norm", (16, 40, 40, 8), -1), ("layer_norm", (512, 300), -1),
    ("group_norm", (8, 40, 40, 6), -1), ("rms_norm", (300, 512), -1), ("instance_norm", (4, 8, 40, 40), 1)])
def test_fused_bits_do_not_depend_on_thread_count(name, shape, axis):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    gamma, beta = norm_params(name, shape, axis, rng, np.float32)
    results = []
    for t in (1, 2, 3):
        y, stats = norm_forward(name, x, gamma, beta, axis, activation="silu", num_threads=t)
        dx = norm_backward(name, dy, x, stats, gamma, beta, axis, activation="silu", num_threads=t)[0]
        results.append(y.tobytes() + dx.tobytes())
    assert results[0] == results[1] == results[2]


def test_test_mode_batch_norm_with_activation():
    x, gamma, beta, dy = inputs("batch_norm", (6, 5, 7, 3), 1, np.float64)
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
