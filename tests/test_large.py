"""Past 2**31 elements: the 64-bit index paths of an activation, moments, batch norm and one long layer norm row,
each in a fresh process whose peak memory may grow by the input and output it was given plus a bounded scratch.

Each case needs about 17 GiB (an 8 GiB float32 input and an 8 GiB output); they are skipped with the reason where
the machine has less memory available, and under the sanitizers (whose shadow memory would not fit).
"""
import os
import subprocess
import sys

import pytest

import fastnorm

N = 2 ** 31 + 20  # elements: past the largest 32-bit signed index
NEEDED_GIB = 17.5
SCRATCH_MIB = 256  # what a call may add to the peak beyond its input and output


def _available_gib():
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) / 2 ** 20
    except (OSError, KeyError, ValueError):
        return 0.0


pytestmark = [
    pytest.mark.skipif(_available_gib() < NEEDED_GIB,
                       reason=f"needs {NEEDED_GIB} GiB of available memory, this machine has "
                              f"{_available_gib():.1f} GiB"),
    pytest.mark.skipif("sanitize" in fastnorm.info()["flags"],
                       reason="the sanitizers' shadow memory would not fit beside 17 GiB of arrays"),
]


def run(code):
    """Runs ``code`` in a fresh process; it sets ``growth_mib`` (peak resident memory added by the call under test)
    and asserts its own results.  Returns growth_mib.  The memory is checked again right before (other processes
    may have taken it since the tests were collected)."""
    if _available_gib() < NEEDED_GIB:
        pytest.skip(f"needs {NEEDED_GIB} GiB of available memory, {_available_gib():.1f} GiB now")
    prelude = ("import resource, numpy as np, fastnorm\n"
               "def peak():\n    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n")
    done = subprocess.run([sys.executable, "-c", prelude + code + "\nprint(growth_mib)\n"], capture_output=True,
                          text=True, timeout=900, env=dict(os.environ, OMP_NUM_THREADS="2"))
    assert done.returncode == 0, done.stderr[-3000:]
    return float(done.stdout.strip().splitlines()[-1])


def test_relu_past_2_31_elements():
    growth = run(f"""
x = np.ones({N}, np.float32)
x[-7:] = [-1, 2, -3, 4, np.nan, -np.inf, 5]
out = np.empty_like(x)
out[...] = 0  # its pages mapped before the baseline: the call may add scratch only
before = peak()
fastnorm.relu(x, out=out)
growth_mib = peak() - before
assert (out[:1000] == 1).all() and (out[2**31 - 10: 2**31 + 10] == 1).all()
np.testing.assert_array_equal(out[-7:], [0, 2, 0, 4, np.nan, 0, 5])
""")
    assert growth < SCRATCH_MIB


def test_moments_past_2_31_elements():
    growth = run(f"""
x = np.ones({N}, np.float32)
x[-1] = 2 ** 11 + 1.0
before = peak()
m = fastnorm.moments(x)
growth_mib = peak() - before
n = {N}
assert int(m.count) == n
mean = 1 + 2 ** 11 / n
np.testing.assert_allclose(m.mean, mean, rtol=1e-14)
np.testing.assert_allclose(m.m2, (n - 1) * (1 - mean) ** 2 + (2 ** 11 + 1 - mean) ** 2, rtol=1e-10)
""")
    assert growth < SCRATCH_MIB


def test_batch_norm_past_2_31_elements():
    growth = run(f"""
x = np.ones(({N // 2}, 2), np.float32)
x[-1] = [3.0, -1.0]
out = np.empty_like(x)
out[...] = 0  # its pages mapped before the baseline: the call may add scratch only
before = peak()
y, mean, rstd = fastnorm.batch_norm(x, return_stats=True, out=out)
growth_mib = peak() - before
n = {N // 2}
for c, v in enumerate([3.0, -1.0]):
    mu = 1 + (v - 1) / n
    var = ((n - 1) * (1 - mu) ** 2 + (v - mu) ** 2) / n
    np.testing.assert_allclose(mean[c], mu, rtol=1e-14)
    np.testing.assert_allclose(rstd[c], 1 / np.sqrt(var + 1e-5), rtol=1e-9)
    np.testing.assert_allclose(out[-1, c], (v - mu) / np.sqrt(var + 1e-5), rtol=1e-5)
    np.testing.assert_allclose(out[2 ** 30 + 5, c], (1 - mu) / np.sqrt(var + 1e-5), rtol=1e-5)
""")
    assert growth < SCRATCH_MIB


def test_one_layer_norm_row_past_2_31_elements():
    growth = run(f"""
x = np.ones((1, {N}), np.float32)
x[0, -1] = 3.0
out = np.empty_like(x)
out[...] = 0  # its pages mapped before the baseline: the call may add scratch only
before = peak()
y, mean, rstd = fastnorm.layer_norm(x, return_stats=True, out=out)
growth_mib = peak() - before
n = {N}
mu = 1 + 2 / n
var = ((n - 1) * (1 - mu) ** 2 + (3 - mu) ** 2) / n
np.testing.assert_allclose(mean[0], mu, rtol=1e-14)
np.testing.assert_allclose(out[0, -1], (3 - mu) / np.sqrt(var + 1e-5), rtol=1e-5)
np.testing.assert_allclose(out[0, 2 ** 31 - 1], (1 - mu) / np.sqrt(var + 1e-5), rtol=1e-5)
""")
    assert growth < SCRATCH_MIB
