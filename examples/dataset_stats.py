"""Dataset statistics larger than memory on Dask: per-channel mean / std and a ZCA whitening of an image set.

The images (N, 32, 32, 3) float32, channels-last, are written as a stack of .npy chunk files (generated here:
nothing to download), then read lazily by a ``LocalCluster`` of worker processes, each task holding one chunk:
the data never has to fit in memory at once.  The per-channel statistics are a tree of fastnorm moments (float64),
the ZCA a tree of scatter matrices on 8x8 patches' worth of features (the 16x16 centre, 768 values), both merged
in a fixed order, so the result has the same bits for any number of workers.

    python examples/dataset_stats.py [--images 20000] [--chunk 1000] [--workers 2] [--dir /tmp/images]

(``pip install "fastnorm[dask]"``.)  The same code runs on a cluster: pass its scheduler's address to Client.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings

import numpy as np

import fastnorm.dask as fd
from fastnorm import Moments
from fastnorm.preprocessing import Standardizer, Whitening


def write_images(folder: str, images: int, chunk: int) -> None:
    """A synthetic image set as a .npy stack (dask.array.from_npy_stack's layout), one chunk file at a time."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    sizes = [min(chunk, images - s) for s in range(0, images, chunk)]
    for i, n in enumerate(sizes):
        base = rng.uniform(0, 255, (n, 1, 1, 3)) * np.array([1.0, 0.8, 0.6])  # per-channel brightness
        pixels = base + rng.standard_normal((n, 32, 32, 3)) * 20
        np.save(os.path.join(folder, f"{i}.npy"), pixels.astype(np.float32))
    with open(os.path.join(folder, "info"), "wb") as f:
        import pickle
        pickle.dump({"chunks": (tuple(sizes), (32,), (32,), (3,)), "dtype": np.dtype(np.float32), "axis": 0}, f)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=20000)
    p.add_argument("--chunk", type=int, default=1000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--dir", default=None, help="where the .npy stack goes (default: a temporary folder)")
    args = p.parse_args(argv)
    import dask.array as da
    from dask.distributed import Client, LocalCluster, progress

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.dir or os.path.join(tmp, "images")
        write_images(folder, args.images, args.chunk)
        x = da.from_npy_stack(folder)
        print(f"{x.shape[0]} images {x.shape[1:]} {x.dtype}, {x.nbytes / 2**20:.0f} MiB in {x.numblocks[0]} chunks "
              f"of {x.chunksize[0]}", flush=True)
        with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            t0 = time.perf_counter()
            lazy = fd.moments(x, axis=(0, 1, 2), compute=False)  # per channel, channels-last
            futures = client.compute(list(lazy))
            progress(futures, notebook=False)
            count, mean, m2 = client.gather(futures)
            stats = Moments(np.asarray(count).flat[0], mean, m2)
            std = np.sqrt(stats.m2 / stats.count)
            print(f"\nper-channel mean {np.round(stats.mean, 3)}, std {np.round(std, 3)} "
                  f"({time.perf_counter() - t0:.1f} s)")
            scaler = Standardizer.from_moments(stats, axis=(0, 1, 2))
            centre = scaler.transform(x)[:, 8:24, 8:24, :]  # lazy: standardized, then cropped
            t0 = time.perf_counter()
            zca = Whitening("zca", eps=1e-2).fit(centre)
            n = min(3000, x.shape[0])
            # the fitted matrices travel with the graph, once: a few MiB, which Dask warns about
            warnings.filterwarnings("ignore", "Sending large graph", UserWarning)
            white = zca.transform(centre[:n]).compute()
            cov = np.cov(white.reshape(n, -1), rowvar=False)
            print(f"ZCA of {zca.n_features_in_} x 16 x 3 = {cov.shape[0]} features fitted on "
                  f"{zca.n_samples_seen_} images ({time.perf_counter() - t0:.1f} s); whitened covariance: "
                  f"on {n} images, diagonal mean {np.diag(cov).mean():.3f}, largest off-diagonal "
                  f"{np.abs(cov - np.diag(np.diag(cov))).max():.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
