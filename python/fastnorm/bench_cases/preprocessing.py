"""Benchmark cases of preprocessing: fitting a Standardizer."""
from __future__ import annotations

import numpy as np

from fastnorm.bench_cases._registry import Case, register


def _register_standardizer():
    # Fitting a Standardizer: per-feature statistics of (N, D) rows and the per-channel mean of
    # channels-last images, against the NumPy formula (what scikit-learn's StandardScaler computes) and
    # torch.var_mean.  One pass over the data: 4 bytes per float32.
    from fastnorm.preprocessing import Standardizer
    for label, shape, axis in [("per-feature 65536x256", (65536, 256), 0),
                               ("per-channel nhwc 256x64x64x3", (256, 64, 64, 3), (0, 1, 2))]:
        def setup(n, rng, shape=shape):
            return {"x": (rng.standard_normal(shape) * 3 + 1).astype(np.float32)}
        register(Case(f"standardizer fit {label}", setup, lambda i, o, a=axis: Standardizer(axis=a).fit(i["x"]), 4,
                      numpy=lambda i, o, a=axis: (i["x"].mean(axis=a), i["x"].std(axis=a)),
                      torch=lambda i, o, a=axis: __import__("torch").var_mean(i["x"], dim=a),
                      tags=("statistics",), shape=shape, has_out=False))


_register_standardizer()
