"""The ``distributed`` benchmarks (``python -m fastnorm bench --distributed``), skipped where the extras are missing.

- Dask: per-channel statistics of an NCHW float32 array in chunks, GB/s of fastnorm.dask.moments against
  ``dask.array.var(dtype=float64)`` (with the mean: what a standardizer needs) on the same array and scheduler.
- MPI: the time of a synchronized batch-norm step (forward + backward, every rank its part of the batch) at 2 and
  3 ranks, against batch norm on the local part alone (the overhead is the difference), and against a
  synchronized batch norm written on ``torch.distributed`` with gloo (all-gather of the statistics, all-reduce
  of the gradient sums, PyTorch ops on the CPU) where PyTorch is installed.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

import numpy as np

import fastnorm

SHAPE = (64, 32, 56, 56)  # the whole batch of the MPI case, NCHW float32 (25.7 MB)


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def dask_statistics(threads: int, repeats: int) -> Optional[Dict[str, Any]]:
    try:
        import dask
        import dask.array as da
        import fastnorm.dask as fd
    except ImportError:
        print("dask is not installed: skipping its case (pip install \"fastnorm[dask]\")")
        return None
    x = (np.random.default_rng(0).standard_normal((256, 16, 64, 64)) * 3 + 100).astype(np.float32)
    d = da.from_array(x, chunks=(16, 16, 64, 64))
    axes = (0, 2, 3)
    with dask.config.set(scheduler="threads", num_workers=threads):
        fastnorm.set_num_threads(1)  # the scheduler's workers are the parallelism
        try:
            ours = _median_ms(lambda: fd.moments(d, axes), repeats)
        finally:
            fastnorm.set_num_threads(None)
        theirs = _median_ms(lambda: dask.compute(d.mean(axis=axes, dtype=np.float64),
                                                 d.var(axis=axes, dtype=np.float64)), repeats)
    gb = x.nbytes / 1e9
    return {"case": f"dask per-channel statistics {'x'.join(map(str, x.shape))}", "threads": threads,
            "fastnorm_ms": ours, "dask_var_ms": theirs, "fastnorm_gbs": gb / (ours / 1e3),
            "dask_var_gbs": gb / (theirs / 1e3), "speedup": theirs / ours}


def _mpiexec() -> Optional[str]:
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if os.path.exists(beside):
        return beside
    import shutil
    return shutil.which("mpiexec")


def sync_batch_norm_steps(ranks: int, repeats: int, torch_too: bool) -> Optional[Dict[str, Any]]:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        print("mpi4py is not installed: skipping the MPI case (pip install \"fastnorm[mpi]\")")
        return None
    mpiexec = _mpiexec()
    if mpiexec is None:
        print("no mpiexec found: skipping the MPI case")
        return None
    cmd = [mpiexec, "-n", str(ranks), sys.executable, "-m", "fastnorm.bench_distributed", "--worker", str(repeats),
           "1" if torch_too else "0"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    if run.returncode != 0:
        print(f"the MPI case failed:\n{run.stdout}{run.stderr}")
        return None
    line = next(l for l in run.stdout.splitlines() if l.startswith("{"))
    return json.loads(line)


def _torch_sync_step(torch, dist, x, dy, gamma, beta):
    """A synchronized batch-norm step in PyTorch ops over gloo: all-gather (count, mean, var) and merge them,
    normalize; all-reduce the two gradient sums, dx."""
    C = x.shape[1]
    dims = (0, 2, 3)
    var, mean = torch.var_mean(x, dim=dims, unbiased=False)
    n = torch.tensor([x.numel() // C], dtype=torch.float64)
    mine = torch.cat([n, mean.double(), var.double()])
    gathered = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, mine)
    g = torch.stack(gathered)
    counts, means, vars_ = g[:, :1], g[:, 1:C + 1], g[:, C + 1:]
    total = counts.sum()
    gmean = (counts * means).sum(0) / total
    gvar = ((counts * (vars_ + (means - gmean) ** 2)).sum(0)) / total
    rstd = torch.rsqrt(gvar + 1e-5).float()
    shape = (1, C, 1, 1)
    xhat = (x - gmean.float().view(shape)) * rstd.view(shape)
    y = xhat * gamma.view(shape) + beta.view(shape)
    sums = torch.cat([dy.sum(dims), (dy * xhat).sum(dims)]).double()
    dist.all_reduce(sums)
    s_dy, s_dyx = sums[:C].float(), sums[C:].float()
    dx = (gamma * rstd).view(shape) * (dy - (s_dy / total.float()).view(shape) - xhat * (s_dyx / total.float()).view(
        shape))
    return y, dx


def _worker(repeats: int, torch_too: bool) -> None:
    from fastnorm.distributed import MPICommunicator, sync_batch_norm, sync_batch_norm_backward
    comm = MPICommunicator()
    rng = np.random.default_rng(0)
    N = SHAPE[0]
    cuts = np.linspace(0, N, comm.size + 1).astype(int)
    x = (rng.standard_normal(SHAPE) + 3).astype(np.float32)[cuts[comm.rank]:cuts[comm.rank + 1]].copy()
    dy = rng.standard_normal(x.shape).astype(np.float32)
    C = SHAPE[1]
    gamma, beta = np.ones(C, np.float32), np.zeros(C, np.float32)
    y, dx = np.empty_like(x), np.empty_like(x)

    def local():
        _, m, r = fastnorm.batch_norm(x, gamma=gamma, beta=beta, return_stats=True, out=y)
        fastnorm.batch_norm_backward(dy, x, m, r, gamma, out=dx)

    def synced():
        _, m, r = sync_batch_norm(x, comm, gamma=gamma, beta=beta, return_stats=True, out=y)
        sync_batch_norm_backward(dy, x, m, r, comm, gamma, out=dx)

    def timed(fn):
        comm.allgather(np.zeros(1))  # start together
        return _median_ms(fn, repeats)

    header, payload = np.zeros(4), np.zeros(2 * C + 1)

    def collectives():  # the step's four allgathers alone: a header and the statistics, a header and the sums
        for buf in (header, payload, header, payload):
            comm.allgather(buf)

    result = {"ranks": comm.size, "local_shape": list(x.shape), "local_ms": timed(local), "sync_ms": timed(synced),
              "collectives_ms": timed(collectives)}
    if torch_too:
        try:
            import torch
            import torch.distributed as dist
        except ImportError:
            torch = None
        if torch is not None:
            torch.set_num_threads(1)
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            port = comm.allgather(np.array([29500.0 + (os.getpid() % 1000) if comm.rank == 0 else 0.0]))[0, 0]
            os.environ["MASTER_PORT"] = str(int(port))
            dist.init_process_group("gloo", rank=comm.rank, world_size=comm.size)
            tx, tdy = torch.from_numpy(x), torch.from_numpy(dy)
            tg, tb = torch.from_numpy(gamma), torch.from_numpy(beta)
            result["torch_gloo_ms"] = timed(lambda: _torch_sync_step(torch, dist, tx, tdy, tg, tb))
            dist.destroy_process_group()
    keys = ["local_ms", "sync_ms", "collectives_ms", "torch_gloo_ms"]
    gathered = comm.allgather(np.array([result.get(k, np.nan) for k in keys]))
    if comm.rank == 0:  # the slowest rank sets the step's time
        worst = gathered.max(axis=0)
        result.update({k: float(v) for k, v in zip(keys, worst) if k in result})
        print(json.dumps(result), flush=True)


def run(threads: List[int], repeats: int, torch_too: bool) -> List[Dict[str, Any]]:
    rows: List[Dict[str, Any]] = []
    for t in threads:
        r = dask_statistics(t, repeats)
        if r is not None:
            rows.append(r)
            print(f"{r['case']}, {t} thread{'s' if t > 1 else ''}: fastnorm.dask {r['fastnorm_gbs']:.2f} GB/s, "
                  f"da.var(dtype=float64) + mean {r['dask_var_gbs']:.2f} GB/s ({r['speedup']:.1f}x)", flush=True)
    for ranks in (2, 3):
        r = sync_batch_norm_steps(ranks, repeats, torch_too)
        if r is not None:
            rows.append(r)
            extra = (f", torch.distributed gloo {r['torch_gloo_ms']:.2f} ms ({r['torch_gloo_ms'] / r['sync_ms']:.1f}x "
                     f"fastnorm's)") if "torch_gloo_ms" in r else ""
            print(f"SyncBatchNorm forward + backward, {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]}x{SHAPE[3]} over {ranks} ranks "
                  f"(1 thread each): {r['sync_ms']:.2f} ms per step, local batch norm {r['local_ms']:.2f} ms: "
                  f"{(r['sync_ms'] - r['local_ms']) * 1e3:.0f} us more, of which {r['collectives_ms'] * 1e3:.0f} us "
                  f"in the four collectives (the rest: the stages' separate passes over memory){extra}", flush=True)
    return rows


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--worker":
    _worker(int(sys.argv[2]), sys.argv[3] == "1")
