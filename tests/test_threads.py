"""Threads: the controls, bitwise-identical results for any thread count, and safety after fork()."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastnorm
import reference as ref
from helpers import call_backward, call_forward, norm_backward, norm_forward, norm_layouts, norm_params

NAMES = sorted(ref.ELEMENTWISE)
# Large enough for several chunks per thread, with a ragged tail.
N = 3 * 16384 * 3 + 123


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bitwise_identical_for_any_thread_count(name, dtype, rng):
    kw = ref.ELEMENTWISE[name][2]
    x = (rng.standard_normal(N) * 4).astype(dtype)
    dy = rng.standard_normal(N).astype(dtype)
    ys = [call_forward(name, x, kw, num_threads=t) for t in (1, 2, 3)]
    dxs = [call_backward(name, dy, x, kw, num_threads=t) for t in (1, 2, 3)]
    for y, dx in zip(ys[1:], dxs[1:]):
        assert y.tobytes() == ys[0].tobytes()
        assert dx.tobytes() == dxs[0].tobytes()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("offset", [0, 1, 16])  # output 64-byte aligned or not
def test_streaming_stores_give_the_same_bits(name, dtype, offset, rng, stream_threshold):
    kw = ref.ELEMENTWISE[name][2]
    x = (rng.standard_normal(N) * 4).astype(dtype)
    dy = rng.standard_normal(N).astype(dtype)
    results = []
    for threshold in (-1, 0):
        stream_threshold(threshold)
        y = np.empty(N + offset, dtype)[offset:]
        dx = np.empty(N + offset, dtype)[offset:]
        call_forward(name, x, kw, out=y, num_threads=2)
        call_backward(name, dy, x, kw, out=dx, num_threads=2)
        copied = np.empty(N + offset, dtype)[offset:]
        fastnorm._C.copy(x, copied, 2)
        assert copied.tobytes() == x.tobytes()
        results.append(y.tobytes() + dx.tobytes())
    assert results[0] == results[1]


@pytest.mark.parametrize("name,shape,axis", norm_layouts())
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_normalization_bitwise_identical_for_any_thread_count(name, shape, axis, dtype, rng):
    """Each layout of reference.NORMS with its batch axis grown to about 300k values: several tasks per thread."""
    shape = (shape[0] * -(-300_000 // int(np.prod(shape))),) + shape[1:]
    x = (rng.standard_normal(shape) * 2 + 3).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    gamma, beta = norm_params(name, shape, axis, rng, dtype)
    results = []
    for t in (1, 2, 3):
        y, stats = norm_forward(name, x, gamma, beta, axis, num_threads=t)
        grads = norm_backward(name, dy, x, stats, gamma, beta, axis, num_threads=t)
        results.append(b"".join(np.asarray(a).tobytes() for a in (y, *stats, *grads)))
    assert results[1] == results[0] and results[2] == results[0]


@pytest.mark.parametrize("shape,axis", [((64, 8, 700), 1), ((20000, 16), -1), ((N,), 0)])
def test_prelu_and_maxout_bitwise_identical_for_any_thread_count(shape, axis, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    alpha = rng.uniform(0, 0.3, shape[axis]).astype(np.float32)
    results = []
    for t in (1, 2, 3):
        dx, dalpha = fastnorm.prelu_backward(dy, x, alpha, axis=axis, num_threads=t)
        pieces = 2 if shape[axis] % 2 == 0 else 1
        m = fastnorm.maxout(x, pieces, axis=axis, num_threads=t)
        mdx = fastnorm.maxout_backward(m, x, pieces, axis=axis, num_threads=t)
        results.append(b"".join(a.tobytes() for a in (fastnorm.prelu(x, alpha, axis=axis, num_threads=t), dx,
                                                       dalpha, m, mdx)))
    assert results[1] == results[0] and results[2] == results[0]


def test_set_and_get_num_threads():
    default = fastnorm.get_num_threads()
    try:
        fastnorm.set_num_threads(3)
        assert fastnorm.get_num_threads() == 3
        with pytest.raises(ValueError, match="n: expected a positive thread count"):
            fastnorm.set_num_threads(0)
        with pytest.raises(TypeError, match="n: expected an int"):
            fastnorm.set_num_threads(2.5)
    finally:
        fastnorm.set_num_threads(None)
    assert fastnorm.get_num_threads() == default


def test_num_threads_argument_is_validated():
    with pytest.raises(ValueError, match="num_threads: expected a positive thread count"):
        fastnorm.relu(np.ones(3), num_threads=0)
    with pytest.raises(TypeError, match="num_threads: expected an int"):
        fastnorm.relu(np.ones(3), num_threads="2")


def test_threadpoolctl_and_omp_num_threads_are_respected():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        assert fastnorm.get_num_threads() == 1
    code = "import fastnorm; print(fastnorm.get_num_threads())"
    env = dict(os.environ, OMP_NUM_THREADS="3")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "3"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_forked_child_runs_single_threaded_without_hanging():
    code = """
import os, signal, numpy as np, fastnorm
x = np.ones(1 << 20, dtype=np.float32)
fastnorm.sigmoid(x, num_threads=2)          # the parent starts libgomp's pool
pid = os.fork()
if pid == 0:
    signal.alarm(20)
    ok = fastnorm.get_num_threads() == 1 and fastnorm.sigmoid(x)[0] > 0.7
    os._exit(0 if ok else 1)
_, status = os.waitpid(pid, 0)
print(os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "0"


def test_unsupported_isa_request_is_a_clear_error():
    env = dict(os.environ, FASTNORM_ISA="v9")
    out = subprocess.run([sys.executable, "-c", "import fastnorm"], env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "unknown ISA level 'v9': expected one of baseline, v3, v4" in out.stderr
    from fastnorm import _C
    for level in ["baseline", "v3", "v4"]:
        if level not in _C.supported_isas():
            env = dict(os.environ, FASTNORM_ISA=level)
            out = subprocess.run([sys.executable, "-c", "import fastnorm"], env=env, capture_output=True, text=True)
            assert out.returncode != 0 and "not supported by this CPU" in out.stderr


@pytest.mark.parametrize("name", NAMES)
def test_bitwise_identical_for_any_buffer_alignment(name, rng):
    """An element's result never depends on where it sits: every element goes through the same vector code."""
    kw = ref.ELEMENTWISE[name][2]
    x = (rng.standard_normal(20000) * 4).astype(np.float32)
    expected = call_forward(name, x, kw)
    expected_dx = call_backward(name, x, x, kw)
    buf = np.empty(x.size + 16, dtype=np.float32)
    for offset in range(16):
        out = buf[offset:offset + x.size]
        assert call_forward(name, x, kw, out=out).tobytes() == expected.tobytes()
        assert call_backward(name, x, x, kw, out=out).tobytes() == expected_dx.tobytes()
    shifted = np.empty(x.size + 1, dtype=np.float32)[1:]  # the input at another alignment, and one element in
    shifted[:] = x
    assert call_forward(name, shifted[1:], kw).tobytes() == expected[1:].tobytes()
