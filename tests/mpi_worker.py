"""Run under mpiexec by tests/test_distributed.py: each rank checks its part and prints one line, "ok <rank>" or
the failure.  Scenarios: "sync" (forward, backward, running statistics and layers against one process on the
whole batch), "mismatch" (ranks that disagree on channels raise together), "sharded" (sharded sampling)."""
import sys
import traceback

import numpy as np

import fastnorm
from fastnorm.distributed import MPICommunicator, SyncBatchNorm, sync_batch_norm, sync_batch_norm_backward
from fastnorm.layers import BatchNorm


class Counting:
    """A communicator that counts its collectives."""

    def __init__(self, comm):
        self.inner, self.rank, self.size, self.calls = comm, comm.rank, comm.size, 0

    def allgather(self, buf):
        self.calls += 1
        return self.inner.allgather(buf)


def split(n, size, rank, empty_rank):
    """Uneven parts of n samples: rank ``empty_rank`` gets none, the others unequal shares."""
    weights = np.array([0 if r == empty_rank else r + 1 for r in range(size)], float)
    cuts = np.concatenate([[0], np.round(np.cumsum(weights) / weights.sum() * n)]).astype(int)
    return slice(cuts[rank], cuts[rank + 1])


def identical_everywhere(comm, *arrays):
    """The bytes of ``arrays`` are the same on every rank (compared through a float64 view of a hash)."""
    import hashlib
    digest = hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)).digest()
    mine = np.frombuffer(digest, np.float64)
    gathered = comm.allgather(mine)
    return all(row.tobytes() == mine.tobytes() for row in gathered)


def sync(comm):
    rank, size = comm.rank, comm.size
    for dtype, shape, axis, tol in [(np.float64, (23, 4, 3, 5), 1, 1e-12), (np.float64, (23, 3, 5, 4), -1, 1e-12),
                                    (np.float32, (23, 6), 1, 2e-5), (np.float16, (23, 3, 2, 2), 1, 2e-3)]:
        rng = np.random.default_rng(7)
        X = (rng.standard_normal(shape) * 2 + 30).astype(dtype)
        DY = rng.standard_normal(shape).astype(dtype)
        C = shape[axis]
        gamma, beta = rng.uniform(0.5, 1.5, C), rng.standard_normal(C)
        part = split(shape[0], size, rank, empty_rank=size - 1)
        x, dy = X[part], DY[part]
        # one process on the whole batch: the reference
        rm_w, rv_w, n_w = np.zeros(C), np.ones(C), np.array(0)
        Y, mean_w, rstd_w = fastnorm.batch_norm(X, gamma=gamma, beta=beta, axis=axis, running_mean=rm_w,
                                                running_var=rv_w, num_batches_tracked=n_w, return_stats=True)
        DX, DG, DB = fastnorm.batch_norm_backward(DY, X, mean_w, rstd_w, gamma, axis=axis)
        rm, rv, n = np.zeros(C), np.ones(C), np.array(0)
        y, mean, rstd = sync_batch_norm(x, comm, gamma=gamma, beta=beta, axis=axis, running_mean=rm, running_var=rv,
                                        num_batches_tracked=n, return_stats=True)
        dx, dg, db = sync_batch_norm_backward(dy, x, mean, rstd, comm, gamma, axis=axis)
        f64 = np.float64
        np.testing.assert_allclose(y.astype(f64), Y[part].astype(f64), rtol=tol, atol=tol)
        np.testing.assert_allclose(dx.astype(f64), DX[part].astype(f64), rtol=tol, atol=tol * 10)
        np.testing.assert_allclose(mean, mean_w, rtol=1e-12)
        np.testing.assert_allclose(rm, rm_w, rtol=1e-12), np.testing.assert_allclose(rv, rv_w, rtol=1e-10)
        assert int(n) == 1 and y.dtype == dtype and dx.dtype == dtype and y.shape == x.shape
        # dgamma, dbeta: this rank's share; summed over ranks they are the whole batch's
        total_g = np.sum(comm.allgather(dg.astype(f64)), axis=0)
        total_b = np.sum(comm.allgather(db.astype(f64)), axis=0)
        np.testing.assert_allclose(total_g, DG, rtol=tol * 10, atol=tol * 10)
        np.testing.assert_allclose(total_b, DB, rtol=tol * 10, atol=tol * 10)
        assert identical_everywhere(comm, mean, rstd, rm, rv), "statistics differ between ranks"

    # layers: SyncBatchNorm trains as BatchNorm on the whole batch, eval communicates nothing
    rng = np.random.default_rng(3)
    X = rng.standard_normal((17, 5, 4)) * 3 + 1
    part = split(17, size, rank, empty_rank=0)
    counting = Counting(comm)
    sync_layer, whole = SyncBatchNorm(5, counting, dtype=np.float64), BatchNorm(5, dtype=np.float64)
    for step in range(3):
        Y = whole(X + step)
        y = sync_layer(X[part] + step)
        np.testing.assert_allclose(y, Y[part], rtol=1e-12, atol=1e-12)
        dx = sync_layer.backward(np.cos(X[part]))
        np.testing.assert_allclose(dx, whole.backward(np.cos(X))[part], rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(sync_layer.running_var, whole.running_var, rtol=1e-12)
    assert int(sync_layer.num_batches_tracked) == 3
    sync_layer.eval()
    calls = counting.calls
    np.testing.assert_allclose(sync_layer(X[part]), whole.eval()(X)[part], rtol=1e-12, atol=1e-12)
    sync_layer.backward(np.ones_like(X[part]))
    assert counting.calls == calls, "eval mode communicated"


def mismatch(comm):
    C = 3 if comm.rank == 0 else 4
    try:
        sync_batch_norm(np.ones((5, C)), comm)
    except ValueError as e:
        assert "disagree on channels" in str(e), e
    else:
        raise AssertionError("no error for mismatched channels")
    dtype = np.float32 if comm.rank == 0 else np.float64
    try:
        sync_batch_norm(np.ones((5, 3), dtype), comm)
    except ValueError as e:
        assert "disagree" in str(e), e
    else:
        raise AssertionError("no error for mismatched dtypes")
    # and the ranks still work together afterwards
    y = sync_batch_norm(np.arange(15.0).reshape(5, 3) + comm.rank, comm)
    assert np.isfinite(y).all()


def sharded(comm):
    shape = (37, 29)
    whole = fastnorm.random.Generator(11).normal(shape, scale=0.02)
    rows = split(shape[0], comm.size, comm.rank, empty_rank=-1)
    g = fastnorm.random.Generator(11)
    mine = g.normal(shape, scale=0.02, shard=(rows,))
    assert mine.tobytes() == whole[rows].tobytes()
    after = fastnorm.random.Generator(11)
    after.normal(shape, scale=0.02)
    assert g.state == after.state  # the next call continues in step with the unsharded run


if __name__ == "__main__":
    comm = MPICommunicator()
    try:
        {"sync": sync, "mismatch": mismatch, "sharded": sharded}[sys.argv[1]](comm)
        print(f"ok {comm.rank}", flush=True)
    except Exception:
        print(f"FAILED on rank {comm.rank}:\n{traceback.format_exc()}", flush=True)
        sys.exit(1)
