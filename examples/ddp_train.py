"""Data-parallel training on CPUs with synchronized batch norm: train_mlp.py's he+bn network over MPI ranks.

Every rank holds the same model and data; each step's batch of 128 is split unevenly over the ranks (rank r gets a
share proportional to r + 1), every batch norm is a ``fastnorm.distributed.SyncBatchNorm`` (statistics of the whole
batch, gradient sums of the whole batch), and the parameter gradients are summed over the ranks in rank order
before the same SGD step everywhere.  The losses printed are those of one process training on the full batches:

    mpiexec -n 3 python examples/ddp_train.py      # or -n 2, or plain python for one process

(``pip install "fastnorm[mpi]"`` brings mpi4py and an mpiexec.)
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_mlp import MLP, softmax_cross_entropy, spiral  # noqa: E402

from fastnorm.distributed import LocalCommunicator, MPICommunicator, SyncBatchNorm  # noqa: E402


def communicator():
    try:
        return MPICommunicator()
    except ImportError:
        return LocalCommunicator()


def share(n: int, size: int, rank: int) -> slice:
    """Rank ``rank``'s part of n samples, proportional to rank + 1 (uneven on purpose)."""
    w = np.arange(1, size + 1, dtype=float)
    cuts = np.concatenate([[0], np.round(np.cumsum(w) / w.sum() * n)]).astype(int)
    return slice(cuts[rank], cuts[rank + 1])


def summed(comm, arrays: list) -> list:
    """Each array summed over the ranks in rank order: one allgather, the same bits on every rank."""
    flat = np.concatenate([a.astype(np.float64).ravel() for a in arrays])
    total = comm.allgather(flat).sum(axis=0)
    out, at = [], 0
    for a in arrays:
        out.append(total[at:at + a.size].reshape(a.shape).astype(a.dtype))
        at += a.size
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05)
    args = p.parse_args(argv)
    comm = communicator()
    x, y = spiral(1000, seed=0)
    order = np.random.default_rng(0).permutation(len(x))
    xtr, ytr = x[order[:2400]], y[order[:2400]]
    model = MLP([2] + [64] * 8 + [3], init="he", batch_norm=True, seed=0,
                norm=lambda n, axis: SyncBatchNorm(n, comm, axis=axis))
    shuffle = np.random.default_rng(1)
    for epoch in range(1, args.epochs + 1):
        perm = shuffle.permutation(len(xtr))
        total = 0.0
        for start in range(0, len(perm), args.batch_size):
            idx = perm[start:start + args.batch_size]
            mine = idx[share(len(idx), comm.size, comm.rank)]
            loss, dlogits = softmax_cross_entropy(model.forward(xtr[mine]), ytr[mine])
            # the mean over the whole batch: local sums over the global count
            dlogits *= len(mine) / len(idx)
            (loss_sum,) = summed(comm, [np.array([loss * len(mine)])])
            grads = model.backward(dlogits)
            flat = [g[k] for g in grads for k in ("w", "b")]
            flat += [bn.grads[k] for bn in model.bns for k in ("weight", "bias")]
            it = iter(summed(comm, flat))
            grads = [{"w": next(it), "b": next(it)} for _ in grads]
            bn_grads = [{"weight": next(it), "bias": next(it)} for _ in model.bns]
            for bn, g in zip(model.bns, bn_grads):
                bn.grads.update(g)
            model.sgd_momentum(grads, args.lr)
            total += float(loss_sum[0])
        if comm.rank == 0:
            print(f"epoch {epoch}: loss {total / len(perm):.5f} ({comm.size} rank{'s' if comm.size > 1 else ''})",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
