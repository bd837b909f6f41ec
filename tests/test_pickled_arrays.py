"""Arrays that went through pickle (multiprocessing, joblib, DataLoader workers) are ordinary arrays.

An unpickled array's dtype equals NumPy's float32 without being the same object; every kernel must accept it
exactly as it accepts the original, through the real process paths as well as a plain pickle round trip.
"""
import multiprocessing
import pickle

import numpy as np
import pytest

import fastnorm
from fastnorm.preprocessing import PCA, Standardizer, Whitening
from helpers import half_dtype


def round_trip(a):
    return pickle.loads(pickle.dumps(a))


def dtypes():
    out = [np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16), np.dtype(np.int32),
           np.dtype(np.bool_)]
    try:
        import ml_dtypes
        out.append(np.dtype(ml_dtypes.bfloat16))
    except ImportError:
        pass
    return out


# Calls of every family, each taking the arrays it is given as its only inputs.
CALLS = {
    "relu": lambda x: fastnorm.relu(x),
    "gelu_backward": lambda x: fastnorm.gelu_backward(x, x),
    "tanh_backward_from_y": lambda x: fastnorm.tanh_backward(x, y=fastnorm.tanh(x)),
    "prelu": lambda x: fastnorm.prelu(x, np.full(x.shape[1], 0.2, x.dtype), axis=1),
    "maxout": lambda x: fastnorm.maxout(x, 2, axis=1),
    "moments": lambda x: fastnorm.moments(x, axis=0).mean,
    "batch_norm": lambda x: fastnorm.batch_norm(x, gamma=np.ones(x.shape[1], x.dtype),
                                                beta=np.zeros(x.shape[1], x.dtype)),
    "layer_norm": lambda x: fastnorm.layer_norm(x),
    "rms_norm": lambda x: fastnorm.rms_norm(x),
    "group_norm": lambda x: fastnorm.group_norm(x, 2),
}


@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize("dtype", dtypes(), ids=str)
def test_every_family_takes_an_unpickled_array(call, dtype):
    x = (np.arange(24, dtype=np.float64).reshape(6, 4) / 7 - 1.5).astype(dtype)
    y = round_trip(x)
    assert y.dtype == x.dtype
    want = CALLS[call](x)
    got = CALLS[call](y)
    np.testing.assert_array_equal(np.asarray(got, np.float64), np.asarray(want, np.float64))


def test_an_unpickled_dtype_is_equal_but_not_the_same_object():
    # what makes this file a test of anything: NumPy gives unpickled arrays a dtype object of their own
    y = round_trip(np.ones(3, np.float32))
    assert y.dtype == np.float32 and y.dtype is not np.dtype(np.float32)


def test_unpickled_out_arrays_are_written_in_place():
    x = np.linspace(-2, 2, 40, dtype=np.float32)
    out = round_trip(np.empty_like(x))
    assert fastnorm.sigmoid(x, out=out) is out
    np.testing.assert_array_equal(out, fastnorm.sigmoid(x))
    dx = round_trip(np.empty_like(x))
    assert fastnorm.relu_backward(round_trip(x), round_trip(x), out=dx) is dx
    bn_out = round_trip(np.empty((8, 5), np.float32))
    xb = round_trip(np.random.default_rng(0).standard_normal((8, 5)).astype(np.float32))
    assert fastnorm.batch_norm(xb, out=bn_out) is bn_out
    np.testing.assert_array_equal(bn_out, fastnorm.batch_norm(xb))
    g = round_trip(np.empty((3, 4), np.float32))
    assert fastnorm.random.Generator(1).normal((3, 4), out=g) is g


def test_non_native_byte_order_is_converted_not_refused():
    x = np.linspace(-2, 2, 10)
    for order in (">", "<"):
        xs = x.astype(order + "f4")
        np.testing.assert_array_equal(fastnorm.relu(xs), fastnorm.relu(x.astype(np.float32)))
        np.testing.assert_array_equal(fastnorm.layer_norm(xs.reshape(2, 5)),
                                      fastnorm.layer_norm(x.astype(np.float32).reshape(2, 5)))


def test_half_storage_round_trips(rng):
    for name in ("float16", "bfloat16"):
        try:
            dt = half_dtype(name)
        except pytest.skip.Exception:
            continue
        x = rng.standard_normal((4, 8)).astype(dt)
        np.testing.assert_array_equal(fastnorm.silu(round_trip(x)).astype(np.float32),
                                      fastnorm.silu(x).astype(np.float32))


@pytest.mark.parametrize("make", [lambda: Standardizer(), lambda: PCA(3), lambda: Whitening()],
                         ids=["Standardizer", "PCA", "Whitening"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unpickled_fitted_estimators_transform(make, dtype, rng):
    x = (rng.standard_normal((50, 6)) * 3 + 1).astype(dtype)
    est = make().fit(x)
    again = round_trip(est)
    np.testing.assert_array_equal(again.transform(x), est.transform(x))
    np.testing.assert_array_equal(again.transform(round_trip(x)), est.transform(x))


def test_unpickled_layers_run(rng):
    x = rng.standard_normal((8, 4)).astype(np.float32)
    bn = fastnorm.layers.BatchNorm(4)
    bn.forward(x)
    again = round_trip(bn)
    again.eval()
    bn.eval()
    np.testing.assert_array_equal(again.forward(round_trip(x)), bn.forward(x))


def _pool_inputs():
    rng = np.random.default_rng(3)
    return [rng.standard_normal((16, 8)).astype(dt) for dt in (np.float32, np.float64, np.float16)]


def test_arrays_from_a_spawned_process_pool():
    xs = _pool_inputs()
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        # the inputs are unpickled in the workers and the results unpickled here
        ys = pool.map(fastnorm.tanh, xs)
        stats = pool.map(fastnorm.layer_norm, xs)
    for x, y, s in zip(xs, ys, stats):
        np.testing.assert_array_equal(y, fastnorm.tanh(x))
        np.testing.assert_array_equal(fastnorm.relu(y), fastnorm.relu(fastnorm.tanh(x)))
        np.testing.assert_array_equal(s, fastnorm.layer_norm(x))


def test_joblib_workers_with_memmapped_arrays():
    joblib = pytest.importorskip("joblib")
    x = np.random.default_rng(4).standard_normal((64, 256)).astype(np.float32)  # 64 KiB: memmapped below
    parts = joblib.Parallel(n_jobs=2, max_nbytes=0)(
        joblib.delayed(fastnorm.batch_norm)(x[i::2]) for i in range(2))
    for i, part in enumerate(parts):
        np.testing.assert_array_equal(part, fastnorm.batch_norm(x[i::2]))
        np.testing.assert_array_equal(fastnorm.gelu(part), fastnorm.gelu(fastnorm.batch_norm(x[i::2])))
    stats = joblib.Parallel(n_jobs=2, max_nbytes=0)(
        joblib.delayed(fastnorm.moments)(x[i::2], axis=0) for i in range(2))
    merged = fastnorm.merge_moments(*stats)
    whole = fastnorm.moments(x, axis=0)
    np.testing.assert_allclose(merged.mean, whole.mean, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(merged.var(), whole.var(), rtol=1e-12)
