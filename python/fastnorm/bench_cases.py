"""The benchmark's cases, family by family: each registers its cases (what to time on fastnorm, NumPy, PyTorch's
fastest equivalent call and ONNX Runtime's op, and the compulsory traffic) with :func:`register`; the runner
(:mod:`fastnorm.bench`) times them.  A new family adds a ``_register_<family>()`` here, and its headline case to
HEADLINE.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike

import fastnorm
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


def _half_dtypes():
    """(label, dtype) of the half types read and written natively: float16, and bfloat16 with ml_dtypes."""
    out = [("f16", np.dtype(np.float16))]
    try:
        import ml_dtypes
        out.append(("bf16", np.dtype(ml_dtypes.bfloat16)))
    except ImportError:
        pass
    return out


def _register_half():
    """Memory-bound activations and layer norm on float16 and bfloat16 arrays: half the bytes of
    float32, read and written natively."""
    try:
        import torch
        F = torch.nn.functional
    except ImportError:
        F = None
    for tag, dt in _half_dtypes():
        def setup_x(n, rng, dt=dt):
            return {"x": (rng.standard_normal(n) * 3).astype(dt)}

        def setup_dy_x(n, rng, dt=dt):
            return {"dy": rng.standard_normal(n).astype(dt), "x": (rng.standard_normal(n) * 3).astype(dt)}

        zero = dt.type(0)
        for name, np_fwd, t_fwd in [("relu", lambda x, z=zero: np.maximum(x, z), lambda x: F.relu(x)),
                                    ("leaky_relu", lambda x, z=zero: np.where(x > z, x, dt.type(0.01) * x),
                                     lambda x: F.leaky_relu(x, 0.01)),
                                    ("hardtanh", lambda x: np.clip(x, dt.type(-1), dt.type(1)),
                                     lambda x: F.hardtanh(x))]:
            fwd, bwd = getattr(fastnorm, name), getattr(fastnorm, name + "_backward")
            register(Case(f"{name} fwd {tag}", setup_x, (lambda i, o, f=fwd: f(i["x"], out=o)), 4,
                          numpy=(lambda i, o, f=np_fwd: f(i["x"])), torch=(lambda i, o, f=t_fwd: f(i["x"])),
                          tags=("activation", "half"), dtype=dt))
            register(Case(f"{name} bwd {tag}", setup_dy_x, (lambda i, o, f=bwd: f(i["dy"], i["x"], out=o)), 6,
                          tags=("activation", "half"), dtype=dt))
        shape = (8192, 1024)

        def setup_ln(n, rng, dt=dt, shape=shape):
            ln = lambda x, g, b: fastnorm.layer_norm(x, g, b, return_stats=True)  # noqa: E731
            inputs = _norm_inputs(rng, shape, shape[-1], ln)
            for k in ("x", "dy"):
                inputs[k] = inputs[k].astype(dt)
            return inputs

        def torch_ln_fwd(t, o, d=shape[-1]):
            return F.layer_norm(t["x"], (d,), t["gamma"].to(t["x"].dtype), t["beta"].to(t["x"].dtype), 1e-5)

        def torch_ln_bwd(t, o, d=shape[-1]):  # PyTorch keeps half inputs' statistics in their dtype
            import torch
            h = t["x"].dtype
            return torch.ops.aten.native_layer_norm_backward(
                t["dy"], t["x"], [d], t["mean"].to(h).unsqueeze(-1), t["rstd"].to(h).unsqueeze(-1),
                t["gamma"].to(h), t["beta"].to(h), [True, True, True])

        label = "x".join(map(str, shape))
        register(Case(f"layer_norm fwd {label} {tag}", setup_ln,
                      lambda i, o: fastnorm.layer_norm(i["x"], i["gamma"], i["beta"], out=o), 4,
                      torch=torch_ln_fwd, tags=("normalization", "half"), shape=shape, dtype=dt))
        register(Case(f"layer_norm bwd {label} {tag}", setup_ln,
                      lambda i, o: fastnorm.layer_norm_backward(i["dy"], i["x"], i["mean"], i["rstd"], i["gamma"],
                                                                out=o), 6,
                      torch=torch_ln_bwd, tags=("normalization", "half"), shape=shape, dtype=dt))
        _register_half_channel_norms(tag, dt)


def _register_half_channel_norms(tag, dt):
    """Batch and group norm (training, NCHW 32x64x56x56) on half storage, read and written natively: the float32
    cases' traffic halved."""
    dims = (32, 64, 56, 56)
    label = "nchw " + "x".join(map(str, dims))
    def torch_bn(t, o):
        import torch
        c = dims[1]
        return torch.nn.functional.batch_norm(t["x"], torch.zeros(c), torch.ones(c), t["gamma"], t["beta"],
                                              training=True)

    def torch_gn(t, o):  # PyTorch wants the parameters in the input's dtype
        import torch
        h = t["x"].dtype
        return torch.nn.functional.group_norm(t["x"], 32, t["gamma"].to(h), t["beta"].to(h), 1e-5)

    for name, forward, backward, torch_fwd in [
            ("batch_norm", lambda x, g, b, **k: fastnorm.batch_norm(x, gamma=g, beta=b, **k),
             lambda dy, x, m, r, g, **k: fastnorm.batch_norm_backward(dy, x, m, r, g, **k), torch_bn),
            ("group_norm", lambda x, g, b, **k: fastnorm.group_norm(x, 32, g, b, **k),
             lambda dy, x, m, r, g, **k: fastnorm.group_norm_backward(dy, x, m, r, 32, g, **k), torch_gn)]:
        def setup(n, rng, forward=forward):
            inputs = _norm_inputs(rng, dims, dims[1], lambda x, g, b: forward(x, g, b, return_stats=True))
            for k in ("x", "dy"):
                inputs[k] = inputs[k].astype(dt)
            return inputs

        register(Case(f"{name} fwd {label} {tag}", setup,
                      lambda i, o, f=forward: f(i["x"], i["gamma"], i["beta"], out=o), 4, torch=torch_fwd,
                      tags=("normalization", "half"), shape=dims, dtype=dt))
        register(Case(f"{name} bwd {label} {tag}", setup,
                      lambda i, o, f=backward: f(i["dy"], i["x"], i["mean"], i["rstd"], i["gamma"], out=o), 6,
                      tags=("normalization", "half"), shape=dims, dtype=dt))


_register_half()


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


def _image_layouts():
    """baselines.md's image shapes, NCHW and channels-last: (dims as NCHW, layout, shape, channel axis, label)."""
    for dims in [(32, 64, 56, 56), (64, 256, 14, 14)]:
        n, c, h, w = dims
        for layout in ("nchw", "nhwc"):
            shape = dims if layout == "nchw" else (n, h, w, c)
            yield dims, layout, shape, 1 if layout == "nchw" else -1, f"{layout} {'x'.join(map(str, dims))}"


def _native_norm(name: str, args: tuple, t: Dict[str, Any], o: Any, small: Tuple[int, ...], perm: Any = None) -> Any:
    """PyTorch's ``aten.<name>`` norm call at its fastest: allocating without an output, else its ``.out`` overload
    writing y into ``o`` (viewed as x, and as the NCHW view PyTorch computes on for channels-last data: ``perm``) and
    the statistics or parameter gradients it also writes into small tensors of shape ``small``."""
    import torch
    op = getattr(torch.ops.aten, name)
    if o is None:
        return op(*args)[0]
    y = o.view(t["x"].shape)
    outs = (perm(y) if perm is not None else y, torch.empty(small), torch.empty(small))
    names = ("out", "save_mean", "save_invstd") if name == "native_batch_norm" else ("out0", "out1", "out2")
    return op.out(*args, **dict(zip(names, outs)))[0]


def _norm_inputs(rng, shape, c, forward):
    """x, per-channel gamma and beta, dy, and the statistics ``forward(x, gamma, beta)`` saves: a norm case's
    inputs."""
    x = rng.standard_normal(shape).astype(np.float32)
    gamma = rng.uniform(0.5, 1.5, c).astype(np.float32)
    beta = rng.standard_normal(c).astype(np.float32)
    _, mean, rstd = forward(x, gamma, beta)
    return {"x": x, "gamma": gamma, "beta": beta, "dy": rng.standard_normal(shape).astype(np.float32),
            "mean": mean, "rstd": rstd}


def _register_batch_norm():
    """Training-mode batch norm with running statistics, forward and backward, NCHW and channels-last, on
    baselines.md's shapes.  Compulsory traffic: forward reads x and writes y (8 bytes per float32), backward
    reads dy and x and writes dx (12); a two-pass design (statistics, then apply) moves 12 and 20."""
    for dims, layout, shape, axis, label in _image_layouts():
        c_ = dims[1]

        def setup(n, rng, shape=shape, c=c_, axis=axis):
            bn = lambda x, g, b: fastnorm.batch_norm(x, gamma=g, beta=b, axis=axis, return_stats=True)  # noqa: E731
            inputs = _norm_inputs(rng, shape, c, bn)
            # test mode's running statistics: the batch's own, so that eval and train outputs look alike
            rv_eval = (1 / np.square(inputs["rstd"].astype(np.float64)) - 1e-5).astype(np.float32)
            return dict(inputs, rm=np.zeros(c, np.float32), rv=np.ones(c, np.float32),
                        rm_eval=inputs["mean"].astype(np.float32), rv_eval=rv_eval)

        def fwd(i, o, axis=axis):
            return fastnorm.batch_norm(i["x"], gamma=i["gamma"], beta=i["beta"], axis=axis, running_mean=i["rm"],
                                       running_var=i["rv"], out=o)

        def bwd(i, o, axis=axis):
            return fastnorm.batch_norm_backward(i["dy"], i["x"], i["mean"], i["rstd"], i["gamma"], axis=axis,
                                                out=o)

        perm = (lambda v: v.permute(0, 3, 1, 2)) if layout == "nhwc" else (lambda v: v)  # channels-last NCHW view

        def torch_fwd(t, o, perm=perm, training=True, rm="rm", rv="rv"):
            args = (perm(t["x"]), t["gamma"], t["beta"], t[rm], t[rv], training, 0.1, 1e-5)
            return _native_norm("native_batch_norm", args, t, o, t["gamma"].shape, perm)

        def torch_bwd(t, o, perm=perm):
            args = (perm(t["dy"]), perm(t["x"]), t["gamma"], t["rm"], t["rv"], t["mean"].float(),
                    t["rstd"].float(), True, 1e-5, [True, True, True])
            return _native_norm("native_batch_norm_backward", args, t, o, t["gamma"].shape, perm)

        def numpy_fwd(i, o, axis=axis):
            x = i["x"]
            red = tuple(k for k in range(4) if k != axis % 4)
            m, v = x.mean(axis=red, keepdims=True), x.var(axis=red, keepdims=True)
            return (x - m) / np.sqrt(v + 1e-5)

        def eval_fwd(i, o, axis=axis):
            return fastnorm.batch_norm(i["x"], gamma=i["gamma"], beta=i["beta"], axis=axis, training=False,
                                       running_mean=i["rm_eval"], running_var=i["rv_eval"], out=o)

        def torch_eval(t, o, f=torch_fwd):
            return f(t, o, training=False, rm="rm_eval", rv="rv_eval")

        def numpy_eval(i, o, axis=axis):
            shape_c = [1] * 4
            shape_c[axis] = -1
            scale = (i["gamma"] / np.sqrt(i["rv_eval"] + 1e-5)).reshape(shape_c)
            return (i["x"] - i["rm_eval"].reshape(shape_c)) * scale + i["beta"].reshape(shape_c)

        register(Case(f"batch_norm fwd {label}", setup, fwd, 8, numpy=numpy_fwd, torch=torch_fwd,
                      tags=("normalization",), shape=shape))
        # ONNX Runtime's BatchNormalization is test mode, NCHW only
        bn_onnx = OnnxOp("BatchNormalization", ("x", "gamma", "beta", "rm_eval", "rv_eval"), {"epsilon": 1e-5},
                         "abs") if layout == "nchw" else None
        register(Case(f"batch_norm eval {label}", setup, eval_fwd, 8, numpy=numpy_eval, torch=torch_eval,
                      tags=("normalization",), shape=shape, onnx=bn_onnx))
        register(Case(f"batch_norm bwd {label}", setup, bwd, 12, torch=torch_bwd, tags=("normalization",),
                      shape=shape))


_register_batch_norm()


LN_ONNX = OnnxOp("LayerNormalization", ("x", "gamma", "beta"), {"axis": -1, "epsilon": 1e-5}, "abs")
RMS_ONNX = OnnxOp("RMSNormalization", ("x", "gamma"), {"axis": -1, "epsilon": 1e-5}, "abs")
# Row widths of the sweep (at 8M values each): short rows to long, with common transformer widths among them.
SWEEP_WIDTHS = (64, 128, 256, 512, 768, 1024, 2048, 4096, 8192, 16384)


def _register_row_norm(family: str, shape: Tuple[int, int], tags: Tuple[str, ...]) -> None:
    """Layer or RMS norm (eps 1e-5) over the rows of ``shape``, forward and backward (traffic as batch norm).
    PyTorch has no fused CPU backward for RMS norm (autograd composes it from elementwise ops), so that case has no
    PyTorch column."""
    label = "x".join(map(str, shape))
    d = shape[-1]
    rms = family == "rms_norm"

    def setup(n, rng):
        if rms:
            stats = lambda x, g, b: (None, None, fastnorm.rms_norm(x, g, eps=1e-5, return_stats=True)[1])  # noqa: E731
        else:
            stats = lambda x, g, b: fastnorm.layer_norm(x, g, b, return_stats=True)  # noqa: E731
        return _norm_inputs(rng, shape, d, stats)

    def fwd(i, o):
        if rms:
            return fastnorm.rms_norm(i["x"], i["gamma"], eps=1e-5, out=o)
        return fastnorm.layer_norm(i["x"], i["gamma"], i["beta"], out=o)

    def bwd(i, o):
        if rms:
            return fastnorm.rms_norm_backward(i["dy"], i["x"], i["rstd"], i["gamma"], out=o)
        return fastnorm.layer_norm_backward(i["dy"], i["x"], i["mean"], i["rstd"], i["gamma"], out=o)

    def torch_fwd(t, o):
        import torch
        if rms:  # a composite of elementwise ops on the CPU: no out= form
            return torch.nn.functional.rms_norm(t["x"], (d,), t["gamma"], 1e-5)
        return _native_norm("native_layer_norm", (t["x"], [d], t["gamma"], t["beta"], 1e-5), t, o,
                            (t["x"].shape[0], 1))

    def torch_bwd(t, o):
        args = (t["dy"], t["x"], [d], t["mean"].float().unsqueeze(-1), t["rstd"].float().unsqueeze(-1),
                t["gamma"], t["beta"], [True, True, True])
        return _native_norm("native_layer_norm_backward", args, t, o, (d,))

    def numpy_fwd(i, o):
        x = i["x"]
        if rms:
            return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + 1e-5) * i["gamma"]
        m, v = x.mean(axis=-1, keepdims=True), x.var(axis=-1, keepdims=True)
        return (x - m) / np.sqrt(v + 1e-5) * i["gamma"] + i["beta"]

    register(Case(f"{family} fwd {label}", setup, fwd, 8, numpy=numpy_fwd, torch=torch_fwd, tags=tags,
                  shape=shape, onnx=RMS_ONNX if rms else LN_ONNX))
    register(Case(f"{family} bwd {label}", setup, bwd, 12, torch=None if rms else torch_bwd, tags=tags,
                  shape=shape))


def _register_layer_norm():
    """Layer and RMS norm over the last axis, on rows of every width of the sweep at 8M values (baselines.md's
    8192x1024 and 65536x128 among them)."""
    for family in ("layer_norm", "rms_norm"):
        for d in SWEEP_WIDTHS:
            _register_row_norm(family, ((1 << 23) // d, d), ("normalization", "sweep"))


_register_layer_norm()


def _register_group_and_instance_norm():
    """GroupNorm(32) forward and backward, NCHW and channels-last, and InstanceNorm forward, on baselines.md's
    shapes (traffic counted as for batch norm)."""
    for dims, layout, shape, axis, label in _image_layouts():
        c_ = dims[1]

        def setup(n, rng, shape=shape, c=c_, axis=axis):
            gn = lambda x, g, b: fastnorm.group_norm(x, 32, g, b, axis=axis, return_stats=True)  # noqa: E731
            # ones and zeros: the affine ONNX's InstanceNormalization requires, as an identity
            return dict(_norm_inputs(rng, shape, c, gn), ones=np.ones(c, np.float32), zeros=np.zeros(c, np.float32))

        def perm(v, layout=layout):
            return v.permute(0, 3, 1, 2) if layout == "nhwc" else v

        def torch_gn_fwd(t, o, perm=perm, dims=dims):
            n, c, h, w = dims
            args = (perm(t["x"]), t["gamma"], t["beta"], n, c, h * w, 32, 1e-5)
            return _native_norm("native_group_norm", args, t, o, (n, 32), perm)

        def torch_gn_bwd(t, o, perm=perm, dims=dims):
            n, c, h, w = dims
            args = (perm(t["dy"]), perm(t["x"]), t["mean"].float(), t["rstd"].float(), t["gamma"], n, c, h * w, 32,
                    [True, True, True])
            return _native_norm("native_group_norm_backward", args, t, o, (c,), perm)

        def torch_in_fwd(t, o, perm=perm):
            import torch
            return torch.nn.functional.instance_norm(perm(t["x"]), eps=1e-5)

        register(Case(f"group_norm fwd {label}", setup,
                      lambda i, o, axis=axis: fastnorm.group_norm(i["x"], 32, i["gamma"], i["beta"], axis=axis,
                                                                  out=o),
                      8, torch=torch_gn_fwd, tags=("normalization",), shape=shape,
                      onnx=OnnxOp("GroupNormalization", ("x", "gamma", "beta"), {"num_groups": 32, "epsilon": 1e-5},
                                  "abs") if layout == "nchw" else None))
        register(Case(f"group_norm bwd {label}", setup,
                      lambda i, o, axis=axis: fastnorm.group_norm_backward(i["dy"], i["x"], i["mean"], i["rstd"],
                                                                           32, i["gamma"], axis=axis, out=o),
                      12, torch=torch_gn_bwd, tags=("normalization",), shape=shape))
        register(Case(f"instance_norm fwd {label}", setup,
                      lambda i, o, axis=axis: fastnorm.instance_norm(i["x"], axis=axis, out=o),
                      8, torch=torch_in_fwd, tags=("normalization",), shape=shape,
                      onnx=OnnxOp("InstanceNormalization", ("x", "ones", "zeros"), {"epsilon": 1e-5}, "abs")
                      if layout == "nchw" else None))


_register_group_and_instance_norm()


def _register_fused():
    """Normalization + activation: fused (one call, one pass each way) against the two separate calls,
    and PyTorch's two calls; compulsory traffic as for the normalization alone."""
    def torch_f():
        import torch
        return torch.nn.functional

    specs = [
        ("batch_norm+relu nchw 32x64x56x56", (32, 64, 56, 56), 64, "relu",
         lambda x, g, b, **k: fastnorm.batch_norm(x, gamma=g, beta=b, axis=1, **k),
         lambda dy, x, m, r, g, **k: fastnorm.batch_norm_backward(dy, x, m, r, g, axis=1, **k),
         lambda t: torch_f().relu(torch_f().batch_norm(t["x"], None, None, t["gamma"], t["beta"], training=True))),
        ("layer_norm+gelu 8192x1024", (8192, 1024), 1024, "gelu",
         lambda x, g, b, **k: fastnorm.layer_norm(x, g, b, **k),
         lambda dy, x, m, r, g, **k: fastnorm.layer_norm_backward(dy, x, m, r, g, **k),
         lambda t: torch_f().gelu(torch_f().layer_norm(t["x"], (1024,), t["gamma"], t["beta"]))),
        ("group_norm+silu nhwc 32x56x56x64", (32, 56, 56, 64), 64, "silu",
         lambda x, g, b, **k: fastnorm.group_norm(x, 32, g, b, axis=-1, **k),
         lambda dy, x, m, r, g, **k: fastnorm.group_norm_backward(dy, x, m, r, 32, g, axis=-1, **k),
         lambda t: torch_f().silu(torch_f().group_norm(t["x"].permute(0, 3, 1, 2), 32, t["gamma"], t["beta"]))),
    ]
    for label, shape, c, act, fwd, bwd, torch_fwd in specs:
        def setup(n, rng, shape=shape, c=c, fwd=fwd):
            inputs = _norm_inputs(rng, shape, c, lambda x, g, b: fwd(x, g, b, return_stats=True))
            inputs["z"] = fwd(inputs["x"], inputs["gamma"], inputs["beta"])
            return inputs

        def fused_fwd(i, o, fwd=fwd, act=act):
            return fwd(i["x"], i["gamma"], i["beta"], activation=act, out=o)

        def two_fwd(i, o, fwd=fwd, act=act):
            z = fwd(i["x"], i["gamma"], i["beta"], out=o)
            return getattr(fastnorm, act)(z, out=z)

        def fused_bwd(i, o, bwd=bwd, act=act):
            return bwd(i["dy"], i["x"], i["mean"], i["rstd"], i["gamma"], beta=i["beta"], activation=act, out=o)

        def two_bwd(i, o, bwd=bwd, act=act):
            dz = getattr(fastnorm, act + "_backward")(i["dy"], i["z"], out=o)
            return bwd(dz, i["x"], i["mean"], i["rstd"], i["gamma"], out=dz)

        tf = (lambda t, o, f=torch_fwd: f(t))
        register(Case(f"{label} fwd fused", setup, fused_fwd, 8, torch=tf, tags=("fused",), shape=shape))
        register(Case(f"{label} fwd 2 calls", setup, two_fwd, 8, torch=tf, tags=("fused",), shape=shape))
        register(Case(f"{label} bwd fused", setup, fused_bwd, 12, tags=("fused",), shape=shape))
        register(Case(f"{label} bwd 2 calls", setup, two_bwd, 12, tags=("fused",), shape=shape))


_register_fused()


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



def _register_losses():
    """Softmax / log-softmax forward and backward (from the output), cross-entropy forward + backward, dropout
    forward and backward, against PyTorch's fastest calls: its aten kernels with out= where they have it (the
    softmax pair), the log-softmax + NLL pair that F.cross_entropy runs (and its two backwards), native_dropout
    (which also writes a byte mask) and native_dropout_backward from that mask."""
    def aten():
        import torch
        return torch.ops.aten

    for shape in [(8192, 1024), (65536, 128), (32, 1000)]:
        label = "x".join(map(str, shape))
        for log in (False, True):
            name = "log_softmax" if log else "softmax"
            fwd = fastnorm.log_softmax if log else fastnorm.softmax
            bwd = fastnorm.log_softmax_backward if log else fastnorm.softmax_backward

            def setup(n, rng, shape=shape, fwd=fwd):
                x = (rng.standard_normal(shape) * 3).astype(np.float32)
                return {"x": x, "y": fwd(x), "dy": rng.standard_normal(shape).astype(np.float32)}

            def torch_fwd(t, o, log=log):
                op = aten()._log_softmax if log else aten()._softmax
                return op(t["x"], -1, False) if o is None else op.out(t["x"], -1, False, out=o.view(t["x"].shape))

            def torch_bwd(t, o, log=log):
                op = aten()._log_softmax_backward_data if log else aten()._softmax_backward_data
                if o is None:
                    return op(t["dy"], t["y"], -1, t["x"].dtype)
                return op.out(t["dy"], t["y"], -1, t["x"].dtype, out=o.view(t["x"].shape))

            def numpy_fwd(i, o, log=log):
                x = i["x"]
                z = x - x.max(axis=-1, keepdims=True)
                return z - np.log(np.exp(z).sum(axis=-1, keepdims=True)) if log else \
                    np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)

            register(Case(f"{name} fwd {label}", setup, lambda i, o, f=fwd: f(i["x"], out=o), 8, numpy=numpy_fwd,
                          torch=torch_fwd, tags=("loss",), shape=shape,
                          onnx=OnnxOp("LogSoftmax" if log else "Softmax", attrs={"axis": -1}, metric="abs")))
            register(Case(f"{name} bwd {label}", setup, lambda i, o, b=bwd: b(i["dy"], i["y"], out=o), 12,
                          torch=torch_bwd, tags=("loss",), shape=shape))

    for shape in [(4096, 1000), (65536, 32)]:
        label = "x".join(map(str, shape))

        def setup(n, rng, shape=shape):
            return {"x": (rng.standard_normal(shape) * 3).astype(np.float32),
                    "t": rng.integers(0, shape[1], shape[0])}

        def ours(i, o):
            _, lse = fastnorm.cross_entropy(i["x"], i["t"], return_lse=True)
            return fastnorm.cross_entropy_backward(i["x"], i["t"], lse=lse, out=o)

        def torch_ce(t, o):
            a = aten()
            lsm = a._log_softmax(t["x"], 1, False)
            loss, total = a.nll_loss_forward(lsm, t["t"], None, 1, -100)
            g = a.nll_loss_backward(loss.new_ones(()), lsm, t["t"], None, 1, -100, total)
            return a._log_softmax_backward_data(g, lsm, 1, t["x"].dtype)

        def numpy_ce(i, o):
            x, t = i["x"], i["t"]
            z = x - x.max(axis=1, keepdims=True)
            e = np.exp(z)
            s = e.sum(axis=1, keepdims=True)
            loss = -(z[np.arange(len(t)), t] - np.log(s[:, 0])).mean()
            d = e / s
            d[np.arange(len(t)), t] -= 1
            return loss, d / len(t)

        def fused(i, o):
            return fastnorm.cross_entropy(i["x"], i["t"], return_grad=True)

        register(Case(f"cross_entropy fwd+bwd {label}", setup, fused, 8, numpy=numpy_ce, torch=torch_ce,
                      tags=("loss",), shape=shape, has_out=False))
        register(Case(f"cross_entropy fwd, bwd {label}", setup, ours, 8, torch=torch_ce, tags=("loss",),
                      shape=shape))

    def setup_dropout(n, rng):
        x = rng.standard_normal(n).astype(np.float32)
        _, state = fastnorm.dropout(x, 0.5, seed=0, return_state=True)
        return {"x": x, "dy": rng.standard_normal(n).astype(np.float32), "state": state}

    def torch_dropout(t, o):
        return aten().native_dropout(t["x"], 0.5, True)

    def torch_dropout_bwd(t, o):
        mask = t.setdefault("mask", aten().native_dropout(t["x"], 0.5, True)[1])
        if o is None:
            return aten().native_dropout_backward(t["dy"], mask, 2.0)
        return aten().native_dropout_backward.out(t["dy"], mask, 2.0, out=o)

    def numpy_dropout(i, o):
        keep = np.random.default_rng(0).random(i["x"].shape, np.float32) >= 0.5
        return i["x"] * keep * np.float32(2)

    register(Case("dropout fwd", setup_dropout, lambda i, o: fastnorm.dropout(i["x"], 0.5, seed=1, out=o), 8,
                  numpy=numpy_dropout, torch=torch_dropout, tags=("loss",)))
    register(Case("dropout bwd", setup_dropout, lambda i, o: fastnorm.dropout_backward(i["dy"], i["state"], out=o), 8,
                  torch=torch_dropout_bwd, tags=("loss",)))


_register_losses()


# The default run: one case of each family, about a minute on 2 cores (--full runs every case).
HEADLINE = ("relu fwd", "relu bwd", "sigmoid bwd", "gelu fwd", "batch_norm fwd nchw 32x64x56x56",
            "batch_norm bwd nchw 32x64x56x56", "layer_norm fwd 8192x1024", "layer_norm bwd 8192x1024",
            "group_norm fwd nhwc 32x64x56x56", "moments nchw 32x64x56x56", "normal 4096x4096",
            "softmax fwd 8192x1024", "cross_entropy fwd+bwd 4096x1000", "dropout fwd")
