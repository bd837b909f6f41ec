"""Normalization outputs written through L1 pieces and streamed out (past FASTNORM_STREAM_BYTES) have the bits of
plain stores: every kernel, forward and backward, with and without a fused activation, output aligned or not."""
import numpy as np
import pytest

import fastnorm
from helpers import empty_at, half_dtype


def _batch(x, dy, axis, act, out, threads):  # 8 threads > channels: the two-pass backward, else by channel
    C = x.shape[axis]
    gamma, beta = np.linspace(0.5, 1.5, C), np.linspace(-1, 1, C)
    _, m, r = fastnorm.batch_norm(x, gamma=gamma, beta=beta, axis=axis, activation=act, return_stats=True, out=out[0],
                                  num_threads=2)
    fastnorm.batch_norm_backward(dy, x, m, r, gamma, axis=axis, beta=beta, activation=act, out=out[1],
                                 num_threads=threads)


def _group(x, dy, axis, act, out, threads):
    C = x.shape[axis]
    gamma, beta = np.linspace(0.5, 1.5, C), np.linspace(-1, 1, C)
    _, m, r = fastnorm.group_norm(x, 3, gamma, beta, axis=axis, activation=act, return_stats=True, out=out[0],
                                  num_threads=threads)
    fastnorm.group_norm_backward(dy, x, m, r, 3, gamma, axis=axis, beta=beta, activation=act, out=out[1],
                                 num_threads=threads)


def _layer(x, dy, axis, act, out, threads):
    D = x.shape[-1]
    gamma, beta = np.linspace(0.5, 1.5, D), np.linspace(-1, 1, D)
    _, m, r = fastnorm.layer_norm(x, gamma, beta, activation=act, return_stats=True, out=out[0], num_threads=threads)
    fastnorm.layer_norm_backward(dy, x, m, r, gamma, beta=beta, activation=act, out=out[1], num_threads=threads)


CASES = [  # (op, shape, axis, activation, threads)
    (_batch, (6, 6, 40, 50), 1, "relu", 2), (_batch, (6, 6, 40, 50), 1, None, 8), (_batch, (3, 6, 5000), 1, None, 2),
    (_batch, (6, 40, 50, 6), -1, None, 2), (_batch, (6, 40, 50, 6), -1, "relu", 2),
    (_group, (4, 6, 50, 60), 1, None, 2), (_group, (4, 6, 3000), 1, "silu", 2), (_group, (4, 50, 60, 6), -1, None, 2),
    (_group, (4, 50, 60, 6), -1, "gelu", 2), (_group, (3, 40, 6, 30), 2, None, 2),
    (_layer, (64, 1024), -1, None, 2), (_layer, (200, 100), -1, "relu", 2), (_layer, (30, 1300), -1, "gelu", 2),
]


@pytest.mark.parametrize("op,shape,axis,activation,threads", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("offset", [0, 1])  # output 64-byte aligned, or not
def test_streaming_stores_give_the_same_bits(op, shape, axis, activation, threads, dtype, offset, rng,
                                             stream_threshold):
    x = rng.standard_normal(shape).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    results = []
    for threshold in (-1, 0):
        stream_threshold(threshold)
        out = (empty_at(shape, dtype, offset), empty_at(shape, dtype, offset))
        op(x, dy, axis, activation, out, threads)
        results.append(out[0].tobytes() + out[1].tobytes())
    assert results[0] == results[1]


@pytest.mark.parametrize("op,shape,axis,activation", [
    (_layer, (40, 1300), -1, None), (_layer, (200, 100), -1, "relu"), (_layer, (16, 1024), -1, "gelu"),
    (_group, (4, 6, 14, 15), 1, None), (_group, (2, 6, 3, 700), 1, "silu"), (_batch, (3, 6, 7, 29), 1, "relu"),
    (_batch, (5, 7, 9, 6), -1, None), (_batch, (3, 5, 7, 40), -1, "gelu"), (_group, (3, 7, 11, 6), -1, "relu"),
    (_group, (3, 7, 11, 6), -1, None),
])
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_bits_do_not_depend_on_where_the_output_is(op, shape, axis, activation, dtype, rng, stream_threshold):
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
            op(x, dy, axis, activation, out, 2)
            results.add(out[0].tobytes() + out[1].tobytes())
    assert len(results) == 1
