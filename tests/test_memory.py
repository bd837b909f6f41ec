"""The cache of freed result buffers (fastnorm._memory): reuse, limits, safety of live arrays, configuration."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastnorm
from fastnorm import _memory

BIG = (1 << 20) // 4 * 3  # 3 MiB of float32: above the cache's 1 MiB floor


@pytest.fixture
def cache():
    """A clean cache of the default size, restored afterwards."""
    limit = fastnorm.buffer_cache_info()["limit"]
    fastnorm.set_buffer_cache(0)
    fastnorm.set_buffer_cache(256 << 20)
    yield
    fastnorm.set_buffer_cache(limit)


def test_freed_result_is_reused_and_values_are_right(cache, rng):
    x = rng.standard_normal(BIG).astype(np.float32)
    fastnorm.relu(x)  # freed at once: its buffer goes to the cache
    info = fastnorm.buffer_cache_info()
    assert info["cached_buffers"] == 1 and info["cached_bytes"] >= x.nbytes
    hits = info["hits"]
    y = fastnorm.relu(-x)
    assert fastnorm.buffer_cache_info()["hits"] == hits + 1
    np.testing.assert_array_equal(y, np.maximum(-x, 0))
    assert y.flags.c_contiguous and y.flags.writeable and y.dtype == np.float32 and y.shape == x.shape


def test_live_arrays_and_their_views_are_never_handed_out(cache, rng):
    x = rng.standard_normal(BIG).astype(np.float32)
    y = fastnorm.tanh(x)
    view = y[::2]
    expected = view.copy()
    del y  # the view keeps the buffer alive
    assert fastnorm.buffer_cache_info()["cached_buffers"] == 0
    z = fastnorm.relu(x)
    assert not np.shares_memory(z, view)
    np.testing.assert_array_equal(view, expected)
    del view, z
    assert fastnorm.buffer_cache_info()["cached_buffers"] == 2


def test_buffers_are_matched_by_size(cache, rng):
    small = rng.standard_normal(BIG).astype(np.float32)
    large = rng.standard_normal(8 * BIG).astype(np.float32)
    fastnorm.relu(large)
    hits = fastnorm.buffer_cache_info()["hits"]
    fastnorm.relu(small)  # a buffer 8x too large is not spent on it
    assert fastnorm.buffer_cache_info()["hits"] == hits


def test_limit_bounds_what_is_kept(cache, rng):
    x = rng.standard_normal(BIG).astype(np.float32)
    ys = [fastnorm.relu(x) for _ in range(4)]
    del ys
    info = fastnorm.buffer_cache_info()
    assert info["cached_buffers"] == 4
    per_buffer = info["cached_bytes"] // 4
    fastnorm.set_buffer_cache(2 * per_buffer)  # the oldest go
    info = fastnorm.buffer_cache_info()
    assert info["cached_buffers"] == 2 and info["cached_bytes"] == 2 * per_buffer
    fastnorm.set_buffer_cache(0)
    assert fastnorm.buffer_cache_info()["cached_bytes"] == 0
    y = fastnorm.relu(x)  # off: plain NumPy arrays
    assert y.base is None


def test_array_outlives_a_cache_switched_off(cache, rng):
    x = rng.standard_normal(BIG).astype(np.float32)
    y = fastnorm.relu(x)
    fastnorm.set_buffer_cache(0)
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    del y  # freed, not cached
    assert fastnorm.buffer_cache_info()["cached_bytes"] == 0


def test_samplers_and_normalization_use_it(cache):
    g = fastnorm.random.Generator(1)
    a = g.normal((1024, 1024))
    expected = fastnorm.random.Generator(1).normal((1024, 1024))
    np.testing.assert_array_equal(a, expected)
    assert a.base is not None
    y = fastnorm.layer_norm(a)
    assert y.base is not None


def test_small_results_are_plain_numpy_arrays(rng):
    assert fastnorm.relu(rng.standard_normal(1000)).base is None


@pytest.mark.parametrize("bad, exc", [(-1, ValueError), (1.5, TypeError), ("1G", TypeError)])
def test_set_buffer_cache_rejects_bad_sizes(bad, exc):
    with pytest.raises(exc, match="nbytes"):
        fastnorm.set_buffer_cache(bad)


@pytest.mark.parametrize("text, nbytes", [("0", 0), ("64M", 64 << 20), ("1.5G", 3 << 29), ("512KiB", 512 << 10),
                                          ("1048576", 1 << 20)])
def test_size_parsing(text, nbytes):
    assert _memory._parse_size(text) == nbytes


@pytest.mark.parametrize("text", ["lots", "-1M", "M"])
def test_size_parsing_rejects_nonsense(text):
    with pytest.raises(ValueError, match="FASTNORM_BUFFER_CACHE"):
        _memory._parse_size(text)


def test_environment_variable_sets_the_limit():
    code = "import fastnorm; print(fastnorm.buffer_cache_info()['limit'])"
    env = dict(os.environ, FASTNORM_BUFFER_CACHE="32M")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert int(out.stdout) == 32 << 20
