"""Benchmark cases of batch, layer, RMS, group and instance norm, forward and backward, and of the norms with
a fused activation."""
from __future__ import annotations

from typing import Any, Dict, Tuple

import numpy as np

import fastnorm
from fastnorm.bench_onnx import OnnxOp
from fastnorm.bench_cases._registry import Case, register, _norm_inputs


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
