"""Inputs that once crashed, hung or silently corrupted a result: each is a regression test here.

Every case runs in this process, so a crash fails the whole run and a hang trips the CI's timeout.
"""
import math

import numpy as np
import pytest

import fastnorm

N, C, L = 6, 4, 5  # batch, channels, positions


def _x(shape, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# ---- empty arrays: no work proportional to the other axes, no out-of-bounds reads ----------------------------------

def test_channels_last_group_and_instance_norm_with_no_positions():
    x = np.zeros((2, 0, 4_000_000), np.float32)  # read a "first row" that does not exist
    for y in (fastnorm.instance_norm(x, axis=-1), fastnorm.group_norm(x, 1, axis=-1)):
        assert y.shape == x.shape and y.dtype == x.dtype
    y, mean, rstd = fastnorm.group_norm(x, 2, axis=-1, return_stats=True)
    assert mean.shape == rstd.shape == (2, 2) and np.isnan(mean).all() and np.isnan(rstd).all()
    dx, dgamma, dbeta = fastnorm.group_norm_backward(x, x, mean, rstd, 2, np.ones(4_000_000, np.float32),
                                                     axis=-1)
    assert dx.shape == x.shape and not dgamma.any() and not dbeta.any()
    layer = fastnorm.layers.InstanceNorm(4_000_000, axis=-1)
    assert layer.forward(x).shape == x.shape


def test_empty_arrays_with_a_huge_neighbouring_axis_return_at_once():
    # each of these used to loop over the 2**40 entries of the non-empty axis
    assert fastnorm.maxout(np.empty((2 ** 40, 0)), 1, axis=0).shape == (2 ** 40, 0)
    assert fastnorm.maxout_backward(np.empty((2 ** 40, 0)), np.empty((2 ** 40, 0)), 1, axis=0).shape == (2 ** 40, 0)
    assert fastnorm.group_norm(np.empty((1, 2 ** 40, 0)), 1).shape == (1, 2 ** 40, 0)
    assert fastnorm.prelu(np.empty((2 ** 40, 0)), 0.1).shape == (2 ** 40, 0)


# ---- threads ----------------------------------------------------------------------------------------------------

def test_thread_counts_are_bounded():
    limit = fastnorm._C.thread_limit()
    assert limit >= 64
    x = np.ones((2, 40000, 64), np.float32)
    with pytest.raises(ValueError, match="num_threads: at most"):
        fastnorm.moments(x, axis=(0, 2), num_threads=10 ** 6)
    with pytest.raises(ValueError, match="n: at most"):
        fastnorm.set_num_threads(10 ** 6)
    np.testing.assert_array_equal(fastnorm.moments(x, axis=(0, 2), num_threads=limit).mean, np.ones(40000))


def test_openmp_default_beyond_the_bound_is_capped(tmp_path):
    import subprocess
    import sys
    code = ("import numpy as np, fastnorm\n"
            "assert fastnorm.get_num_threads() == fastnorm._C.thread_limit()\n"
            "print(fastnorm.moments(np.ones((2, 40000, 64), np.float32), axis=(0, 2)).mean[0])\n")
    env = dict(__import__("os").environ, OMP_NUM_THREADS="1000000")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1.0"


# ---- aliasing: out= sharing memory with any argument gives the same values as a separate out -------------------

@pytest.mark.parametrize("alias", ["x", "dy"])
def test_prelu_backward_into_its_own_input(alias):
    x, dy = _x((N, C, L)), _x((N, C, L), seed=1)
    alpha = np.linspace(0.1, 0.4, C).astype(np.float32)
    want_dx, want_dalpha = fastnorm.prelu_backward(dy, x, alpha)
    target = {"x": x, "dy": dy}[alias]
    dx, dalpha = fastnorm.prelu_backward(dy, x, alpha, out=target)
    assert dx is target
    np.testing.assert_array_equal(dx, want_dx)
    np.testing.assert_array_equal(dalpha, want_dalpha)


def _sharing(param, out_shape, dtype=np.float32):
    """(param', out): arrays over one buffer, out's first values being param's, param' holding param's values."""
    size = max(math.prod(out_shape), param.size)
    base = np.zeros(size, dtype)
    shared = base[:param.size].reshape(param.shape)
    shared[...] = param
    return shared, base[:math.prod(out_shape)].reshape(out_shape)


def _stats(x, **kw):
    return fastnorm.batch_norm(x, return_stats=True, **kw)[1:]


def _cases():
    """name -> (call(params, out) -> result tuple, params, out shape): each call's parameters, any of which the
    test places in out's memory."""
    x, dy = _x((N, C, L)), _x((N, C, L), seed=1)
    g, b = np.linspace(0.5, 2, C).astype(np.float32), np.linspace(-1, 1, C).astype(np.float32)
    mean, rstd = _stats(x.astype(np.float64))
    _, lmean, lrstd = fastnorm.layer_norm(x, return_stats=True)
    gx = _x((N, C, L), seed=2)
    _, gmean, grstd = fastnorm.group_norm(gx, 2, return_stats=True)
    gl, bl = np.linspace(0.5, 2, L).astype(np.float32), np.linspace(-1, 1, L).astype(np.float32)
    return {
        "batch_norm": (lambda p, out: (fastnorm.batch_norm(x, gamma=p["gamma"], beta=p["beta"], out=out),),
                       {"gamma": g, "beta": b}, x.shape),
        "batch_norm_eval": (lambda p, out: (fastnorm.batch_norm(x, gamma=p["gamma"], beta=p["beta"], training=False,
                                                                running_mean=p["rm"], running_var=p["rv"],
                                                                out=out),),
                            {"gamma": g, "beta": b, "rm": b * 0.1, "rv": g}, x.shape),
        "batch_norm_backward": (lambda p, out: fastnorm.batch_norm_backward(dy, x, p["mean"], p["rstd"], p["gamma"],
                                                                            out=out),
                                {"mean": mean, "rstd": rstd, "gamma": g.astype(np.float64)}, x.shape),
        "batch_norm_backward_fused": (lambda p, out: fastnorm.batch_norm_backward(
            dy, x, p["mean"], p["rstd"], p["gamma"], beta=p["beta"], activation="relu", out=out),
            {"mean": mean, "rstd": rstd, "gamma": g.astype(np.float64), "beta": b.astype(np.float64)}, x.shape),
        "layer_norm": (lambda p, out: (fastnorm.layer_norm(x, p["gamma"], p["beta"], out=out),),
                       {"gamma": gl, "beta": bl}, x.shape),
        "layer_norm_backward": (lambda p, out: fastnorm.layer_norm_backward(dy, x, p["mean"], p["rstd"],
                                                                            p["gamma"], out=out),
                                {"mean": lmean, "rstd": lrstd, "gamma": gl}, x.shape),
        "group_norm": (lambda p, out: (fastnorm.group_norm(gx, 2, p["gamma"], p["beta"], out=out),),
                       {"gamma": g, "beta": b}, x.shape),
        "group_norm_backward": (lambda p, out: fastnorm.group_norm_backward(dy, gx, p["mean"], p["rstd"], 2,
                                                                            p["gamma"], out=out),
                                {"mean": gmean, "rstd": grstd, "gamma": g.astype(np.float64)}, x.shape),
        "prelu": (lambda p, out: (fastnorm.prelu(x, p["alpha"], out=out),), {"alpha": g * 0.1}, x.shape),
        "prelu_backward": (lambda p, out: fastnorm.prelu_backward(dy, x, p["alpha"], out=out),
                           {"alpha": g * 0.1}, x.shape),
    }


CASES = _cases()


@pytest.mark.parametrize("case", sorted(CASES))
def test_out_sharing_memory_with_a_parameter(case):
    call, params, out_shape = CASES[case]
    want = call({k: v.copy() for k, v in params.items()}, None)
    for name, value in params.items():
        shared, out = _sharing(value, out_shape, value.dtype)
        got = call({**params, name: shared}, out)
        assert got[0] is out, name
        for w, g in zip(want, got):
            if w is not None:
                np.testing.assert_array_equal(g, w, err_msg=f"{case}: out shares memory with {name}")


def test_out_sharing_memory_with_running_statistics_is_refused_before_anything_is_written():
    x = _x((N, C))
    base = np.full(N * C, 7.0, np.float32)
    rm, rv = base[:C], np.ones(C, np.float32)
    out = base.reshape(N, C)
    with pytest.raises(ValueError, match="running_mean: shares memory with out"):
        fastnorm.batch_norm(x, running_mean=rm, running_var=rv, out=out)
    assert (base == 7).all()
    same = np.zeros(C, np.float32)
    with pytest.raises(ValueError, match="running_var: shares memory with running_mean"):
        fastnorm.batch_norm(x, running_mean=same, running_var=same)


# ---- alignment: arrays at any byte offset ------------------------------------------------------------------------

def _misaligned(values, dtype):
    """``values`` in an array of ``dtype`` one byte past an aligned address."""
    dtype = np.dtype(dtype)
    raw = bytearray(values.size * dtype.itemsize + 1)
    arr = np.frombuffer(raw, dtype, values.size, offset=1).reshape(values.shape)
    assert not arr.flags.aligned
    arr[...] = values
    return arr


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_misaligned_inputs_and_outputs(dtype):
    values = _x((10, 10), np.float64)
    x = _misaligned(values, dtype)
    ref_x = values.astype(dtype)
    np.testing.assert_array_equal(fastnorm.gelu(x), fastnorm.gelu(ref_x))
    np.testing.assert_array_equal(fastnorm.layer_norm(x), fastnorm.layer_norm(ref_x))
    np.testing.assert_array_equal(fastnorm.batch_norm(x), fastnorm.batch_norm(ref_x))
    np.testing.assert_array_equal(fastnorm.moments(x, axis=0).mean, fastnorm.moments(ref_x, axis=0).mean)
    out = _misaligned(np.zeros((10, 10)), dtype)
    assert fastnorm.tanh(x, out=out) is out
    np.testing.assert_array_equal(out, fastnorm.tanh(ref_x))
    g = _misaligned(np.linspace(0.5, 1.5, 10), np.float64)
    np.testing.assert_array_equal(fastnorm.batch_norm(x, gamma=g), fastnorm.batch_norm(ref_x, gamma=g.copy()))


def test_the_bindings_refuse_misaligned_buffers():
    x = _misaligned(np.zeros(8), np.float32)
    with pytest.raises(ValueError, match="aligned"):
        fastnorm._C.activation_forward(0, x, np.empty(8, np.float32), 0.0, 0.0, 1, False)


# ---- memory: no scratch that grows faster than the data --------------------------------------------------------

def peak_growth_mib(setup, call):
    """How far the peak resident memory of a fresh process grows during ``call`` (after ``setup`` ran), in MiB:
    the C++ kernels' scratch counts too, which tracemalloc would miss."""
    import subprocess
    import sys
    code = ("import resource, numpy as np, fastnorm\n" + setup + "\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n" + call + "\n"
            "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return float(done.stdout.strip().splitlines()[-1])


def test_prelu_backward_with_many_channels_keeps_its_scratch_small():
    # x of 8 MiB with 2**20 channels: per-task partial sums of every channel took 1 GiB
    setup = ("x = np.random.default_rng(0).standard_normal((1, 2**20, 2)).astype(np.float32)\n"
             "dy = np.ones_like(x); alpha = np.full(2**20, 0.25, np.float32)\n"
             "fastnorm.prelu_backward(dy[:, :8], x[:, :8], alpha[:8])")
    growth = peak_growth_mib(setup, "dx, dalpha = fastnorm.prelu_backward(dy, x, alpha)")
    assert growth < 64, f"prelu_backward of an 8 MiB array grew the peak memory by {growth:.0f} MiB"


@pytest.mark.parametrize("shape", [(1, 2 ** 14, 3), (3, 2 ** 13, 1), (2, 2 ** 13)])
def test_prelu_backward_by_channel_blocks_is_exact(shape):
    x, dy = _x(shape), _x(shape, seed=1)
    alpha = np.linspace(0.1, 0.3, shape[1]).astype(np.float32)
    dx, dalpha = fastnorm.prelu_backward(dy, x, alpha)
    a = alpha.reshape((1, -1) + (1,) * (len(shape) - 2))
    axes = (0,) + tuple(range(2, len(shape)))
    want = np.where(x > 0, 0, dy.astype(np.float64) * x).sum(axis=axes)
    np.testing.assert_allclose(dalpha, want, rtol=1e-6, atol=1e-12)
    np.testing.assert_array_equal(dx, np.where(x > 0, dy, a * dy))
    for threads in (1, 2, 3):
        again = fastnorm.prelu_backward(dy, x, alpha, num_threads=threads)
        np.testing.assert_array_equal(again[1], dalpha)


# ---- arguments: bad values are TypeError / ValueError naming the argument, checked before anything is written ----

def test_uniform_bounds_whose_range_overflows_are_refused():
    g = fastnorm.random.Generator(0)
    with pytest.raises(ValueError, match="low, high: the range high - low overflows float32"):
        g.uniform(3, low=-3e38, high=3e38)
    with pytest.raises(ValueError, match="low, high: bounds beyond the largest float32"):
        g.uniform(3, low=-1e308, high=1e308)
    with pytest.raises(ValueError, match="overflows float64"):
        g.uniform(3, low=-1e308, high=1e308, dtype=np.float64)
    with pytest.raises(ValueError, match="largest float16"):
        g.uniform(3, low=0, high=1e5, dtype=np.float16)
    assert np.isfinite(g.uniform(1000, low=-1.6e38, high=1.6e38)).all()


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16])
def test_narrow_batch_counters_are_refused(dtype):
    x = _x((8, 3))
    rm, rv = np.zeros(3), np.ones(3)
    with pytest.raises(TypeError, match="num_batches_tracked: expected an integer dtype of 32 bits"):
        fastnorm.batch_norm(x, running_mean=rm, running_var=rv, momentum=None,
                            num_batches_tracked=np.array(0, dtype))
    assert not rm.any() and (rv == 1).all()


def test_counters_that_would_wrap_or_reach_zero_are_refused_before_anything_is_written():
    x = _x((8, 3))
    for value, dtype in [(-1, np.int64), (np.iinfo(np.int32).max, np.int32)]:
        rm, rv, out = np.zeros(3), np.ones(3), np.full((8, 3), 5.0, np.float32)
        with pytest.raises(ValueError, match="num_batches_tracked: expected a count >= 0"):
            fastnorm.batch_norm(x, running_mean=rm, running_var=rv, momentum=None,
                                num_batches_tracked=np.array(value, dtype), out=out)
        assert (out == 5).all() and not rm.any()
    out = np.full((8, 3), 5.0, np.float32)
    with pytest.raises(ValueError, match="num_batches_tracked: required with momentum=None"):
        fastnorm.batch_norm(x, running_mean=np.zeros(3), running_var=np.ones(3), momentum=None, out=out)
    assert (out == 5).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_eps_too_small_for_float32_is_refused(dtype):
    x = np.ones((4, 3), dtype)  # constant channels: rstd = 1 / sqrt(eps)
    for call in (lambda e: fastnorm.batch_norm(x, eps=e), lambda e: fastnorm.layer_norm(x, eps=e),
                 lambda e: fastnorm.group_norm(x, 1, eps=e), lambda e: fastnorm.rms_norm(x * 0, eps=e)):
        with pytest.raises(ValueError, match="eps: at least"):
            call(1e-78)
        assert np.isfinite(call(1e-76)).all()
    # float64 data keeps any positive eps
    assert np.isfinite(fastnorm.batch_norm(np.ones((4, 3)), eps=1e-300)).all()


def test_extreme_values():
    big = np.finfo(np.float32).max
    x = np.array([big / 5, big, -big, 4.0, np.nan], np.float32)
    y = fastnorm.hardswish(x)
    np.testing.assert_array_equal(y[:4], [big / 5, big, -0.0, 4.0])
    assert np.isnan(y[4])
    m = fastnorm.moments(np.array([np.finfo(float).max, 3, 88.5]))
    np.testing.assert_allclose(m.mean, np.finfo(float).max / 3, rtol=1e-15)
    m = fastnorm.moments(np.array([[1e308, 1.0], [1e308, 3.0]]), axis=0)
    np.testing.assert_allclose(m.mean, [1e308, 2.0], rtol=1e-15)
    np.testing.assert_allclose(m.m2, [0.0, 2.0], atol=1e-300)



NORMS_OF_UNITS = {  # name -> (forward of x, x viewed with the units on kept axes, the axes reduced)
    "batch_norm": (lambda x, **kw: fastnorm.batch_norm(x, **kw), lambda x: x.reshape(4, 3, 5), (0, 2)),
    "batch_norm_last": (lambda x, **kw: fastnorm.batch_norm(x, axis=-1, **kw), lambda x: x.reshape(12, 5), (0,)),
    "layer_norm": (lambda x, **kw: fastnorm.layer_norm(x, axis=(1, 2), **kw), lambda x: x.reshape(4, 15), (1,)),
    "rms_norm": (lambda x, **kw: fastnorm.rms_norm(x, eps=1e-5, **kw), lambda x: x.reshape(12, 5), (1,)),
    "group_norm": (lambda x, **kw: fastnorm.group_norm(x, 3, **kw), lambda x: x.reshape(4, 3, 5), (2,)),
    "instance_norm_last": (lambda x, **kw: fastnorm.instance_norm(x, axis=-1, **kw),
                           lambda x: x.reshape(4, 3, 5), (1,)),
}


@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("name", NORMS_OF_UNITS)
def test_float64_norms_of_data_spread_past_1e154(name, in_place):
    # two units spread over +-1e307 (sums of squares past the largest double), the others ordinary: each unit
    # normalizes as the same values scaled down by 2**-1000 (exactly) do, its mean and rstd scaled back; the
    # ordinary units keep their bits
    forward, units, reduce = NORMS_OF_UNITS[name]
    x = _x((4, 3, 5), np.float64)
    kept = [n for i, n in enumerate(units(x).shape) if i not in reduce]
    extreme = np.zeros(math.prod(kept), bool)
    extreme[:2] = True
    extreme = extreme.reshape(kept)
    wide = np.expand_dims(extreme, reduce)
    big, scaled = x.copy(), x.copy()
    units(big)[...] = np.where(wide, units(x) * 1e307, units(x))
    units(scaled)[...] = np.where(wide, units(big) * 2.0 ** -1000, units(x))
    expected = forward(scaled, return_stats=True)
    given = big.copy()
    got = forward(given, return_stats=True, out=given if in_place else None)
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(np.where(wide, 0, units(got[0])), np.where(wide, 0, units(expected[0])))
    if not in_place:
        np.testing.assert_array_equal(given, big)
    for got_s, expected_s, power in zip(got[1:], expected[1:], (1000, -1000)[-(len(got) - 1):]):
        np.testing.assert_allclose(got_s, np.ldexp(expected_s, np.where(extreme, power, 0).reshape(got_s.shape)),
                                   rtol=1e-13)


@pytest.mark.parametrize("spread", [1e120, 1e200, 1e300])
def test_float64_backwards_of_data_spread_far(spread):
    # gradients of x with a spread past 1e150 (the constant of (x - mean) in dx near rstd**2 leaves the doubles'
    # range) equal those of the same values scaled down by a power of two, scaled back
    x = _x((6, 4, 2), np.float64) * spread
    dy = _x((6, 4, 2), np.float64, seed=1)
    down = 2.0 ** (66 - math.floor(math.log2(spread)))  # a spread near 1e20: eps plays no part in either
    cases = ((fastnorm.batch_norm, fastnorm.batch_norm_backward, np.ones(4)),
             (fastnorm.layer_norm, fastnorm.layer_norm_backward, np.ones(2)),
             (lambda x, **kw: fastnorm.group_norm(x, 2, **kw),
              lambda dy, x, m, r, g: fastnorm.group_norm_backward(dy, x, m, r, 2, g), np.ones(4)))
    for forward, backward, gamma in cases:
        _, mean, rstd = forward(x, return_stats=True)
        _, mean_s, rstd_s = forward(x * down, return_stats=True)
        dx, dgamma, dbeta = backward(dy, x, mean, rstd, gamma)
        dx_s, dgamma_s, dbeta_s = backward(dy, x * down, mean_s, rstd_s, gamma)
        np.testing.assert_allclose(dx, dx_s * down, rtol=1e-11)
        np.testing.assert_allclose(dgamma, dgamma_s, rtol=1e-11)
        np.testing.assert_array_equal(dbeta, dbeta_s)

def test_half_parameter_gradients_do_not_overflow():
    x = np.random.default_rng(0).standard_normal((70000, 2)).astype(np.float16)
    dy = np.ones_like(x)
    _, mean, rstd = fastnorm.batch_norm(x, return_stats=True)
    _, dgamma, dbeta = fastnorm.batch_norm_backward(dy, x, mean, rstd, np.ones(2))
    assert dbeta.dtype == np.float32
    np.testing.assert_array_equal(dbeta, [70000, 70000])


BAD_ARGUMENTS = [
    # (call, exception, message)
    (lambda: fastnorm.relu_backward(np.ones(3), np.ones(3), out=np.ones(3, np.int64)), TypeError, "out"),
    (lambda: fastnorm.moments(np.ones((2, 3)), axis=float("inf")), TypeError, "axis: expected an int"),
    (lambda: fastnorm.moments(np.ones((2, 3)), axis=1.0), TypeError, "axis: expected an int"),
    (lambda: fastnorm.maxout(np.ones((2, 4)), float("inf")), TypeError, "pieces: expected an int"),
    (lambda: fastnorm.group_norm(np.ones((2, 4, 3)), float("inf")), TypeError, "num_groups: expected an int"),
    (lambda: fastnorm.random.Generator(0).uniform((2, float("inf"))), TypeError, "size: expected an int"),
    (lambda: fastnorm.random.Generator(0).uniform("12"), TypeError, "size: expected an int"),
    (lambda: fastnorm.random.Generator(0).uniform((2 ** 62, 2 ** 62)), ValueError, "size: .* too many"),
    (lambda: setattr(fastnorm.random.Generator(0), "state", {"algorithm": "philox4x32_10"}), ValueError,
     "state: missing 'key'"),
    (lambda: setattr(fastnorm.random.Generator(0), "state",
                     {"algorithm": "philox4x32_10", "key": float("inf"), "counter": 0}), TypeError, "state"),
    (lambda: fastnorm.init.xavier_normal((2, 3, 0)), ValueError, "shape: .* zero fan_avg"),
    (lambda: fastnorm.init.xavier_uniform((2, 3, 0)), ValueError, "shape: .* zero fan_avg"),
    (lambda: fastnorm.init.dirac((2, 3, 0)), ValueError, "shape: dirac needs a kernel"),
    (lambda: fastnorm.init.normal(3, std="a"), TypeError, "std: expected a real number"),
    (lambda: fastnorm.merge_moments(None, fastnorm.moments(np.ones(3))), TypeError, "a: expected Moments"),
    (lambda: fastnorm.batch_norm(np.ones((4, 3)), negative_slope="a", activation="leaky_relu"), TypeError,
     "negative_slope: expected a real number"),
    (lambda: fastnorm.batch_norm(np.ones((4, 3)), momentum="a"), TypeError, "momentum: expected a real number"),
    (lambda: fastnorm.batch_norm(np.ones((4, 3)), eps="a"), TypeError, "eps: expected a real number"),
    (lambda: fastnorm.preprocessing.PCA(eps="a").fit(np.ones((3, 2))), TypeError, "eps: expected a real number"),
    (lambda: fastnorm.preprocessing.Whitening(eps=-1).fit(np.ones((3, 2))), ValueError,
     "eps: expected a number >= 0"),
    (lambda: fastnorm.layers.BatchNorm(float("inf")), TypeError, "num_features: expected an int"),
    (lambda: fastnorm.layers.GroupNorm(2, 2.5), TypeError, "num_channels: expected an int"),
    (lambda: fastnorm.set_buffer_cache(float("inf")), (TypeError, ValueError), "nbytes"),
]


@pytest.mark.parametrize("index", range(len(BAD_ARGUMENTS)))
def test_bad_arguments_name_themselves(index):
    call, exc, message = BAD_ARGUMENTS[index]
    with pytest.raises(exc, match=message):
        call()


def test_empty_rows_need_no_parameters_as_large_as_a_row():
    x = np.empty((0, 2 ** 40), np.float32)
    y, mean, rstd = fastnorm.layer_norm(x, return_stats=True)
    assert y.shape == x.shape and mean.shape == rstd.shape == (0,)
    dx, dgamma, dbeta = fastnorm.layer_norm_backward(x, x, mean, rstd)
    assert dx.shape == x.shape and dgamma is None
    assert fastnorm.rms_norm(np.empty((3, 0))).shape == (3, 0)
    _, mean, rstd = fastnorm.layer_norm(np.empty((3, 0)), return_stats=True)
    assert np.isnan(mean).all() and np.isnan(rstd).all()


# ---- long rows: no default parameter or per-feature scratch as large as a row ---------------------------------------

def test_a_long_row_without_gamma_matches_the_reference_and_gamma_of_ones():
    D = (1 << 20) + 37  # past the length up to which layer norm's backward materialises its defaults
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((2, D)) * 2 + 1).astype(np.float32)
    dy = rng.standard_normal((2, D)).astype(np.float32)
    ones = np.ones(D, np.float32)
    y, mean, rstd = fastnorm.layer_norm(x, return_stats=True)
    np.testing.assert_array_equal(y, fastnorm.layer_norm(x, ones, np.zeros(D, np.float32)))
    dx, dgamma, dbeta = fastnorm.layer_norm_backward(dy, x, mean, rstd)
    assert dgamma is None and dbeta is None
    dx1, dgamma1, _ = fastnorm.layer_norm_backward(dy, x, mean, rstd, ones)
    np.testing.assert_array_equal(dx, dx1)
    want_dx, want_dgamma, _ = __import__("reference").layer_norm_grads(dy, x)
    np.testing.assert_allclose(dx, want_dx, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dgamma1, want_dgamma, rtol=1e-4, atol=1e-4)
    for threads in (1, 2):
        np.testing.assert_array_equal(fastnorm.layer_norm_backward(dy, x, mean, rstd, num_threads=threads)[0], dx)
        np.testing.assert_array_equal(fastnorm.rms_norm_backward(dy, x, rstd, num_threads=threads)[0],
                                      fastnorm.rms_norm_backward(dy, x, rstd, ones, num_threads=threads)[0])


def test_one_long_row_needs_no_memory_as_large_as_the_row():
    # a 64 MiB row: the defaults (gamma, beta) and the backward's per-feature partials each were that large
    setup = ("x = np.random.default_rng(0).standard_normal((1, 1 << 24)).astype(np.float32)\n"
             "dy = np.ones_like(x); out = np.empty_like(x)\n"
             "fastnorm.layer_norm(x[:, :8])\n"
             "mean = x.mean(axis=1, dtype=np.float64); rstd = 1 / np.sqrt(x.var(axis=1, dtype=np.float64) + 1e-5)")
    forward = peak_growth_mib(setup, "fastnorm.layer_norm(x, out=out); fastnorm.rms_norm(x, out=out)")
    backward = peak_growth_mib(setup, "fastnorm.layer_norm_backward(dy, x, mean, rstd, out=out)")
    assert forward < 16, f"layer_norm of a 64 MiB row grew the peak memory by {forward:.0f} MiB"
    assert backward < 16, f"layer_norm_backward of a 64 MiB row grew the peak memory by {backward:.0f} MiB"
