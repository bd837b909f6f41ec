"""Hashes of every kernel's outputs over a fixed grid, the safety net for reorganizing the kernels: moving code
must not move bits.

    python tools/bit_hashes.py            # print this build's hashes at the active ISA level
    python tools/bit_hashes.py --update   # record them in tests/bit_hashes.json (run once per FASTNORM_ISA level)

The grid: activations forward and backward, batch / layer / RMS / group / instance norm forward and backward
(NCHW and channels-last, with and without gamma and beta, every fused activation), moments, softmax and
log-softmax, cross-entropy, dropout and the samplers, in float32, float64 and float16 (and bfloat16 with
ml_dtypes), each at 1 and 2 threads (which must agree: the hash is taken once, after checking that).
tests/test_bit_hashes.py recomputes them where the build (compiler and version) is the one recorded.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import Any, Callable, Dict, List, Tuple

import numpy as np

import fastnorm

HERE = os.path.dirname(os.path.abspath(__file__))
RECORD = os.path.join(HERE, "..", "tests", "bit_hashes.json")


def _dtypes() -> List[np.dtype]:
    out = [np.dtype(np.float32), np.dtype(np.float64)]
    if fastnorm._C.native_float16:
        out.append(np.dtype(np.float16))
    try:
        import ml_dtypes
        out.append(np.dtype(ml_dtypes.bfloat16))
    except ImportError:
        pass
    return out


def _data(shape, dtype, seed, scale=3.0, offset=0.5):
    return (np.random.default_rng(seed).standard_normal(shape) * scale + offset).astype(dtype)


def cases() -> List[Tuple[str, Callable[[int], Any]]]:
    """(name, f(num_threads) -> arrays) over the grid."""
    out: List[Tuple[str, Callable[[int], Any]]] = []
    acts = ["relu", "leaky_relu", "sigmoid", "tanh", "elu", "selu", "gelu", "silu", "softplus", "mish",
            "hardtanh", "hardsigmoid", "hardswish"]
    for dt in _dtypes():
        tag = dt.name
        x = _data((3, 1000 + 7), dt, 1)
        dy = _data((3, 1000 + 7), dt, 2, 1.0, 0.0)
        for name in acts:
            f, b = getattr(fastnorm, name), getattr(fastnorm, name + "_backward")
            out.append((f"{name} {tag}", lambda t, f=f, b=b, x=x, dy=dy: (f(x, num_threads=t),
                                                                          b(dy, x, num_threads=t))))
        out.append((f"gelu tanh {tag}", lambda t, x=x, dy=dy: (
            fastnorm.gelu(x, approximate="tanh", num_threads=t),
            fastnorm.gelu_backward(dy, x, approximate="tanh", num_threads=t))))
        for shape, axis in [((6, 10, 7, 9), 1), ((6, 7, 9, 10), -1), ((70, 33), 1), ((6, 40), 1)]:
            xs, dys = _data(shape, dt, 3), _data(shape, dt, 4, 1.0, 0.0)
            C = shape[axis]
            g, bta = np.linspace(0.5, 1.5, C), np.linspace(-1, 1, C)
            for act in (None, "relu", "silu", "gelu"):
                for affine in (False, True):
                    gg, bb = (g, bta) if affine else (None, None)
                    key = f"{'x'.join(map(str, shape))} axis {axis} {act} {'affine' if affine else 'plain'} {tag}"

                    def bn(t, xs=xs, dys=dys, axis=axis, act=act, gg=gg, bb=bb):
                        y, m, r = fastnorm.batch_norm(xs, gamma=gg, beta=bb, axis=axis, activation=act,
                                                      return_stats=True, num_threads=t)
                        return (y, m, r, *fastnorm.batch_norm_backward(dys, xs, m, r, gg, beta=bb, axis=axis,
                                                                       activation=act, num_threads=t))
                    out.append((f"batch_norm {key}", bn))
                    if shape[0] == 6:
                        def gn(t, xs=xs, dys=dys, axis=axis, act=act, gg=gg, bb=bb, C=C):
                            y, m, r = fastnorm.group_norm(xs, 5 if C % 5 == 0 else 1, gg, bb, axis=axis,
                                                          activation=act, return_stats=True, num_threads=t)
                            G = m.shape[1]
                            return (y, m, r, *fastnorm.group_norm_backward(dys, xs, m, r, G, gg, beta=bb, axis=axis,
                                                                           activation=act, num_threads=t))
                        out.append((f"group_norm {key}", gn))
            if shape == (6, 40):  # (N, C) data in many short groups: batches of groups as one row, a partial last
                for N, C, G in ((150, 48, 4), (70, 51, 3), (300, 10, 10)):
                    xg, dyg = _data((N, C), dt, 11), _data((N, C), dt, 12, 1.0, 0.0)
                    gg, bb = np.linspace(0.5, 1.5, C), np.linspace(-1, 1, C)

                    def gn_rows(t, xg=xg, dyg=dyg, gg=gg, bb=bb, G=G):
                        y, m, r = fastnorm.group_norm(xg, G, gg, bb, return_stats=True, num_threads=t)
                        return (y, m, r, *fastnorm.group_norm_backward(dyg, xg, m, r, G, gg, num_threads=t))
                    out.append((f"group_norm {N}x{C} in {G} groups {tag}", gn_rows))
            out.append((f"moments {'x'.join(map(str, shape))} {tag}",
                        lambda t, xs=xs, axis=axis: tuple(fastnorm.moments(
                            xs, tuple(a for a in range(xs.ndim) if a != axis % xs.ndim), num_threads=t))))
        for D in (64, 1000):
            xs, dys = _data((50, D), dt, 5), _data((50, D), dt, 6, 1.0, 0.0)
            g, bta = np.linspace(0.5, 1.5, D), np.linspace(-1, 1, D)
            for act in (None, "gelu"):
                def ln(t, xs=xs, dys=dys, g=g, bta=bta, act=act):
                    y, m, r = fastnorm.layer_norm(xs, g, bta, activation=act, return_stats=True, num_threads=t)
                    y2, r2 = fastnorm.rms_norm(xs, g, activation=act, return_stats=True, num_threads=t)
                    return (y, m, r, *fastnorm.layer_norm_backward(dys, xs, m, r, g, beta=bta, activation=act,
                                                                   num_threads=t),
                            y2, r2, *fastnorm.rms_norm_backward(dys, xs, r2, g, activation=act, num_threads=t))
                out.append((f"layer_norm rms_norm 50x{D} {act} {tag}", ln))
        if dt.itemsize >= 4:
            for shape, axis in [((40, 1000), -1), ((4, 30, 5, 70), 1)]:
                xs, dys = _data(shape, dt, 7), _data(shape, dt, 8, 1.0, 0.0)

                def sm(t, xs=xs, dys=dys, axis=axis):
                    y, ly = fastnorm.softmax(xs, axis, num_threads=t), fastnorm.log_softmax(xs, axis, num_threads=t)
                    return (y, ly, fastnorm.softmax_backward(dys, y, axis, num_threads=t),
                            fastnorm.log_softmax_backward(dys, ly, axis, num_threads=t))
                out.append((f"softmax {'x'.join(map(str, shape))} {tag}", sm))
            logits = _data((300, 17), dt, 9)
            target = np.random.default_rng(10).integers(0, 17, 300)

            def ce(t, logits=logits, target=target):
                loss, lse = fastnorm.cross_entropy(logits, target, label_smoothing=0.1, return_lse=True,
                                                   num_threads=t)
                fused = fastnorm.cross_entropy(logits, target, label_smoothing=0.1, return_grad=True, num_threads=t)
                return (np.asarray(loss), lse, fastnorm.cross_entropy_backward(logits, target, label_smoothing=0.1,
                                                                               lse=lse, num_threads=t),
                        np.asarray(fused[0]), fused[1])
            out.append((f"cross_entropy {tag}", ce))
            for C in (32, 40, 50):  # rows of a few dozen classes: unweighted, weighted with smoothing, ignored rows
                wide = _data((70, C), dt, 11)
                classes = np.random.default_rng(12).integers(0, C, 70)
                classes[::9] = -100
                weight = np.linspace(0.5, 2.0, C)

                def ce_rows(t, wide=wide, classes=classes, weight=weight):
                    plain = fastnorm.cross_entropy(wide, classes, return_grad=True, num_threads=t)
                    weighted = fastnorm.cross_entropy(wide, classes, weight=weight, label_smoothing=0.2,
                                                      reduction="none", return_grad=True, num_threads=t)
                    return (np.asarray(plain[0]), plain[1], np.asarray(weighted[0]), weighted[1])
                out.append((f"cross_entropy 70x{C} {tag}", ce_rows))

                def ce_forward(t, wide=wide, classes=classes, weight=weight):
                    plain = fastnorm.cross_entropy(wide, classes, reduction="none", return_lse=True, num_threads=t)
                    weighted = fastnorm.cross_entropy(wide, classes, weight=weight, label_smoothing=0.2,
                                                      reduction="none", return_lse=True, num_threads=t)
                    return (*plain, *weighted)
                out.append((f"cross_entropy forward 70x{C} {tag}", ce_forward))
            out.append((f"dropout {tag}", lambda t, x=x: (fastnorm.dropout(x, 0.3, seed=5, num_threads=t),
                                                          fastnorm.alpha_dropout(x, 0.3, seed=5, num_threads=t))))
            for method in ("uniform", "normal", "truncated_normal"):
                out.append((f"{method} {tag}", lambda t, m=method, dt=dt: getattr(fastnorm.random.Generator(3), m)(
                    50000, dtype=dt, num_threads=t)))
    return out


def _digest(arrays) -> str:
    h = hashlib.sha256()
    for a in arrays if isinstance(arrays, tuple) else (arrays,):
        if a is None:  # a gradient not computed
            h.update(b"None")
            continue
        a = np.ascontiguousarray(np.asarray(a))
        h.update(str(a.dtype).encode() + str(a.shape).encode() + a.tobytes())
    return h.hexdigest()[:16]


def compute() -> Dict[str, str]:
    """name -> hash at the active ISA level; raises if 1 and 2 threads disagree."""
    out = {}
    for name, f in cases():
        one, two = _digest(f(1)), _digest(f(2))
        if one != two:
            raise AssertionError(f"{name}: 1 and 2 threads give different bits")
        out[name] = one
    return out


def build_key() -> str:
    """What the bits depend on: the compiler and its flags, the platform, the ISA level."""
    info = fastnorm._C.build_info()
    return f"{info['compiler']} [{info['flags']}] {sys.platform} {fastnorm.info()['isa']}"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    hashes = compute()
    if "--update" in argv:
        record: Dict[str, Any] = {}
        if os.path.exists(RECORD):
            with open(RECORD) as f:
                record = json.load(f)
        record[build_key()] = hashes
        with open(RECORD, "w") as f:
            json.dump(record, f, indent=1, sort_keys=True)
            f.write("\n")
        print(f"{len(hashes)} hashes recorded for {build_key()} in {os.path.relpath(RECORD)}")
    else:
        print(json.dumps(hashes, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
