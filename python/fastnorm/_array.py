"""The NumPy contract every public function follows: how inputs become kernel buffers and results go back.

- Anything array_like is accepted.  float32 and float64 are computed natively; float16 (and bfloat16 when
  ``ml_dtypes`` is installed) are computed in float32 and returned in their own dtype (the activations, the
  normalizations and ``moments`` read and write both natively; PReLU, Maxout and the rest go through a float32
  copy); integers and bools are
  computed and returned in float64; long double is computed in float64 and returned as long double.  Complex,
  object, string and other dtypes raise TypeError naming the argument and the dtype.
- Any strides and memory order: inputs are copied to C order only when they are not already.
- 0-d and empty arrays work.
- ``out=`` takes an ndarray of the result's shape, a dtype the result can be cast to under ``same_kind``, and must
  be writable; it may be the input itself.  It is written in place and returned.
- Inputs are never modified.
"""
from __future__ import annotations

import numpy as np

from typing import Any, Optional, Tuple

from fastnorm import _C
from fastnorm._memory import empty
from fastnorm._validate import integer

_F16 = np.dtype(np.float16)
_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)
_NATIVE = (_F32, _F64)


def compute_dtype(dtype: np.dtype, name: str) -> np.dtype:
    """The dtype a kernel computes in for input of ``dtype`` (float32 or float64); TypeError if unsupported.

    Dtypes are compared by value (``is`` is only a fast path): an unpickled array's dtype equals NumPy's
    float32 without being the same object."""
    if dtype is _F32 or dtype is _F64 or dtype in _NATIVE:
        return dtype
    kind = dtype.kind
    if kind == "f":
        return _F32 if dtype.itemsize <= 4 else _F64
    if kind in "biu":
        return _F64
    if _is_bfloat16(dtype):
        return _F32
    raise TypeError(f"{name}: unsupported dtype {dtype}; expected a real floating, integer or bool array")


def storage_dtype(dtype: np.dtype, name: str) -> np.dtype:
    """The dtype the kernels that take half types natively (activations, normalizations, moments) read and write for
    input of ``dtype``: float16 (where the build supports it) and ml_dtypes' bfloat16 as they are, computed in
    float32 inside the kernel with half the memory traffic; else as compute_dtype says."""
    if dtype is _F32 or dtype is _F64:
        return dtype
    if (dtype == _F16 and _C.native_float16) or _is_bfloat16(dtype):
        return dtype
    return compute_dtype(dtype, name)


def _is_bfloat16(dtype: np.dtype) -> bool:
    """ml_dtypes.bfloat16, a user dtype of kind 'V' (dtype.name costs ~2 us: only asked of 2-byte 'V' dtypes)."""
    return dtype.kind == "V" and dtype.itemsize == 2 and dtype.name == "bfloat16"


def result_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype a result is returned in for input of ``dtype`` (already accepted by compute_dtype)."""
    if dtype.kind in "biu":
        return _F64
    return dtype


def as_array(value, name: str) -> np.ndarray:
    """``value`` as an ndarray (no copy when it already is one, nor for a CPU tensor of another library), with a
    TypeError naming ``name`` for bad dtypes."""
    arr = value if type(value) is np.ndarray else _foreign(value, name)
    compute_dtype(arr.dtype, name)
    return arr


def _foreign(value, name: str) -> np.ndarray:
    """An array_like, a PyTorch tensor (bfloat16 included, zero-copy on the CPU) or any object that offers only
    ``__dlpack__``, as an ndarray."""
    if getattr(value, "requires_grad", False):
        raise TypeError(f"{name}: a tensor that requires grad; pass {name}.detach() (fastnorm's *_backward "
                        "functions compute the gradients)")
    if str(getattr(value, "dtype", "")) == "torch.bfloat16":
        try:
            import ml_dtypes
        except ImportError:
            raise TypeError(f"{name}: a bfloat16 tensor needs ml_dtypes (pip install ml_dtypes)") from None
        import torch
        return value.view(torch.int16).numpy(force=False).view(ml_dtypes.bfloat16)
    if not hasattr(value, "__array__") and hasattr(value, "__dlpack__"):
        return np.from_dlpack(value)
    return np.asarray(value)


def as_buffer(arr: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``arr`` as an aligned C-contiguous array of ``dtype``, copying only when needed (0-d stays 0-d).

    Arrays at an address that is not a multiple of their item size (``np.frombuffer(..., offset=1)``) are
    copied: the kernels load and store whole items."""
    flags = arr.flags
    if (arr.dtype is dtype or arr.dtype == dtype) and flags.c_contiguous:
        if flags.aligned and arr.size:  # NumPy calls every empty array aligned, at whatever address
            return arr
        if not arr.size:
            return np.empty(arr.shape, dtype)
        return np.array(arr, dtype=dtype, order="C")
    out = np.asarray(arr, dtype=dtype, order="C")
    return out if out.flags.aligned else np.array(out, order="C")


def common_dtype(a: np.dtype, b: np.dtype) -> np.dtype:
    """np.result_type(a, b), without its 0.5 us when the two are the same dtype."""
    return a if a is b else np.result_type(a, b)


def check_same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_b}: shape {b.shape} differs from {name_a}'s shape {a.shape}")


def check_fill(out, shape: Optional[tuple], shape_name: str = "shape", dtypes: Optional[tuple] = None) -> np.ndarray:
    """Validates ``out`` as an array filled in place in its own dtype (samplers, initializers): a writeable ndarray,
    of one of ``dtypes`` when given, of ``shape`` when given (the caller's ``shape_name`` for it)."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out: expected a numpy.ndarray, got {type(out).__name__}")
    if not out.flags.writeable:
        raise ValueError("out: array is read-only")
    if dtypes is not None and out.dtype not in dtypes:
        raise TypeError(f"out: expected a {', '.join(np.dtype(d).name for d in dtypes)} array, got {out.dtype}")
    if shape is not None and tuple(shape) != out.shape:
        raise ValueError(f"out: shape {out.shape} does not match {shape_name} {tuple(shape)}")
    return out


def check_out(out, shape: tuple, dtype: np.dtype) -> np.ndarray:
    """Validates ``out`` for a result of ``shape`` and ``dtype`` (NumPy's rules for ufunc outputs)."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out: expected a numpy.ndarray, got {type(out).__name__}")
    if out.shape != shape:
        raise ValueError(f"out: expected shape {shape}, got {out.shape}")
    # the same dtype always casts (np.can_cast alone cost 0.4 us, a sixth of a call on 1,000 values)
    if out.dtype is not dtype and not np.can_cast(dtype, out.dtype, casting="same_kind"):
        raise TypeError(f"out: cannot cast the result's dtype {dtype} to out's dtype {out.dtype} (same_kind)")
    if not out.flags.writeable:
        raise ValueError("out: array is read-only")
    return out


def is_dask_array(x) -> bool:
    """Whether ``x`` is a Dask array (checked without importing Dask, an optional extra).

    Parameters
    ----------
    x : object
        Anything.
    """
    return type(x).__module__.startswith("dask.") and hasattr(x, "__dask_graph__") and hasattr(x, "chunks")


def kernel_output(out, shape: tuple, compute: np.dtype, inputs: tuple, params: tuple = ()) -> np.ndarray:
    """The buffer a kernel writes: ``out`` itself when it can, else a fresh array (fastnorm._memory); ``deliver``
    then puts the result where it belongs.

    ``out`` is written directly when it has the right dtype, is C-contiguous and aligned, overlaps none of the
    ``inputs`` (the arrays read element for element with out, which it may alias exactly: each element is read
    before it is written) other than exactly, and shares no memory at all with the ``params`` (arrays read
    throughout the call: gamma, beta, statistics, slopes).  Otherwise the kernel writes a private buffer and the
    result is copied into ``out`` afterwards, so any aliasing the caller chose gives the same values as none."""
    if out is None:
        return empty(shape, compute)
    if (out.dtype is compute or out.dtype == compute) and out.flags.c_contiguous and out.flags.aligned:
        for a in inputs:  # a loop, not any() over a generator: 0.3 us less per call
            if _overlaps_partly(out, a):
                break
        else:
            for a in params:
                if a is not None and np.may_share_memory(out, a):
                    break
            else:
                return out
    return empty(shape, compute)


def check_updated_apart(out, updated: dict) -> None:
    """ValueError when arrays a call updates in place (running statistics, counters) share memory with ``out`` or
    with each other: the call would write one over the other."""
    arrays = [(name, a) for name, a in updated.items() if a is not None]
    if out is not None:
        arrays.insert(0, ("out", out))
    if len(arrays) < 2:
        return
    for i, (name_a, a) in enumerate(arrays):
        for name_b, b in arrays[i + 1:]:
            if np.may_share_memory(a, b):
                raise ValueError(f"{name_b}: shares memory with {name_a}; both are written by this call")


def deliver(buf: np.ndarray, out, result: np.dtype):
    """Returns the result: ``buf`` in the result dtype, or copied into ``out`` (returned) when given."""
    if out is None:
        return buf if buf.dtype == result else buf.astype(result)
    if buf is not out:
        if buf.dtype != result:  # float16 computed in float32: rounded to float16 first, as without out=
            buf = buf.astype(result)
        np.copyto(out, buf, casting="same_kind")
    return out


def _overlaps_partly(out: np.ndarray, a: np.ndarray) -> bool:
    """True when ``out`` and ``a`` share memory other than element for element (exact aliasing is fine)."""
    if a is out or not np.may_share_memory(out, a):
        return False
    same = (out.__array_interface__["data"][0] == a.__array_interface__["data"][0] and out.strides == a.strides
            and out.dtype == a.dtype and out.shape == a.shape)
    return not same


def normalize_axis(axis, ndim: int, name: str = "axis") -> int:
    """``axis`` as an index in [0, ndim), NumPy-style negative values allowed; clear errors otherwise."""
    ax = axis if type(axis) is int else integer(axis, name)
    if not -ndim <= ax < ndim:
        raise ValueError(f"{name}: {ax} is out of range for an array of {ndim} dimensions")
    return ax % ndim


def normalize_axes(axis, ndim: int, name: str = "axis") -> Tuple[Any, ...]:
    """``axis`` (an int, a sequence of ints, or None for all) as sorted, distinct indices in [0, ndim)."""
    if axis is None:
        return tuple(range(ndim))
    if hasattr(axis, "__index__") or not hasattr(axis, "__iter__"):
        axis = (axis,)  # one axis (normalize_axis says what is wrong with a non-int)
    axes = [normalize_axis(a, ndim, name) for a in axis]
    if len(set(axes)) != len(axes):
        raise ValueError(f"{name}: repeated axis in {axis}")
    return tuple(sorted(axes))
