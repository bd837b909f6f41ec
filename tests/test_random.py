"""fastnorm.random: Philox known answers, distributions (moments and Kolmogorov-Smirnov), reproducibility across
thread counts, ISA levels and saved state, and bad input."""
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import fastnorm
from fastnorm import _C
from fastnorm.random import Generator, as_generator

N = 1_000_000


@pytest.mark.parametrize("ctr,key,expected", [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
])
def test_philox_matches_random123_known_answers(ctr, key, expected):
    assert tuple(_C.philox4x32_10(list(ctr), list(key))) == expected


def _ks_statistic(sample, cdf):
    x = np.sort(np.asarray(sample, dtype=np.float64))
    f = cdf(x)
    n = len(x)
    return max(np.max(np.arange(1, n + 1) / n - f), np.max(f - np.arange(n) / n))


def _normal_cdf(x):
    return 0.5 * np.vectorize(math.erfc)(-x / math.sqrt(2))


# The 1% critical value of the one-sample KS statistic is about 1.63 / sqrt(n).
KS_LIMIT = 1.63 / math.sqrt(N)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normal_moments_and_ks(dtype):
    z = Generator(1).normal(N, loc=2.0, scale=3.0, dtype=dtype)
    assert z.dtype == dtype and z.shape == (N,)
    assert abs(z.mean() - 2.0) < 5 * 3 / math.sqrt(N)
    assert abs(z.std() / 3.0 - 1) < 5 * math.sqrt(0.5 / N)
    s = (z.astype(np.float64) - 2.0) / 3.0
    # Third and fourth moments within 5 standard errors (sqrt(15 / N) and sqrt(96 / N) for a normal sample).
    assert abs(np.mean(s ** 3)) < 5 * math.sqrt(15 / N) and abs(np.mean(s ** 4) - 3) < 5 * math.sqrt(96 / N)
    assert _ks_statistic(s[:200_000], _normal_cdf) < 1.63 / math.sqrt(200_000)
    # Box-Muller pairs (values k = 0, 1 of each column: positions j and 256 + j of a chunk) point in a uniform
    # direction: their angle's distribution, and the pairs are uncorrelated.
    per_chunk = 1024 if dtype == np.float32 else 512
    chunks = s[: N // per_chunk * per_chunk].reshape(-1, per_chunk // 256, 256)
    x, y = chunks[:, 0].ravel(), chunks[:, 1].ravel()
    angle = (np.arctan2(y, x) + math.pi) / (2 * math.pi)
    assert _ks_statistic(angle[:200_000], lambda v: v) < 1.63 / math.sqrt(200_000)
    assert abs(np.corrcoef(x, y)[0, 1]) < 5 / math.sqrt(x.size)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_uniform_moments_and_ks(dtype):
    u = Generator(2).uniform(N, low=-1.0, high=3.0, dtype=dtype)
    assert u.min() >= -1.0 and u.max() < 3.0
    assert abs(u.mean() - 1.0) < 5 * 4 / math.sqrt(12 * N)
    assert _ks_statistic((u.astype(np.float64) + 1) / 4, lambda x: x) < KS_LIMIT


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("a,b", [(-2.0, 2.0), (-1.0, 0.5), (3.0, 5.0), (-6.0, -4.0)])
def test_truncated_normal_matches_its_distribution(dtype, a, b):
    t = Generator(3).truncated_normal(N, loc=1.0, scale=2.0, a=a, b=b, dtype=dtype)
    z = (t.astype(np.float64) - 1.0) / 2.0
    assert z.min() >= a - 1e-6 and z.max() <= b + 1e-6
    pa, pb = (_normal_cdf(np.array([a, b])))
    cdf = lambda x: (_normal_cdf(x) - pa) / (pb - pa)  # noqa: E731
    assert _ks_statistic(z[:200_000], cdf) < 1.63 / math.sqrt(200_000)
    phi = lambda v: math.exp(-v * v / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    mean = (phi(a) - phi(b)) / (pb - pa)
    assert abs(z.mean() - mean) < 0.01


@pytest.mark.parametrize("method", ["normal", "uniform", "truncated_normal"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bitwise_identical_for_any_thread_count(method, dtype):
    n = 3 * 16384 * 2 + 77
    outs = [getattr(Generator(7), method)(n, dtype=dtype, num_threads=t).tobytes() for t in (1, 2, 3)]
    assert outs[0] == outs[1] == outs[2]


def test_bitwise_identical_at_every_isa_level():
    code = ("import fastnorm.random as r, numpy as np, hashlib; g = r.Generator(11); "
            "print(hashlib.sha256(b''.join(getattr(g, m)(10007, dtype=d).tobytes() "
            "for m in ('normal', 'uniform', 'truncated_normal') for d in (np.float32, np.float64))).hexdigest())")
    digests = set()
    for isa in fastnorm.info()["supported_isas"]:
        env = dict(os.environ, FASTNORM_ISA=isa)
        digests.add(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                   check=True).stdout)
    assert len(digests) == 1


def test_state_save_and_restore_reproduces():
    g = Generator(5)
    g.normal(1000)
    saved = g.state
    a = g.uniform((3, 7)), g.truncated_normal(11, dtype=np.float64)
    g.state = saved
    b = g.uniform((3, 7)), g.truncated_normal(11, dtype=np.float64)
    assert all(x.tobytes() == y.tobytes() for x, y in zip(a, b))
    h = Generator(999)
    h.state = saved
    assert h.uniform((3, 7)).tobytes() == a[0].tobytes()


def test_calls_continue_the_sequence_and_seeds_differ():
    g = Generator(0)
    assert g.normal(5).tobytes() != g.normal(5).tobytes()
    assert Generator(0).normal(5).tobytes() != Generator(1).normal(5).tobytes()
    assert Generator(0).normal(5).tobytes() == Generator(0).normal(5).tobytes()


def test_size_none_out_and_dtypes():
    g = Generator(0)
    assert np.ndim(g.normal()) == 0
    assert g.normal(4, dtype=np.float16).dtype == np.float16
    out = np.empty((5, 6), np.float64)[:, ::2]  # non-contiguous
    r = g.uniform(out=out)
    assert r is out and (out >= 0).all() and (out < 1).all()
    assert g.normal((0, 3)).shape == (0, 3)


def test_bad_input():
    g = Generator(0)
    with pytest.raises(ValueError, match="a, b"):
        g.truncated_normal(3, a=1.0, b=1.0)
    with pytest.raises(ValueError, match="scale"):
        g.normal(3, scale=-1.0)
    with pytest.raises(ValueError, match="low, high"):
        g.uniform(3, low=2, high=1)
    with pytest.raises(TypeError, match="dtype"):
        g.normal(3, dtype=np.int32)
    with pytest.raises(ValueError, match="size"):
        g.normal(-1)
    with pytest.raises(ValueError, match="out"):
        g.normal((2, 2), out=np.empty((3, 3), np.float32))
    with pytest.raises(ValueError, match="seed"):
        Generator(-1)
    with pytest.raises(TypeError, match="seed"):
        Generator(1.5)
    with pytest.raises(ValueError, match="state"):
        g.state = {"algorithm": "mt19937"}
    with pytest.raises(TypeError, match="rng"):
        as_generator("seed")


def test_numpy_generator_is_accepted():
    s = as_generator(np.random.default_rng(0))
    t = s.truncated_normal(10000, a=-1, b=1, dtype=np.float64)
    assert t.min() >= -1 and t.max() <= 1
    assert s.normal((2, 3)).shape == (2, 3)


def _reference_columns(key, counter, chunks, dtype):
    """The words each column of each chunk reads (chunks, 4, 256), as uint64, from the scalar reference Philox
    (_C.philox4x32_10), as random.h documents: a chunk's blocks (192 for float32, 256 for float64) laid out
    word-major (word k of block j at k * blocks + j) and read as rows of 256 words; float32 reads three rows, the
    fourth field being their low bytes ((a & 255) << 24 | (b & 255) << 16 | (c & 255) << 8)."""
    per_chunk = 192 if dtype == np.float32 else 256
    out = np.empty((chunks, 4, 256), dtype=np.uint64)
    for c in range(chunks):
        first = counter + per_chunk * c
        blocks = np.array([_C.philox4x32_10([b & 0xFFFFFFFF, b >> 32, 0, 0], [key & 0xFFFFFFFF, key >> 32])
                           for b in range(first, first + per_chunk)], dtype=np.uint64)
        rows = blocks.T.reshape(-1, 256)
        if dtype == np.float32:
            a, b, cc = rows
            rows = np.stack([a, b, cc, ((a & 255) << 24) | ((b & 255) << 16) | ((cc & 255) << 8)])
        out[c] = rows
    return out


def test_samples_follow_the_reference_philox():
    """The vectorised Philox of each ISA level against the scalar reference: float32 uniform value k of column j
    of chunk c (position 1024 c + 256 k + j) is field k >> 8, times 2**-24."""
    g = Generator(5)
    g.state = dict(g.state, counter=2**32 - 300)  # crosses a carry into the counter's high word
    key, counter = g.state["key"], g.state["counter"]
    u = g.uniform(3 * 1024)
    expected = (_reference_columns(key, counter, 3, np.float32) >> 8).astype(np.float64) * 2.0 ** -24
    np.testing.assert_array_equal(u, expected.reshape(-1))
    assert g.state["counter"] == counter + 3 * 192  # three words per column: 192 blocks per chunk


def _box_muller_reference(cols, dtype):
    """Box-Muller in float64 from the columns' words (chunks, 4, 256), the mapping random.cpp documents: radius
    sqrt(-2 log u), u in (0, 1]; angle 2 pi t with t in [-1/8, 1/8) from the angle word's high bits, and of the
    two bits below t's, the higher negating the cosine and the lower swapping the pair.  float32: u from field 0
    (2), t from the 22 high bits of field 1 (3); float64: u from 53 bits of words 0-1, t from 52 bits of words 2-3
    and the quarter from word 3's low bits.  Returns values in output order."""
    w = [cols[:, k] for k in range(4)]
    if dtype == np.float32:
        pairs = [((w[0] >> 8) + 1) * 2.0 ** -24, ((w[2] >> 8) + 1) * 2.0 ** -24]
        angle_words = [w[1], w[3]]
        ts = [(a.astype(np.uint32).view(np.int32) >> 10) * 2.0 ** -24 for a in angle_words]
        negate, swap = 1 << 9, 1 << 8
    else:
        pairs = [((((w[0] << 32) | w[1]) >> 11) + 1).astype(np.float64) * 2.0 ** -53]
        angle_words = [w[3]]
        ts = [((((w[2] << 32) | w[3]) >> 12).astype(np.int64) - 2 ** 51) * 2.0 ** -54]
        negate, swap = 2, 1
    values = []
    for u, t, a in zip(pairs, ts, angle_words):
        r = np.sqrt(-2 * np.log(u))
        c, s = np.cos(2 * np.pi * t), np.sin(2 * np.pi * t)
        c = np.where(a & negate, -c, c)
        swapped = (a & swap).astype(bool)
        values += [r * np.where(swapped, s, c), r * np.where(swapped, c, s)]
    return np.stack(values, axis=1).reshape(-1)  # (chunks, values per column, 256), in output order


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("loc,scale", [(0.0, 1.0), (2.0, 3.0)])  # the standard path and the affine one
def test_normal_follows_the_box_muller_reference(dtype, loc, scale):
    """normal() against Box-Muller in float64 on the scalar reference Philox's words: within 4 ulps (float32:
    radius 1.1 ulp, sine and cosine 1.7), plus the rounding of loc + scale z."""
    g = Generator(9)
    g.state = dict(g.state, counter=2**32 - 300)
    key, counter = g.state["key"], g.state["counter"]
    per_column = 4 if dtype == np.float32 else 2
    chunks = 3
    z = g.normal(chunks * 256 * per_column, loc=loc, scale=scale, dtype=dtype)
    expected = _box_muller_reference(_reference_columns(key, counter, chunks, dtype), dtype)
    rtol = 6e-7 if dtype == np.float32 else 1e-15
    np.testing.assert_allclose(z.astype(np.float64), loc + scale * expected, rtol=rtol,
                               atol=2 * np.finfo(dtype).eps * loc)


@pytest.mark.parametrize("method", ["normal", "uniform", "truncated_normal"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_streaming_stores_give_the_same_bits(method, dtype, stream_threshold):
    results = []
    for threshold in (-1, 0):
        stream_threshold(threshold)
        g = Generator(3)
        out = np.empty(100_003, dtype)  # a partial last chunk too
        getattr(g, method)(out.shape, out=out, num_threads=2)
        results.append(out.tobytes())
    assert results[0] == results[1]


def test_out_arrays_to_fill_are_checked_the_same_way_everywhere_before_any_sampling():
    """Samplers (whole or sharded) and initializers validate out= with one helper: a read-only, misshapen or
    integer array is refused naming out, and the generator has not moved on."""
    from fastnorm.random import Generator
    g = Generator(3)
    state = g.state
    ro = np.zeros((4, 4), np.float32)
    ro.flags.writeable = False
    for call in (lambda: g.normal((4, 4), out=ro), lambda: g.normal((4, 4), out=np.zeros((4, 5), np.float32)),
                 lambda: g.uniform((4, 4), out=np.zeros((4, 4), np.int32)),
                 lambda: g.normal((8, 4), out=np.zeros((3, 4), np.float32), shard=slice(0, 4))):
        with pytest.raises((TypeError, ValueError), match="^out: "):
            call()
        assert g.state == state
    with pytest.raises(ValueError, match="^out: array is read-only"):
        fastnorm.init.kaiming_normal(out=ro, layout="out_in")
    with pytest.raises(ValueError, match="^out: array is read-only"):
        fastnorm.init.zeros(out=ro)
