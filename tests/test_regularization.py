"""Dropout, alpha dropout and channel dropout: the mask's statistics, regenerated in the backward, the same bits for
any thread count, layers in train and eval mode, gradient checks, bad input."""
import math

import numpy as np
import pytest

import fastnorm
from fastnorm.layers import AlphaDropout, ChannelDropout, Dropout
from fastnorm.random import Generator
from helpers import half_dtype


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_drop_fraction_and_scale(p):
    n = 1_000_003
    y = fastnorm.dropout(np.ones(n, np.float32), p, seed=1)
    dropped = float(np.mean(y == 0))
    assert abs(dropped - p) < 5 * math.sqrt(p * (1 - p) / n)
    np.testing.assert_array_equal(np.unique(y), [0.0, np.float32(1 / (1 - p))])


def test_backward_regenerates_the_mask_and_the_generator_moves_on():
    x = np.random.default_rng(0).standard_normal((300, 77)).astype(np.float32)
    g = Generator(3)
    y, state = fastnorm.dropout(x, 0.4, generator=g, return_state=True)
    dx = fastnorm.dropout_backward(np.ones_like(x), state)
    np.testing.assert_array_equal(dx, np.where(y != 0, np.float32(1 / 0.6), 0))
    np.testing.assert_array_equal(y, x * dx)
    y2 = fastnorm.dropout(x, 0.4, generator=g)
    assert (y2 != y).any()  # the next call draws a new mask
    g.state = {"algorithm": "philox4x32_10", "key": state["key"], "counter": state["counter"]}
    assert fastnorm.dropout(x, 0.4, generator=g).tobytes() == y.tobytes()


@pytest.mark.parametrize("threads", [1, 2])
def test_same_bits_for_any_thread_count(threads):
    x = np.random.default_rng(1).standard_normal(3_000_001).astype(np.float32)
    want = fastnorm.dropout(x, 0.3, seed=9, num_threads=1)
    assert fastnorm.dropout(x, 0.3, seed=9, num_threads=threads).tobytes() == want.tobytes()
    want = fastnorm.alpha_dropout(x, 0.3, seed=9, num_threads=1)
    assert fastnorm.alpha_dropout(x, 0.3, seed=9, num_threads=threads).tobytes() == want.tobytes()


def test_identity_cases_and_nan():
    x = np.arange(6.0)
    assert fastnorm.dropout(x, 0.5, seed=0, training=False) is x
    assert fastnorm.dropout(x, 0.0, seed=0) is x
    np.testing.assert_array_equal(fastnorm.dropout(x, 1.0, seed=0), np.zeros(6))
    y, state = fastnorm.dropout(x, 0.5, seed=0, training=False, return_state=True)
    assert state is None and fastnorm.dropout_backward(x, None) is x
    nan = fastnorm.dropout(np.full(1000, np.nan), 0.5, seed=0)
    assert np.isnan(nan).all()  # x * mask: NaN stays NaN, dropped or not


@pytest.mark.parametrize("dtype", [np.float64, np.int32, "float16"])
def test_dtypes(dtype):
    dt = half_dtype(dtype) if dtype == "float16" else np.dtype(dtype)
    x = np.arange(1, 41).astype(dt)
    y = fastnorm.dropout(x, 0.5, seed=4)
    assert y.dtype == (np.float64 if dt.kind == "i" else dt)
    kept = y != 0
    np.testing.assert_array_equal(y[kept], (x[kept].astype(np.float64) * 2).astype(y.dtype))


def test_alpha_dropout_keeps_zero_mean_unit_variance():
    x = np.random.default_rng(2).standard_normal(2_000_000)
    y, state = fastnorm.alpha_dropout(x, 0.2, seed=5, return_state=True)
    assert abs(y.mean()) < 5e-3 and abs(y.std() - 1) < 5e-3
    dx = fastnorm.alpha_dropout_backward(np.ones_like(x), state)
    kept = dx != 0
    assert 0.79 < kept.mean() < 0.81 and np.unique(dx[kept]).size == 1
    np.testing.assert_allclose(y[kept], x[kept] * dx[kept] + (y[kept] - x[kept] * dx[kept])[0])


@pytest.mark.parametrize("shape,axis", [((6, 5, 4, 3), 1), ((6, 4, 3, 5), -1), ((8, 7), 1)])
def test_channel_dropout_drops_whole_channels(shape, axis):
    x = np.random.default_rng(3).standard_normal(shape) + 5
    y, state = fastnorm.channel_dropout(x, 0.5, axis=axis, seed=6, return_state=True)
    ratio = np.moveaxis(y / x, axis, 1).reshape(shape[0], shape[axis], -1)
    assert np.all(ratio == ratio[..., :1]) and set(np.unique(ratio)) <= {0.0, 2.0}
    assert 0 < (ratio[..., 0] == 0).sum() < ratio[..., 0].size
    np.testing.assert_array_equal(fastnorm.channel_dropout_backward(np.ones(shape), state, axis=axis), y / x)


def test_gradcheck():
    x = np.random.default_rng(4).standard_normal((4, 6))
    for f, b in ((fastnorm.dropout, fastnorm.dropout_backward), (fastnorm.alpha_dropout,
                                                                 fastnorm.alpha_dropout_backward)):
        report = fastnorm.gradcheck(lambda a: f(a, 0.3, seed=11), x,
                                    lambda d, a: b(d, f(a, 0.3, seed=11, return_state=True)[1]))
        assert max(report.max_rel_error) < 1e-7


@pytest.mark.parametrize("cls,kw", [(Dropout, {}), (AlphaDropout, {}), (ChannelDropout, {"axis": 1})])
def test_layers_train_and_eval(cls, kw):
    layer = cls(0.5, seed=0, **kw)
    x = np.random.default_rng(5).standard_normal((8, 4, 3))
    y = layer(x)
    assert (y != x).any()
    dx = layer.backward(np.ones_like(x))
    assert dx.shape == x.shape
    if cls is not AlphaDropout:
        np.testing.assert_array_equal(dx == 0, y == 0)
    assert (layer(x) != y).any()  # a new mask each step
    layer.eval()
    assert layer(x) is x and layer.backward(x) is x
    assert "p=0.5" in repr(layer)


BAD = [
    (lambda: fastnorm.dropout(np.ones(3), 1.5), ValueError, "p: expected a drop probability"),
    (lambda: fastnorm.dropout(np.ones(3), "a"), TypeError, "p"),
    (lambda: fastnorm.dropout(np.ones(3), 0.5, seed=1, generator=Generator(0)), TypeError, "seed: give"),
    (lambda: fastnorm.dropout(np.ones(3), 0.5, generator=np.random.default_rng(0)), TypeError, "generator"),
    (lambda: fastnorm.dropout_backward(np.ones(3), {"key": 1}), TypeError, "state"),
    (lambda: fastnorm.channel_dropout(np.ones(3), 0.5, seed=0), ValueError, "axis"),
    (lambda: Dropout(-0.1), ValueError, "p:"),
]


@pytest.mark.parametrize("call,error,message", BAD)
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()
