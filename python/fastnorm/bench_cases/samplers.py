"""Benchmark cases of the samplers behind weight initialization."""
from __future__ import annotations

import numpy as np

import fastnorm
from fastnorm.bench_cases._registry import Case, register


def _register_samplers():
    # Sampling a 4096x4096 weight, float32 and float64: fastnorm's Philox samplers against NumPy's
    # default_rng() and PyTorch's randn / rand / trunc_normal_ (whose bounds are absolute: [-2, 2] at std 1 is the
    # same law); and orthogonal init of a 1024x1024 weight against torch.nn.init.orthogonal_.
    shape = (4096, 4096)
    gen = fastnorm.random.Generator(0)
    np_rng = np.random.default_rng(0)

    def setup(n, rng):
        return {}

    for dt in (np.float32, np.float64):
        bits = 8 * np.dtype(dt).itemsize
        suffix = "" if dt is np.float32 else " f64"

        def ours(method, dt=dt):
            return lambda i, o: getattr(gen, method)(shape, dtype=dt, out=None if o is None else o.reshape(shape))

        def torch_call(make, bits=bits):
            def call(i, o):
                import torch
                return make(torch, getattr(torch, f"float{bits}"), None if o is None else o.view(shape))
            return call

        register(Case(f"normal 4096x4096{suffix}", setup, ours("normal"), bits // 8,
                      numpy=lambda i, o, dt=dt: np_rng.standard_normal(shape, dtype=dt),
                      torch=torch_call(lambda torch, t, o: torch.randn(shape, dtype=t, out=o)), tags=("random",),
                      shape=shape, dtype=dt))
        register(Case(f"uniform 4096x4096{suffix}", setup, ours("uniform"), bits // 8,
                      numpy=lambda i, o, dt=dt: np_rng.random(shape, dtype=dt),
                      torch=torch_call(lambda torch, t, o: torch.rand(shape, dtype=t, out=o)), tags=("random",),
                      shape=shape, dtype=dt))
        register(Case(f"truncated_normal 4096x4096{suffix}", setup, ours("truncated_normal"), bits // 8,
                      torch=torch_call(lambda torch, t, o: torch.nn.init.trunc_normal_(
                          torch.empty(shape, dtype=t) if o is None else o, 0.0, 1.0, -2.0, 2.0)),
                      tags=("random",), shape=shape, dtype=dt))
    square = (1024, 1024)
    register(Case("orthogonal 1024x1024", setup, lambda i, o: fastnorm.init.orthogonal(square, rng=gen), 4,
                  torch=lambda i, o: __import__("torch").nn.init.orthogonal_(__import__("torch").empty(square)),
                  tags=("random",), shape=square, has_out=False))


_register_samplers()
