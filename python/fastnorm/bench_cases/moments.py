"""Benchmark cases of the per-channel moments."""
from __future__ import annotations

import numpy as np

import fastnorm
from fastnorm.bench_cases._registry import Case, register


def _register_moments():
    # The statistics pass of batch norm (NCHW, channels-last) and layer norm, on baselines.md's shapes.
    for label, shape, axis in [("nchw 32x64x56x56", (32, 64, 56, 56), (0, 2, 3)),
                               ("nhwc 32x56x56x64", (32, 56, 56, 64), (0, 1, 2)),
                               ("rows 65536x128", (65536, 128), (1,))]:
        def setup(n, rng, shape=shape):
            return {"x": rng.standard_normal(shape).astype(np.float32)}
        register(Case(f"moments {label}", setup, (lambda i, o, a=axis: fastnorm.moments(i["x"], axis=a)), 4,
                      numpy=(lambda i, o, a=axis: (i["x"].mean(axis=a), i["x"].var(axis=a))),
                      torch=(lambda i, o, a=axis: __import__("torch").var_mean(i["x"], dim=a)),
                      tags=("statistics",), shape=shape, has_out=False))


_register_moments()
