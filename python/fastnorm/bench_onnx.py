"""ONNX Runtime's CPU kernels (MLAS) as a benchmark peer.

A case that names an :class:`OnnxOp` is also run as a one-node ONNX model in ONNX Runtime (when ``onnx`` and
``onnxruntime`` are importable: ``pip install onnx onnxruntime``), its inputs and its output bound to NumPy arrays
(``io_binding``), so that both sides read the same arrays and write into the same kind of preallocated memory;
one session per case and thread count (``intra_op_num_threads``), ORT's default graph optimizations.  Each side's
accuracy on the case is measured against the same op evaluated by fastnorm in float64 (whose float64 kernels the
test suite checks against NumPy / mpmath references): the largest error in float32 ulps for the elementwise
activations, the largest absolute error for the normalizations and softmaxes (outputs of unit scale).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

OPSET = 23  # the ai.onnx opset of every model: RMSNormalization is new in 23, GroupNormalization's per-channel
            # scale in 21, Gelu in 20


@dataclass(frozen=True)
class OnnxOp:
    """One ONNX node: its ``op_type``, the case's input names in the node's input order, its attributes, and
    how accuracy is measured ("ulp" or "abs")."""
    op_type: str
    inputs: Tuple[str, ...] = ("x",)
    attrs: Dict[str, Any] = field(default_factory=dict)
    metric: str = "ulp"


def runtime() -> Optional[Tuple[Any, Any]]:
    """(onnx, onnxruntime) when both are importable, else None."""
    try:
        import onnx
        import onnxruntime
    except ImportError:
        return None
    return onnx, onnxruntime


def _model(onnx: Any, op: OnnxOp, inputs: Dict[str, np.ndarray], out_shape: Tuple[int, ...]) -> bytes:
    h = onnx.helper
    f32 = onnx.TensorProto.FLOAT
    node = h.make_node(op.op_type, list(op.inputs), ["y"], **op.attrs)
    graph = h.make_graph([node], op.op_type,
                         [h.make_tensor_value_info(k, f32, list(inputs[k].shape)) for k in op.inputs],
                         [h.make_tensor_value_info("y", f32, list(out_shape))])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", OPSET)])
    model.ir_version = 10  # what ONNX Runtime 1.20+ reads
    return model.SerializeToString()


def bind(op: OnnxOp, inputs: Dict[str, np.ndarray], out: np.ndarray, threads: int) -> Optional[Callable[[], Any]]:
    """A call that runs ``op`` on ``inputs`` into ``out`` in ONNX Runtime with ``threads`` intra-op threads, or
    None without ONNX Runtime."""
    rt = runtime()
    if rt is None:
        return None
    onnx, ort = rt
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(_model(onnx, op, inputs, out.shape), so, providers=["CPUExecutionProvider"])
    binding = sess.io_binding()
    for k in op.inputs:
        binding.bind_cpu_input(k, np.ascontiguousarray(inputs[k]))
    binding.bind_output("y", "cpu", 0, out.dtype, list(out.shape), out.ctypes.data)
    return lambda: sess.run_with_iobinding(binding)


def error(y: np.ndarray, reference: np.ndarray, metric: str) -> float:
    """The largest error of float32 ``y`` against the float64 ``reference``: in ulps of the reference rounded to
    float32 where that is a finite normal number ("ulp"), or absolute ("abs"); NaN where they disagree on which
    entries are NaN."""
    y64 = np.asarray(y, dtype=np.float64).ravel()
    ref = np.asarray(reference, dtype=np.float64).ravel()
    if not np.array_equal(np.isnan(y64), np.isnan(ref)):
        return float("nan")
    keep = np.isfinite(ref)
    diff = np.abs(y64[keep] - ref[keep])
    if metric == "abs":
        return float(diff.max(initial=0.0))
    r32 = np.abs(ref[keep].astype(np.float32))
    normal = r32 >= np.finfo(np.float32).tiny
    ulp = np.spacing(r32[normal]).astype(np.float64)
    return float((diff[normal] / ulp).max(initial=0.0))
