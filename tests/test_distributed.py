"""fastnorm.distributed (synchronized batch norm over MPI) and sharded sampling.

The multi-process cases run tests/mpi_worker.py under ``mpiexec -n 2`` and ``-n 3`` (uneven batches, an empty rank,
NCHW and channels-last, float16 to float64, layers, eval mode without communication), each under a timeout."""
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fastnorm
from fastnorm.distributed import (LocalCommunicator, MPICommunicator, SyncBatchNorm, sync_batch_norm,
                                  sync_batch_norm_backward)
from fastnorm.random import Generator

HERE = os.path.dirname(os.path.abspath(__file__))


def _mpiexec():
    pytest.importorskip("mpi4py")
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")  # the mpich wheel's, in this environment
    found = beside if os.path.exists(beside) else shutil.which("mpiexec")
    if found is None:
        pytest.skip("no mpiexec (pip install \"fastnorm[mpi]\")")
    return found


@pytest.mark.parametrize("scenario", ["sync", "mismatch", "sharded"])
@pytest.mark.parametrize("ranks", [2, 3])
def test_under_mpiexec(ranks, scenario):
    cmd = [_mpiexec(), "-n", str(ranks), sys.executable, os.path.join(HERE, "mpi_worker.py"), scenario]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=HERE)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report
    # lines of different ranks may interleave
    assert sorted(int(r) for r in re.findall(r"ok (\d+)", run.stdout)) == list(range(ranks)), report


def test_one_process_is_batch_norm():
    rng = np.random.default_rng(0)
    x, dy = rng.standard_normal((9, 4, 3)).astype(np.float32), rng.standard_normal((9, 4, 3)).astype(np.float32)
    comm = LocalCommunicator()
    y, mean, rstd = sync_batch_norm(x, comm, gamma=np.ones(4), return_stats=True)
    y2, mean2, rstd2 = fastnorm.batch_norm(x, gamma=np.ones(4), return_stats=True)
    assert y.tobytes() == y2.tobytes() and mean.tobytes() == mean2.tobytes()
    dx, dg, db = sync_batch_norm_backward(dy, x, mean, rstd, comm, np.ones(4))
    dx2, dg2, db2 = fastnorm.batch_norm_backward(dy, x, mean2, rstd2, np.ones(4))
    assert dx.tobytes() == dx2.tobytes() and dg.tobytes() == dg2.tobytes() and db.tobytes() == db2.tobytes()


def test_bad_input():
    with pytest.raises(TypeError, match="comm: expected a communicator"):
        sync_batch_norm(np.ones((4, 3)), object())
    with pytest.raises(ValueError, match="more than one value per channel over all ranks"):
        sync_batch_norm(np.ones((1, 3)), LocalCommunicator())
    with pytest.raises(TypeError, match="comm: expected a communicator"):
        SyncBatchNorm(3, comm="world")


def test_missing_mpi4py_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(ImportError, match=r"fastnorm\[mpi\]"):
        MPICommunicator()


@pytest.mark.parametrize("method,kw", [("normal", dict(scale=0.02)), ("uniform", dict(low=-1, high=2)),
                                       ("truncated_normal", dict(scale=3.0))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("shape,shard", [((37, 29), (slice(5, 20),)), ((3000,), slice(1000, 2500)),
                                         ((37, 29), (slice(3, 30, 4), slice(2, 20, 3))),
                                         ((40, 50, 7), (slice(None), slice(10, 11))), ((5, 5), (slice(3, 3),))])
@pytest.mark.parametrize("threads", [1, 2])
def test_sharded_sampling_is_the_slice_of_the_whole(method, kw, dtype, shape, shard, threads):
    whole = getattr(Generator(5), method)(shape, dtype=dtype, **kw)
    g = Generator(5)
    part = getattr(g, method)(shape, dtype=dtype, num_threads=threads, shard=shard, **kw)
    assert part.dtype == whole.dtype
    assert part.tobytes() == whole[shard if isinstance(shard, tuple) else (shard,)].tobytes()
    after = Generator(5)
    getattr(after, method)(shape, dtype=dtype, **kw)
    assert g.state == after.state
    assert getattr(g, method)(7, dtype=dtype, **kw).tobytes() == getattr(after, method)(7, dtype=dtype,
                                                                                      **kw).tobytes()


def test_shard_bad_input():
    with pytest.raises(ValueError, match="shard: needs a size"):
        Generator(0).normal(shard=slice(0, 1))
    with pytest.raises(TypeError, match="shard: expected a slice"):
        Generator(0).normal((4, 4), shard=(1, 2))
    with pytest.raises(TypeError, match="shard: expected a slice"):
        Generator(0).normal((4, 4), shard=(slice(None),) * 3)


def test_ddp_example_trains_as_one_process():
    example = os.path.join(HERE, "..", "examples", "ddp_train.py")
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")

    def losses(cmd):
        run = subprocess.run(cmd + [sys.executable, example, "--epochs", "2"], capture_output=True, text=True,
                             timeout=240, env=env)
        assert run.returncode == 0, run.stdout + run.stderr
        return [float(v) for v in re.findall(r"loss ([0-9.]+)", run.stdout)]

    one = losses([])
    assert len(one) == 2 and one[1] < one[0]
    for ranks in (2, 3):
        np.testing.assert_allclose(losses([_mpiexec(), "-n", str(ranks)]), one, rtol=1e-3)


def test_torch_communicator_over_gloo():
    torch = pytest.importorskip("torch")
    import socket
    import torch.distributed as dist
    from fastnorm.distributed import TorchCommunicator
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        comm = TorchCommunicator()
        assert (comm.rank, comm.size) == (0, 1)
        np.testing.assert_array_equal(comm.allgather(np.arange(3.0)), [[0.0, 1.0, 2.0]])
        np.testing.assert_array_equal(comm.allreduce(np.arange(3.0)), [0.0, 1.0, 2.0])
        x = np.random.default_rng(0).standard_normal((6, 3))
        assert sync_batch_norm(x, comm).tobytes() == fastnorm.batch_norm(x).tobytes()
    finally:
        dist.destroy_process_group()
    assert torch is not None
