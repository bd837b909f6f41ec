"""Synchronized batch normalization over processes (data-parallel training on CPUs), exact and deterministic.

Each rank normalizes its own part of the batch with the statistics of the whole batch:

- forward (training): every rank computes its per-channel :class:`fastnorm.Moments` (count, mean, m2, float64),
  one allgather shares them, and every rank merges them in rank order with :func:`fastnorm.merge_moments`, so all
  ranks hold the same bits; the running statistics are updated from them (identical on every rank);
- backward: the two per-channel gradient sums (sum of dy, sum of dy (x - mean)) and the local counts, one
  allgather, summed in rank order on every rank (the same bits everywhere, whatever the MPI library's reduction
  order), and dx from them divided by the global count (not the number of ranks: uneven batches are exact);
- ranks with an empty batch still join every collective (with zero counts), or the others would wait forever;
- eval mode uses the running statistics and communicates nothing;
- dgamma and dbeta stay local: the data-parallel gradient all-reduce that sums every parameter's gradient sums
  them once (summing them here too would count them twice).

Before the statistics, a small fixed-size header (channels, dtype, channel axis) is gathered and compared, so that
ranks that disagree raise the same ValueError together instead of hanging in a collective of unequal sizes.

A communicator is anything with ``rank``, ``size`` and ``allgather(buf) -> array of shape (size, len(buf))`` on
float64 buffers (:class:`Communicator`); :class:`MPICommunicator` adapts mpi4py (``pip install
"fastnorm[mpi]"``, run with ``mpiexec -n 4 python train.py``), :class:`TorchCommunicator` an existing
``torch.distributed`` process group, and :class:`LocalCommunicator` is the one-process case.  PyTorch's
``SyncBatchNorm`` refuses CPU tensors; Keras and Flax all-reduce E[x] and E[x^2], which cancels for data far
from zero.
"""
from __future__ import annotations

from typing import Any, Optional, Protocol, Tuple, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike

from fastnorm import _norm_common
from fastnorm._array import as_array, storage_dtype
from fastnorm._docs import documented
from fastnorm.batch_norm_stages import (batch_norm_apply, batch_norm_grad_sums, batch_norm_input_grad,
                                        batch_norm_stats, update_running_stats)
from fastnorm.layers import BatchNorm
from fastnorm._norm_common import NormGrads, _channel_param, _grad_dtype, _layout
from fastnorm.normalization import batch_norm, batch_norm_backward
from fastnorm.statistics import Moments, merge_moments
from fastnorm._array import normalize_axis, result_dtype

__all__ = ["Communicator", "MPICommunicator", "TorchCommunicator", "LocalCommunicator", "sync_batch_norm",
           "sync_batch_norm_backward", "SyncBatchNorm"]


# The parameters of synchronized batch norm: the normalizations' (fastnorm._norm_common), plus the communicator.
_PARAMS = dict(
    _norm_common._PARAMS,
    comm=("Communicator", "The process group the batch is spread over (:class:`MPICommunicator`, "
                          ":class:`TorchCommunicator`, :class:`LocalCommunicator` or any object with rank, size and "
                          "allgather)."),
    axis=("int, default 1", "The channel axis: 1 for (N, D) and NCHW-style data, -1 for channels-last."),
    gamma=("array_like of shape (C,), optional", "The scale (default 1)."),
    beta=("array_like of shape (C,), optional", "The shift (default 0)."),
    training=("bool, default True", "False: normalize with the running statistics, without communication."),
    num_batches_tracked=("0-d integer numpy.ndarray, optional", "Batches seen; required with momentum=None."),
    mean=("array_like of shape (C,)", "The forward's global mean (``return_stats=True``)."),
    rstd=("array_like of shape (C,)", "The forward's global 1 / sqrt(var + eps)."),
    group=("torch.distributed.ProcessGroup, optional", "The group (default: the whole world)."),
    num_features=("int", "C, the number of channels."),
    affine=("bool, default True", "Learn a per-channel weight and bias."),
    track_running_stats=("bool, default True", "Keep running statistics, synchronized across ranks."),
    dtype=("data-type, default float32", "The parameters' and buffers' dtype."),
)


@runtime_checkable
class Communicator(Protocol):
    """What synchronized batch norm needs from a process group: its rank and size, and an allgather of float64
    buffers of equal length (row r of the result is rank r's buffer)."""
    rank: int
    size: int

    def allgather(self, buf: np.ndarray) -> np.ndarray: ...


@documented(_PARAMS, comm=("mpi4py communicator, optional", "Default ``MPI.COMM_WORLD``."))
class MPICommunicator:
    """A :class:`Communicator` over an mpi4py communicator (``MPI.COMM_WORLD`` by default): one ``Allgather`` on
    the NumPy buffers, no copies through pickle.  ``allreduce`` (a sum, ``Allreduce``) is there for the
    parameter-gradient all-reduce of data-parallel training."""

    def __init__(self, comm: Any = None) -> None:
        try:
            from mpi4py import MPI
        except ImportError as e:
            raise ImportError("MPICommunicator needs mpi4py: pip install \"fastnorm[mpi]\" (mpi4py and the mpich "
                              "wheel), and run under mpiexec") from e
        self._MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()

    def allgather(self, buf: np.ndarray) -> np.ndarray:
        send = np.ascontiguousarray(buf, dtype=np.float64)
        recv = np.empty((self.size, send.size), np.float64)
        self.comm.Allgather(send, recv)
        return recv

    def allreduce(self, buf: np.ndarray) -> np.ndarray:
        send = np.ascontiguousarray(buf, dtype=np.float64)
        recv = np.empty_like(send)
        self.comm.Allreduce(send, recv, op=self._MPI.SUM)
        return recv


@documented(_PARAMS)
class TorchCommunicator:
    """A :class:`Communicator` over ``torch.distributed`` (any backend that runs on CPU tensors, gloo for one), for
    programs that already have a PyTorch process group: the buffers travel as float64 tensors sharing the NumPy
    arrays' memory."""

    def __init__(self, group: Any = None) -> None:
        import torch
        import torch.distributed as dist
        if not dist.is_initialized():
            raise ValueError("group: torch.distributed has no process group; call init_process_group first")
        self._torch, self._dist, self.group = torch, dist, group
        self.rank, self.size = dist.get_rank(group), dist.get_world_size(group)

    def allgather(self, buf: np.ndarray) -> np.ndarray:
        send = np.ascontiguousarray(buf, dtype=np.float64)
        recv = np.empty((self.size, send.size), np.float64)
        self._dist.all_gather(list(self._torch.from_numpy(recv)), self._torch.from_numpy(send), group=self.group)
        return recv

    def allreduce(self, buf: np.ndarray) -> np.ndarray:
        out = np.array(buf, dtype=np.float64)
        self._dist.all_reduce(self._torch.from_numpy(out), group=self.group)
        return out


class LocalCommunicator:
    """One process alone: rank 0 of 1 (synchronized batch norm is then batch norm)."""
    rank, size = 0, 1

    def allgather(self, buf: np.ndarray) -> np.ndarray:
        return np.asarray(buf, dtype=np.float64).reshape(1, -1).copy()

    def allreduce(self, buf: np.ndarray) -> np.ndarray:
        return np.asarray(buf, dtype=np.float64).copy()


def _check_comm(comm) -> None:
    if not isinstance(comm, Communicator):
        raise TypeError(f"comm: expected a communicator (rank, size, allgather), such as "
                        f"fastnorm.distributed.MPICommunicator(), got {type(comm).__name__}")


_DTYPE_CODES = {"float16": 1, "bfloat16": 2, "float32": 3, "float64": 4}


def _agree(comm, x: np.ndarray, C: int, axis: int, what: str) -> None:
    """Gathers (channels, dtype, channel axis) from every rank: a ValueError on every rank where they differ."""
    header = np.array([C, _DTYPE_CODES.get(x.dtype.name, 0), axis, x.ndim], np.float64)
    headers = comm.allgather(header)
    if (headers != headers[0]).any():
        names = {v: k for k, v in _DTYPE_CODES.items()}
        seen = "; ".join(f"rank {r}: {int(h[0])} channels, {names.get(int(h[1]), 'other dtype')}, axis {int(h[2])} "
                         f"of {int(h[3])}" for r, h in enumerate(headers))
        raise ValueError(f"{what}: the ranks disagree on channels, dtype or channel axis ({seen})")


def _gathered_moments(comm, local: Moments) -> Moments:
    C = local.mean.shape[0]
    rows = comm.allgather(np.concatenate([[float(local.count)], local.mean, local.m2]))
    total = Moments(np.array(0, np.int64), np.zeros(C), np.zeros(C))
    for row in rows:  # rank order, on every rank: the same bits everywhere
        total = merge_moments(total, Moments(np.array(int(row[0]), np.int64), row[1:C + 1], row[C + 1:]))
    return total


@documented(_PARAMS, returns=("numpy.ndarray or tuple", "y, or (y, mean, rstd) with ``return_stats`` (the global "
                                                        "statistics, for :func:`sync_batch_norm_backward`)."))
def sync_batch_norm(x: ArrayLike, comm: Communicator, *, gamma: Optional[ArrayLike] = None,
                    beta: Optional[ArrayLike] = None, axis: int = 1, training: bool = True,
                    running_mean: Optional[np.ndarray] = None, running_var: Optional[np.ndarray] = None,
                    momentum: Optional[float] = 0.1, eps: float = 1e-5,
                    num_batches_tracked: Optional[np.ndarray] = None, return_stats: bool = False,
                    activation: Optional[str] = None, negative_slope: float = 0.01,
                    out: Optional[np.ndarray] = None, num_threads: Optional[int] = None) -> Any:
    """Batch normalization of this rank's ``x`` with the statistics of the batch on all ranks of ``comm``.

    Training: the per-channel moments of every rank, gathered in one collective and merged in rank order (the same
    bits on every rank), normalize x as :func:`fastnorm.batch_norm` would normalize the concatenated batch, and
    update ``running_mean`` / ``running_var`` (the unbiased variance of the whole batch) identically everywhere.
    A rank whose batch is empty still takes part.  ``training=False``: the running statistics, no communication.

    """
    x = as_array(x, "x")
    _check_comm(comm)
    if not training:
        return batch_norm(x, gamma=gamma, beta=beta, axis=axis, training=False, running_mean=running_mean,
                          running_var=running_var, eps=eps, return_stats=return_stats, activation=activation,
                          negative_slope=negative_slope, out=out, num_threads=num_threads)
    storage_dtype(x.dtype, "x")
    _, C, _ = _layout(x.shape, axis)
    _agree(comm, x, C, normalize_axis(axis, x.ndim), "x")
    stats = _gathered_moments(comm, batch_norm_stats(x, axis=axis, num_threads=num_threads))
    if int(stats.count) <= 1:
        raise ValueError(f"x: batch norm in training needs more than one value per channel over all ranks, got "
                         f"{int(stats.count)}")
    y, mean, rstd = batch_norm_apply(x, stats, gamma=gamma, beta=beta, axis=axis, eps=eps, activation=activation,
                                     negative_slope=negative_slope, return_stats=True, out=out,
                                     num_threads=num_threads)
    if running_mean is not None or running_var is not None:
        update_running_stats(running_mean, running_var, stats, momentum=momentum,
                             num_batches_tracked=num_batches_tracked)
    return (y, mean, rstd) if return_stats else y


@documented(_PARAMS, returns=("tuple", "(dx, dgamma, dbeta), dgamma and dbeta this rank's share (sum them over ranks "
                                       "once, with the other parameter gradients); None without gamma or with "
                                       "``dx_only``."))
def sync_batch_norm_backward(dy: ArrayLike, x: ArrayLike, mean: ArrayLike, rstd: ArrayLike, comm: Communicator,
                             gamma: Optional[ArrayLike] = None, *, axis: int = 1, dx_only: bool = False,
                             beta: Optional[ArrayLike] = None, activation: Optional[str] = None,
                             negative_slope: float = 0.01, out: Optional[np.ndarray] = None,
                             num_threads: Optional[int] = None) -> NormGrads:
    """Gradients of :func:`sync_batch_norm` (training) on this rank: the gradient sums of every rank and their
    counts gathered in one collective and summed in rank order, dx from them over the global count.

    """
    dy, x = as_array(dy, "dy"), as_array(x, "x")
    _check_comm(comm)
    _, C, _ = _layout(x.shape, axis)
    _agree(comm, x, C, normalize_axis(axis, x.ndim), "x")
    mean_b, rstd_b = _channel_param(mean, "mean", C), _channel_param(rstd, "rstd", C)
    kw = dict(gamma=gamma, beta=beta, axis=axis, activation=activation, negative_slope=negative_slope,
              num_threads=num_threads)
    s_dy, s_dy_xmu = batch_norm_grad_sums(dy, x, mean_b, rstd=rstd_b, **kw)
    local_count = x.size // C if C else 0
    rows = comm.allgather(np.concatenate([[float(local_count)], s_dy, s_dy_xmu]))
    total = np.zeros(2 * C + 1)
    for row in rows:  # rank order, on every rank
        total += row
    count = int(total[0])
    if local_count:
        dx = batch_norm_input_grad(dy, x, mean_b, rstd_b, total[1:C + 1], total[C + 1:], count, out=out, **kw)
    else:  # nothing here; the other ranks needed this rank's (zero) sums
        dx = out if out is not None else np.empty(x.shape, result_dtype(np.result_type(dy.dtype, x.dtype)))
    if gamma is None or dx_only:
        return dx, None, None
    pd = _grad_dtype(dx.dtype)
    return dx, (s_dy_xmu * rstd_b).astype(pd), s_dy.astype(pd)


@documented(_PARAMS, comm=("Communicator, optional", "The process group (default: a :class:`LocalCommunicator`)."))
class SyncBatchNorm(BatchNorm):
    """Batch normalization synchronized over the ranks of ``comm`` in training (:func:`sync_batch_norm`), as
    PyTorch's ``SyncBatchNorm`` on GPUs, here on CPUs: ``SyncBatchNorm(num_features, comm, eps=1e-5,
    momentum=0.1, affine=True, track_running_stats=True, *, axis=1)``, any channel axis (1 for NCHW, -1 for
    channels-last) and input rank.  In eval mode it is :class:`fastnorm.layers.BatchNorm` and communicates
    nothing.  ``weight_grad`` / ``bias_grad`` are this rank's share: all-reduce them with the other parameters'
    gradients.  Every rank must call forward and backward the same number of times, in the same order."""

    def __init__(self, num_features: int, comm: Optional[Communicator] = None, eps: float = 1e-5,
                 momentum: Optional[float] = 0.1, affine: bool = True, track_running_stats: bool = True, *,
                 axis: int = 1, activation: Optional[str] = None, negative_slope: float = 0.01,
                 dtype: Any = np.float32) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, axis=axis, activation=activation,
                         negative_slope=negative_slope, dtype=dtype)
        comm = MPICommunicator() if comm is None else comm
        _check_comm(comm)
        self.comm = comm

    def forward(self, x: ArrayLike) -> np.ndarray:
        if not (self.training or self.running_mean is None):
            return super().forward(x)
        x = self._check_channels(x, self.num_features, self.axis)
        y, mean, rstd = sync_batch_norm(x, self.comm, gamma=self.weight, beta=self.bias, axis=self.axis,
                                        running_mean=self.running_mean if self.training else None,
                                        running_var=self.running_var if self.training else None,
                                        momentum=self.momentum, eps=self.eps,
                                        num_batches_tracked=self.num_batches_tracked if self.training else None,
                                        return_stats=True, **self.post)
        self._saved = (x, mean, rstd, True)
        return y

    def backward(self, dy: ArrayLike) -> np.ndarray:
        x, mean, rstd, batch_stats = self._need_saved()
        if not batch_stats:
            return super().backward(dy)
        dx, dweight, dbias = sync_batch_norm_backward(dy, x, mean, rstd, self.comm, self.weight, axis=self.axis,
                                                      beta=self.bias, **self.post)
        if self.weight is not None:
            self._set_affine_grads(dweight, dbias)
        return dx

    def __repr__(self) -> str:
        return super().__repr__().replace("SyncBatchNorm(", f"SyncBatchNorm(comm=rank {self.comm.rank} of "
                                          f"{self.comm.size}, ", 1)
