"""Thread-count control shared by every kernel call.

The default number of threads is, in order: the value given to :func:`set_num_threads`; else OpenMP's own
(``OMP_NUM_THREADS``, ``threadpoolctl.threadpool_limits``, ``torch.set_num_threads`` all set it, since fastnorm
links the shared libgomp).  Each call can override it with ``num_threads=``.  In a process created by ``fork()``
after the parent used OpenMP, libgomp's thread pool is unusable (it hangs), so kernels run single-threaded there.
Results never depend on the thread count: work is split into chunks of a fixed size and reductions are merged in
a fixed order.  No call starts more than ``_C.thread_limit()`` threads (4 per CPU, at least 64): a larger
``num_threads`` is a ValueError, and a larger OpenMP default is capped there.
"""
from __future__ import annotations

import os

from typing import Optional

from fastnorm import _C
from fastnorm._validate import integer

_num_threads: int | None = None
_LIMIT = _C.thread_limit()
_in_forked_child = False


def _mark_forked_child() -> None:
    global _in_forked_child
    _in_forked_child = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_mark_forked_child)


def _validate(n, name: str) -> int:
    value = integer(n, name, 1, "a positive thread count")
    if value > _LIMIT:
        raise ValueError(f"{name}: at most {_LIMIT} threads (4 per CPU of this machine), got {value}")
    return value


def set_num_threads(n: int | None) -> None:
    """Set the default number of threads of fastnorm's kernels; ``None`` goes back to OpenMP's default."""
    global _num_threads
    _num_threads = None if n is None else _validate(n, "n")


def get_num_threads() -> int:
    """The number of threads a kernel call without ``num_threads=`` uses (at most; small inputs use one)."""
    if _in_forked_child:
        return 1
    return _num_threads if _num_threads is not None else min(_C.max_threads(), _LIMIT)


def resolve(num_threads: Optional[int]) -> int:
    """The thread count to hand to a kernel: 0 means OpenMP's current default (queried in C++, per call)."""
    if _in_forked_child:
        return 1
    if num_threads is None:
        return _num_threads or 0
    return _validate(num_threads, "num_threads")
