"""Benchmark cases of softmax, log-softmax, cross-entropy and dropout."""
from __future__ import annotations

import numpy as np

import fastnorm
from fastnorm.bench_onnx import OnnxOp
from fastnorm.bench_cases._registry import Case, register


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
