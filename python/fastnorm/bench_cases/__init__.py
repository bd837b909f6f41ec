"""The benchmark's cases, family by family: each module registers its cases (what to time on fastnorm, NumPy,
PyTorch's fastest equivalent call and ONNX Runtime's op, and the compulsory traffic) with
:func:`~fastnorm.bench_cases._registry.register` when imported; the runner (:mod:`fastnorm.bench`) times them.  A
new family adds a module here, its import below (the order is the report's), and its headline case to HEADLINE.
"""
from fastnorm.bench_cases._registry import REGISTRY, Case, register
from fastnorm.bench_cases import activations, half, moments, norms, samplers, preprocessing, losses  # noqa: F401
from fastnorm.bench_cases.activations import FROM_OUTPUT
from fastnorm.bench_cases.half import _half_dtypes  # noqa: F401  (the tests use it)

# The default run: one case of each family, about a minute on 2 cores (--full runs every case).
HEADLINE = ("relu fwd", "relu bwd", "sigmoid bwd", "gelu fwd", "batch_norm fwd nchw 32x64x56x56",
            "batch_norm bwd nchw 32x64x56x56", "layer_norm fwd 8192x1024", "layer_norm bwd 8192x1024",
            "group_norm fwd nhwc 32x64x56x56", "moments nchw 32x64x56x56", "normal 4096x4096",
            "softmax fwd 8192x1024", "cross_entropy fwd+bwd 4096x1000", "dropout fwd")

__all__ = ["Case", "REGISTRY", "HEADLINE", "FROM_OUTPUT", "register"]
