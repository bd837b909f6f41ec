"""Benchmark cases of float16 / bfloat16 storage: the activations and the per-channel norms on narrow arrays."""
from __future__ import annotations

import numpy as np

import fastnorm
from fastnorm.bench_cases._registry import Case, register, _norm_inputs


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
