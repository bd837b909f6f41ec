"""What this build of fastnorm is and how it runs here: ``fastnorm.info()`` and ``python -m fastnorm info``."""
from __future__ import annotations

import platform

import numpy as np

from typing import Any, Dict

from fastnorm import _C
from fastnorm._threads import get_num_threads


def info() -> Dict[str, Any]:
    """Version, ISA level in use and available, OpenMP runtime and thread count, compiler and flags."""
    build = _C.build_info()
    return {
        "version": build["version"],
        "isa": _C.isa(),
        "supported_isas": _C.supported_isas(),
        "multi_isa_build": build["multi_isa"],
        "openmp": build["openmp"],
        "openmp_version": build["openmp_version"],
        "num_threads": get_num_threads(),
        "omp_max_threads": _C.max_threads(),
        "stream_threshold_bytes": _C.stream_threshold(),
        "compiler": build["compiler"],
        "flags": build["flags"],
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
    }


def format_info(d: Dict[str, Any]) -> str:
    width = max(map(len, d))
    return "\n".join(f"{k:<{width}}  {v}" for k, v in d.items())
