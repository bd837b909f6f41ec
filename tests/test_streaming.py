"""Normalization outputs written through L1 pieces and streamed out (past FASTNORM_STREAM_BYTES) have the bits of
plain stores: every kernel, forward and backward, with and without a fused activation, output aligned or not."""
import numpy as np
import pytest

import fastnorm

import reference as ref
from helpers import empty_at, half_dtype, norm_backward, norm_forward


def run(name, x, dy, axis, act, out, threads):
    """The normalization ``name`` (reference.NORMS) forward and backward into ``out``."""
    C = x.shape[axis]
    gamma, beta = np.linspace(0.5, 1.5, C), np.linspace(-1, 1, C)
    beta = beta if ref.NORMS[name].has_beta else None
    _, stats = norm_forward(name, x, gamma, beta, axis, activation=act, out=out[0], num_threads=threads)
    norm_backward(name, dy, x, stats, gamma, beta, axis, activation=act, out=out[1], num_threads=threads)


CASES = [  # (normalization, shape, axis, activation, threads); batch norm with 8 threads > channels: two passes
    ("batch_norm", (6, 6, 40, 50), 1, "relu", 2), ("batch_norm", (6, 6, 40, 50), 1, None, 8),
    ("batch_norm", (3, 6, 5000), 1, None, 2), ("batch_norm", (6, 40, 50, 6), -1, None, 2),
    ("batch_norm", (6, 40, 50, 6), -1, "relu", 2),
    ("group_norm", (4, 6, 50, 60), 1, None, 2), ("group_norm", (4, 6, 3000), 1, "silu", 2),
    ("group_norm", (4, 50, 60, 6), -1, None, 2), ("group_norm", (4, 50, 60, 6), -1, "gelu", 2),
    ("group_norm", (3, 40, 6, 30), 2, None, 2), ("instance_norm", (4, 6, 50, 60), 1, "relu", 2),
    ("layer_norm", (64, 1024), -1, None, 2), ("layer_norm", (200, 100), -1, "relu", 2),
    ("layer_norm", (30, 1300), -1, "gelu", 2),
    ("rms_norm", (64, 1024), -1, None, 2), ("rms_norm", (200, 100), -1, "silu", 2),
]


@pytest.mark.parametrize("name,shape,axis,activation,threads", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("offset", [0, 1])  # output 64-byte aligned, or not
def test_streaming_stores_give_the_same_bits(name, shape, axis, activation, threads, dtype, offset, rng,
                                             stream_threshold):
    x = rng.standard_normal(shape).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    results = []
    for threshold in (-1, 0):
        stream_threshold(threshold)
        out = (empty_at(shape, dtype, offset), empty_at(shape, dtype, offset))
        run(name, x, dy, axis, activation, out, threads)
        results.append(out[0].tobytes() + out[1].tobytes())
    assert results[0] == results[1]


@pytest.mark.parametrize("name,shape,axis,activation", [
    ("layer_norm", (40, 1300), -1, None), ("layer_norm", (200, 100), -1, "relu"),
    ("layer_norm", (16, 1024), -1, "gelu"),
    ("rms_norm", (40, 1300), -1, None), ("rms_norm", (200, 100), -1, "relu"),
    ("group_norm", (4, 6, 14, 15), 1, None), ("group_norm", (2, 6, 3, 700), 1, "silu"),
    ("batch_norm", (3, 6, 7, 29), 1, "relu"), ("batch_norm", (5, 7, 9, 6), -1, None),
    ("batch_norm", (3, 5, 7, 40), -1, "gelu"), ("group_norm", (3, 7, 11, 6), -1, "relu"),
    ("group_norm", (3, 7, 11, 6), -1, None), ("instance_norm", (3, 6, 7, 29), 1, None),
])
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_bits_do_not_depend_on_where_the_output_is(name, shape, axis, activation, dtype, rng, stream_threshold):
    """Rows and runs are computed a block at a time, the blocks placed to align the streamed stores: the same bits
    at any offset of the output, streamed or not (a short block at either end takes the vector path too; bfloat16
    runs take two blocks at a time at v4, streamed from a 64-byte boundary)."""
    dtype = half_dtype(dtype) if dtype in ("float16", "bfloat16") else np.dtype(dtype)
    x = rng.standard_normal(shape).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    results = set()
    for threshold in (-1, 0):
        stream_threshold(threshold)
        for offset in (0, 1, 3, 8, 13):
            out = (empty_at(shape, dtype, offset), empty_at(shape, dtype, offset))
            run(name, x, dy, axis, activation, out, 2)
            results.add(out[0].tobytes() + out[1].tobytes())
    assert len(results) == 1


@pytest.mark.parametrize("shape", [(30, 1300), (16, 1024), (5, 4099)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
def test_softmax_rows_streamed_or_not_at_any_offset(shape, dtype, threads, rng, stream_threshold):
    """Long log-softmax rows go out through streamed blocks (and prefetch the next row): the bits of plain stores,
    wherever the output lies; softmax's alongside."""
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    results = set()
    for threshold in (-1, 0):
        stream_threshold(threshold)
        for offset in (0, 1, 3, 13):
            out = (empty_at(shape, dtype, offset), empty_at(shape, dtype, offset))
            fastnorm.log_softmax(x, out=out[0], num_threads=threads)
            fastnorm.softmax(x, out=out[1], num_threads=threads)
            results.add(out[0].tobytes() + out[1].tobytes())
    assert len(results) == 1
    np.testing.assert_allclose(out[0], ref.log_softmax(x.astype(np.float64)), rtol=0, atol=1e-5)
