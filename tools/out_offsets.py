"""Time of each memory-bound family with ``out=`` at several offsets within a page, against a page-aligned ``out=``.

NumPy places large arrays 16 bytes into a page, so an ``out=`` array a user allocated sits at the inputs' offset;
results should be written as fast there as into page-aligned memory.

    python tools/out_offsets.py [--threads 1,2] [--repeat 9]

Inputs sit at NumPy's offset (16); each case prints its median time per out= offset and the ratio to offset 0.
Ratios come from one process with the offsets interleaved: compare them, not absolute times across runs.
"""
from __future__ import annotations

import argparse
import time
from typing import Callable, Dict, List, Tuple

import numpy as np

import fastnorm

OFFSETS = (0, 16, 64, 2048)


def at_offset(shape: Tuple[int, ...], offset: int, dtype: type = np.float32) -> np.ndarray:
    """An uninitialised array whose first byte sits `offset` bytes into a page."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.empty(nbytes + 8192, np.uint8)
    base = (-raw.ctypes.data) % 4096 + offset
    return raw[base:base + nbytes].view(dtype).reshape(shape)


def cases(threads: int) -> Dict[str, Tuple[Tuple[int, ...], Callable[[np.ndarray], object]]]:
    rng = np.random.default_rng(0)

    def data(shape: Tuple[int, ...]) -> np.ndarray:
        a = at_offset(shape, 16)
        a[...] = rng.standard_normal(shape, dtype=np.float32)
        return a

    t = threads
    flat, dflat = data((1 << 24,)), data((1 << 24,))
    nchw = data((32, 64, 64, 64))
    out: Dict[str, Tuple[Tuple[int, ...], Callable[[np.ndarray], object]]] = {
        "relu fwd 16M": (flat.shape, lambda o: fastnorm.relu(flat, out=o, num_threads=t)),
        "relu bwd 16M": (flat.shape, lambda o: fastnorm.relu_backward(dflat, flat, out=o, num_threads=t)),
        "dropout fwd 16M": (flat.shape, lambda o: fastnorm.dropout(flat, 0.5, seed=1, out=o, num_threads=t)),
        "batch_norm fwd 32x64x64x64": (nchw.shape, lambda o: fastnorm.batch_norm(nchw, out=o, num_threads=t)),
        "group_norm fwd 32x64x64x64": (nchw.shape, lambda o: fastnorm.group_norm(nchw, 8, out=o, num_threads=t)),
    }
    for width in (128, 512, 768, 1024):
        shape = ((1 << 23) // width, width)
        x, dy = data(shape), data(shape)
        g, b = np.ones(width, np.float32), np.zeros(width, np.float32)
        _, mean, rstd = fastnorm.layer_norm(x, g, b, return_stats=True)
        y = fastnorm.softmax(x)
        name = f"{shape[0]}x{width}"
        out.update({
            f"layer_norm fwd {name}": (shape, lambda o, x=x, g=g, b=b: fastnorm.layer_norm(x, g, b, out=o, num_threads=t)),
            f"layer_norm bwd {name}": (shape, lambda o, x=x, dy=dy, g=g, m=mean, r=rstd: fastnorm.layer_norm_backward(
                dy, x, m, r, g, out=o, num_threads=t)),
            f"rms_norm fwd {name}": (shape, lambda o, x=x, g=g: fastnorm.rms_norm(x, g, out=o, num_threads=t)),
            f"softmax fwd {name}": (shape, lambda o, x=x: fastnorm.softmax(x, out=o, num_threads=t)),
            f"softmax bwd {name}": (shape, lambda o, y=y, dy=dy: fastnorm.softmax_backward(dy, y, out=o, num_threads=t)),
        })
    return out


def main(argv: List[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--repeat", type=int, default=9, help="timed calls per offset (default 9)")
    args = parser.parse_args(argv)
    for threads in (int(t) for t in args.threads.split(",")):
        print(f"threads {threads}: median ms at each out= page offset (ratio to offset 0)")
        for name, (shape, call) in cases(threads).items():
            outs = {off: at_offset(shape, off) for off in OFFSETS}
            for o in outs.values():
                call(o)
            times: Dict[int, List[float]] = {off: [] for off in OFFSETS}
            for _ in range(args.repeat):
                for off in OFFSETS:
                    t0 = time.perf_counter()
                    call(outs[off])
                    times[off].append(time.perf_counter() - t0)
            med = {off: float(np.median(v)) * 1e3 for off, v in times.items()}
            cells = "  ".join(f"@{off}: {med[off]:6.2f} ({med[off] / med[0]:.2f})" for off in OFFSETS)
            print(f"  {name:28s} {cells}", flush=True)


if __name__ == "__main__":
    main()
