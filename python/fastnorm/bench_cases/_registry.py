"""The benchmark's case record and its registry, with the input makers the families share."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Tuple

import numpy as np

from fastnorm.bench_onnx import OnnxOp


@dataclass
class Case:
    """One benchmark: ``setup(n, rng)`` makes the inputs (a dict of float32 arrays); each implementation is
    called as ``impl(inputs, out)``, with ``out`` None for the allocating call.  ``bytes_per_element`` counts the
    compulsory traffic (4 per float32 read or written).  A case with a ``shape`` always runs at that shape (n is
    its size); one without ``out`` (a reduction) is timed allocating only."""
    name: str
    setup: Callable[..., Any]
    fastnorm: Callable[..., Any]
    bytes_per_element: int
    numpy: Optional[Callable[..., Any]] = None
    torch: Optional[Callable[..., Any]] = None  # torch(inputs_as_tensors, out_tensor_or_None)
    tags: Tuple[str, ...] = field(default_factory=tuple)
    shape: Optional[Tuple[int, ...]] = None
    has_out: bool = True
    dtype: Any = np.float32  # of the out= array
    onnx: Optional[OnnxOp] = None  # the same op in ONNX Runtime, when it has one


REGISTRY: list[Case] = []


def register(case: Case) -> Case:
    REGISTRY.append(case)
    return case


def _normal_x(n, rng):
    return {"x": (rng.standard_normal(n) * 3).astype(np.float32)}


def _normal_dy_x(n, rng):
    return {"dy": rng.standard_normal(n).astype(np.float32), "x": (rng.standard_normal(n) * 3).astype(np.float32)}


def _dy_and_output(forward):
    """Inputs of a backward taken from the forward's output: dy and y = forward(x)."""
    def setup(n, rng):
        inputs = _normal_dy_x(n, rng)
        return {"dy": inputs["dy"], "y": forward(inputs["x"])}
    return setup


def _np_out(result, out):
    if out is None:
        return result
    np.copyto(out, result)
    return out


def _sig(x):
    return 1 / (1 + np.exp(-x))


# name: (numpy forward, numpy backward factor f'(x), torch forward, torch backward) — None where none exists.
# PyTorch's backward is its fastest equivalent call: the grad_input= (out=) overload when given an output, and for
# sigmoid and tanh the backward from the forward's output y, which is what its autograd keeps (the cases in
# FROM_OUTPUT pass y where the others pass x, to fastnorm, NumPy and PyTorch alike).


def _norm_inputs(rng, shape, c, forward):
    """x, per-channel gamma and beta, dy, and the statistics ``forward(x, gamma, beta)`` saves: a norm case's
    inputs."""
    x = rng.standard_normal(shape).astype(np.float32)
    gamma = rng.uniform(0.5, 1.5, c).astype(np.float32)
    beta = rng.standard_normal(c).astype(np.float32)
    _, mean, rstd = forward(x, gamma, beta)
    return {"x": x, "gamma": gamma, "beta": beta, "dy": rng.standard_normal(shape).astype(np.float32),
            "mean": mean, "rstd": rstd}
