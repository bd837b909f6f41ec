"""Output buffers: large results come from a cache of freed buffers instead of fresh pages.

A fresh array of many MiB costs a page fault per 4 KiB on first write, the kernel zeroing every page: for a
memory-bound op that is about as much time again as the op itself.  Results of at least 1 MiB are therefore
allocated from a cache (in C++) of buffers that earlier results gave back when they were freed: the next call of
the same size writes into memory that is already mapped.  Such a result is an ordinary writable, C-contiguous
ndarray whose ``base`` is the capsule that owns the buffer (so ``ndarray.resize`` refuses it, as for any view).

The cache keeps at most ``FASTNORM_BUFFER_CACHE`` bytes of freed buffers (default 256 MiB; ``0`` turns it off;
suffixes K, M, G), the oldest freed first, and only what is not in use: it never delays freeing beyond that.
"""
from __future__ import annotations

import math
import os

import numpy as np
from typing import Any, Dict, Optional

from fastnorm import _C
from fastnorm._validate import integer

# Smaller results come from NumPy: the C library reuses freed memory of that size without new page faults.
_MIN_BYTES = 1 << 20
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def empty(shape: tuple, dtype: np.dtype) -> np.ndarray:
    """An uninitialised C-ordered array, from the buffer cache when it is large."""
    if _limit > 0 and dtype.itemsize * math.prod(shape) >= _MIN_BYTES:
        return _C.empty(shape, dtype)
    return np.empty(shape, dtype=dtype)


def fresh(buf: np.ndarray, out: Optional[np.ndarray]) -> bool:
    """True when ``buf`` is a result just allocated on untouched pages (not ``out``, not a reused buffer): kernels
    then write it with plain stores, streaming stores being slower on pages that fault on first touch."""
    return buf is not out and (buf.nbytes < _MIN_BYTES or not _C.buffer_reused(buf))


def set_buffer_cache(nbytes: int) -> None:
    """Let the cache of freed result buffers hold up to ``nbytes`` (0 turns it off and frees what it holds)."""
    global _limit
    value = integer(nbytes, "nbytes", 0, "a size >= 0")
    _C.set_buffer_cache(value)
    _limit = value


def buffer_cache_info() -> Dict[str, Any]:
    """The cache's limit, the bytes and buffers it holds now, and its hits and misses so far."""
    return _C.buffer_cache_info()


def _parse_size(text: str) -> int:
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = t[-1] if t and t[-1] in "KMG" else ""
    number = t[: len(t) - len(unit)].strip()
    try:
        value = int(float(number) * _UNITS[unit])
    except ValueError:
        raise ValueError(f"FASTNORM_BUFFER_CACHE: expected a size such as 0, 512M or 1G, got {text!r}") from None
    if value < 0:
        raise ValueError(f"FASTNORM_BUFFER_CACHE: expected a size >= 0, got {text!r}")
    return value


_limit = _C.buffer_cache_info()["limit"]
if os.environ.get("FASTNORM_BUFFER_CACHE"):
    set_buffer_cache(_parse_size(os.environ["FASTNORM_BUFFER_CACHE"]))
