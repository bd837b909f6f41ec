"""Benchmark cases of the activations: each forward and backward against PyTorch's fastest call and ONNX
Runtime's op."""
from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

import fastnorm
from fastnorm.bench_onnx import OnnxOp
from fastnorm.bench_cases._registry import Case, register, _normal_x, _normal_dy_x, _dy_and_output, _np_out, _sig


FROM_OUTPUT = ("sigmoid", "tanh")


def _activation_table(F, aten):
    k = np.sqrt(2 / np.pi)
    if aten is None:  # without torch the torch entries are never called
        def grad(name, *args, **kw):
            return None
    else:
        def grad(name, *args, **kw):
            op = getattr(aten, name)

            def call(dy, xy, o):
                if o is None:
                    return op.default(dy, xy, *args, **kw)
                return op.grad_input(dy, xy, *args, **kw, grad_input=o)
            return call
    return {
        "relu": (lambda x, o: np.maximum(x, 0, out=o), lambda x: x > 0,
                 lambda x, o: F.relu(x) if o is None else torch_clamp_min(x, o), grad("threshold_backward", 0)),
        "leaky_relu": (lambda x, o: _np_out(np.where(x > 0, x, 0.01 * x), o), lambda x: np.where(x > 0, 1, 0.01),
                       lambda x, o: F.leaky_relu(x, 0.01) if o is None else aten.leaky_relu.out(x, 0.01, out=o),
                       grad("leaky_relu_backward", 0.01, False)),
        "hardtanh": (lambda x, o: np.clip(x, -1, 1, out=o), lambda x: (x > -1) & (x < 1),
                     lambda x, o: F.hardtanh(x) if o is None else aten.hardtanh.out(x, -1.0, 1.0, out=o),
                     grad("hardtanh_backward", -1.0, 1.0)),
        # from the output y: f'(x) = y (1 - y), 1 - y^2
        "sigmoid": (lambda x, o: _np_out(_sig(x), o), lambda y: y * (1 - y),
                    lambda x, o: F.sigmoid(x) if o is None else aten.sigmoid.out(x, out=o),
                    grad("sigmoid_backward")),
        "tanh": (lambda x, o: np.tanh(x, out=o), lambda y: 1 - y ** 2,
                 lambda x, o: F.tanh(x) if o is None else aten.tanh.out(x, out=o), grad("tanh_backward")),
        "elu": (lambda x, o: _np_out(np.where(x > 0, x, np.expm1(x)), o), lambda x: np.where(x > 0, 1, np.exp(x)),
                lambda x, o: F.elu(x) if o is None else aten.elu.out(x, 1.0, 1.0, 1.0, out=o),
                None if aten is None else (lambda dy, x, o: aten.elu_backward(dy, 1.0, 1.0, 1.0, False, x) if o is None
                                           else aten.elu_backward.grad_input(dy, 1.0, 1.0, 1.0, False, x,
                                                                             grad_input=o))),
        "selu": (None, None, lambda x, o: F.selu(x), None),
        "gelu": (None, None, lambda x, o: F.gelu(x) if o is None else aten.gelu.out(x, out=o), grad("gelu_backward")),
        "gelu_tanh": (lambda x, o: _np_out(0.5 * x * (1 + np.tanh(k * (x + 0.044715 * x ** 3))), o), None,
                      lambda x, o: F.gelu(x, approximate="tanh") if o is None
                      else aten.gelu.out(x, approximate="tanh", out=o), grad("gelu_backward", approximate="tanh")),
        "silu": (lambda x, o: _np_out(x * _sig(x), o), lambda x: _sig(x) * (1 + x * (1 - _sig(x))),
                 lambda x, o: F.silu(x) if o is None else aten.silu.out(x, out=o), grad("silu_backward")),
        "softplus": (lambda x, o: _np_out(np.where(x > 20, x, np.log1p(np.exp(x))), o), None,
                     lambda x, o: F.softplus(x) if o is None else aten.softplus.out(x, 1, 20, out=o),
                     grad("softplus_backward", 1, 20)),
        # mish_backward has no out= overload: PyTorch allocates
        "mish": (lambda x, o: _np_out(x * np.tanh(np.log1p(np.exp(x))), o), None,
                 lambda x, o: F.mish(x) if o is None else aten.mish.out(x, out=o),
                 None if aten is None else (lambda dy, x, o: aten.mish_backward(dy, x))),
        "hardsigmoid": (lambda x, o: _np_out(np.clip(x + 3, 0, 6) / 6, o), None,
                        lambda x, o: F.hardsigmoid(x) if o is None else aten.hardsigmoid.out(x, out=o),
                        grad("hardsigmoid_backward")),
        "hardswish": (lambda x, o: _np_out(x * np.clip(x + 3, 0, 6) / 6, o), None,
                      lambda x, o: F.hardswish(x) if o is None else aten.hardswish.out(x, out=o),
                      None if aten is None else (lambda dy, x, o: aten.hardswish_backward(dy, x) if o is None
                                                 else aten.hardswish_backward.out(dy, x, out=o))),
    }


def torch_clamp_min(x: ArrayLike, o: Any) -> Any:
    import torch
    return torch.clamp_min(x, 0, out=o)


# The activations ONNX Runtime has, as ONNX nodes with fastnorm's parameters (silu has no ONNX op).
ONNX_ACTIVATIONS = {
    "relu": OnnxOp("Relu"), "leaky_relu": OnnxOp("LeakyRelu", attrs={"alpha": 0.01}),
    "sigmoid": OnnxOp("Sigmoid"), "tanh": OnnxOp("Tanh"), "elu": OnnxOp("Elu", attrs={"alpha": 1.0}),
    "selu": OnnxOp("Selu"), "gelu": OnnxOp("Gelu"), "gelu_tanh": OnnxOp("Gelu", attrs={"approximate": "tanh"}),
    "softplus": OnnxOp("Softplus"), "mish": OnnxOp("Mish"),
    "hardsigmoid": OnnxOp("HardSigmoid", attrs={"alpha": 1 / 6, "beta": 0.5}), "hardswish": OnnxOp("HardSwish"),
}


def _register_activations():
    try:
        import torch
        F, aten = torch.nn.functional, torch.ops.aten
    except ImportError:  # the table's torch entries are never called without torch
        F = aten = None
    table = _activation_table(F, aten)
    for name, (np_fwd, np_grad, t_fwd, t_bwd) in table.items():
        public = "gelu" if name == "gelu_tanh" else name
        kw = {"approximate": "tanh"} if name == "gelu_tanh" else {}
        fwd = getattr(fastnorm, public)
        bwd = getattr(fastnorm, public + "_backward")
        register(Case(f"{name} fwd", _normal_x, (lambda i, o, f=fwd, kw=kw: f(i["x"], out=o, **kw)), 8,
                      numpy=(lambda i, o, f=np_fwd: f(i["x"], o)) if np_fwd else None,
                      torch=(lambda i, o, f=t_fwd: f(i["x"], o)) if t_fwd else None, tags=("activation",),
                      onnx=ONNX_ACTIVATIONS.get(name)))
        if name in FROM_OUTPUT:  # the backward from y, on every side
            register(Case(f"{name} bwd", _dy_and_output(fwd), (lambda i, o, f=bwd: f(i["dy"], y=i["y"], out=o)), 12,
                          numpy=lambda i, o, g=np_grad: _np_out(i["dy"] * g(i["y"]), o),
                          torch=(lambda i, o, f=t_bwd: f(i["dy"], i["y"], o)) if t_bwd else None,
                          tags=("activation",)))
            continue
        register(Case(f"{name} bwd", _normal_dy_x, (lambda i, o, f=bwd, kw=kw: f(i["dy"], i["x"], out=o, **kw)), 12,
                      numpy=(lambda i, o, g=np_grad: _np_out(i["dy"] * g(i["x"]), o)) if np_grad else None,
                      torch=(lambda i, o, f=t_bwd: f(i["dy"], i["x"], o)) if t_bwd else None, tags=("activation",)))


_register_activations()
