"""Fast, reproducible random sampling: a counter-based generator (Philox4x32-10) with vectorised, parallel C++
samplers.

Reproducibility guarantee: for a given seed and sequence of calls (sizes, dtypes and distributions), the values
are bitwise the same for any thread count, any ISA level (``FASTNORM_ISA``) and any machine with IEEE arithmetic,
and a generator whose ``state`` was saved and restored continues the same sequence.  (Each value is a pure
function of the key, the counter and its position: threads take whole chunks of counters, and the samplers are
compiled without floating-point contraction; the fused multiply-adds they do use are explicit, and emulated
exactly where the CPU has none.)  The sequence is fastnorm's own: it is not NumPy's or PyTorch's.

    >>> g = fastnorm.random.Generator(0)
    >>> w = g.normal((256, 128), scale=0.01)          # float32 by default, as weights are
    >>> saved = g.state; a = g.uniform(5); g.state = saved; b = g.uniform(5)   # a == b
"""
from __future__ import annotations

import math
import operator
import os
from typing import Dict, Optional

import numpy as np
from typing import Any, Tuple, Union
from numpy.typing import DTypeLike

from fastnorm import _C, _validate
from fastnorm._array import check_fill
from fastnorm._docs import documented
from fastnorm._memory import empty, fresh
from fastnorm._threads import resolve

_FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
_UNIFORM, _NORMAL, _TRUNCATED = "uniform", "normal", "truncated_normal"  # as the kernels name them
_MASK64 = (1 << 64) - 1
_ALGORITHM = "philox4x32_10"

__all__ = ["Generator", "default_rng", "as_generator"]


def _splitmix64(z: int) -> int:
    """Spreads a seed over the 64 key bits (Steele et al. 2014), so that seeds 0, 1, 2, ... give unrelated keys."""
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _check_size(size) -> Tuple[Any, ...]:
    if size is None:
        return ()
    shape = _validate.shape(size, "size")
    if math.prod(shape) >= 1 << 60:  # also keeps the byte count below 2**63 for the bindings
        raise ValueError(f"size: {shape} has too many elements")
    return shape


def _check_dtype(dtype) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.float16, np.float32, np.float64):
        raise TypeError(f"dtype: expected float16, float32 or float64, got {dt}")
    return dt


def _finite(name: str, value) -> float:
    return _validate.real(value, name)



# The samplers' parameters, described once (fastnorm._docs).
_PARAMS = {
    "seed": ("int or None, optional", "An int in [0, 2**64), or None for fresh entropy from the operating system."),
    "size": ("int or tuple of int, optional", "The result's shape (``out``'s when given; None: one value)."),
    "dtype": ("{float16, float32, float64}, default float32", "The result's dtype (ignored when ``out`` is given)."),
    "out": ("numpy.ndarray, optional", "An array to fill in place and return."),
    "num_threads": ("int, optional", "Threads to sample with; the values do not depend on it."),
    "shard": ("slice or tuple of slice, optional",
              "Sample only ``whole[shard]`` of the array ``size`` describes, with exactly the bits the whole array "
              "would have there; the generator moves on as after the whole call, so that ranks or Dask chunks that "
              "each sample their slice of a large weight stay in step."),
    "loc": ("float, default 0", "The mean (of the normal before truncation)."),
    "scale": ("float, default 1", "The standard deviation (>= 0)."),
}
_VALUES = ("numpy.ndarray", "The values (``out`` when given).")

@documented(_PARAMS)
class Generator:
    """Philox4x32-10 counter-based generator (Salmon et al. 2011).

    The state is the 64-bit key derived from the seed and a 64-bit block counter; ``state`` reads and restores
    it.
    """

    def __init__(self, seed: Optional[int] = None) -> None:
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little")
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed: expected an int or None, got {type(seed).__name__}")
        seed = int(seed)
        if not 0 <= seed <= _MASK64:
            raise ValueError(f"seed: expected an int in [0, 2**64), got {seed}")
        self._key = _splitmix64(seed)
        self._counter = 0

    # ---- state ------------------------------------------------------------------------------------------------

    @property
    def state(self) -> Dict[str, Any]:
        """A plain dict (algorithm, key, counter): assign it back to continue from this point."""
        return {"algorithm": _ALGORITHM, "key": self._key, "counter": self._counter}

    @state.setter
    def state(self, value: Dict[str, Any]) -> None:
        if not isinstance(value, dict) or value.get("algorithm") != _ALGORITHM:
            raise ValueError(f"state: expected a dict from Generator.state with algorithm {_ALGORITHM!r}")
        try:
            key, counter = operator.index(value["key"]), operator.index(value["counter"])
        except KeyError as missing:
            raise ValueError(f"state: missing {missing}; expected a dict from Generator.state") from None
        except TypeError:
            raise TypeError("state: key and counter must be ints") from None
        if not (0 <= key <= _MASK64 and 0 <= counter <= _MASK64):
            raise ValueError("state: key and counter must be in [0, 2**64)")
        self._key, self._counter = key, counter

    def __repr__(self) -> str:
        return f"fastnorm.random.Generator(Philox4x32-10, key={self._key:#018x}, counter={self._counter})"

    # ---- sampling ---------------------------------------------------------------------------------------------

    def _fill(self, dist: str, size, dtype, out, num_threads, params, shard=None) -> np.ndarray:
        if shard is not None:
            return self._fill_shard(dist, size, dtype, out, num_threads, params, shard)
        if out is not None:
            check_fill(out, None if size is None else _check_size(size), "size", _FLOATS)
            shape, dt = out.shape, out.dtype
        else:
            shape, dt = _check_size(size), _check_dtype(dtype)
        work_dt = np.float32 if dt == np.float16 else dt
        direct = out is not None and out.dtype == work_dt and out.flags.c_contiguous
        buf = out if direct else empty(shape, np.dtype(work_dt))
        self._counter = _C.sample(dist, self._key, self._counter, buf.reshape(-1), params,
                                  resolve(num_threads), fresh_output=fresh(buf, out)) & _MASK64
        if out is not None:
            if not direct:
                np.copyto(out, buf, casting="unsafe")
            return out
        result = buf.astype(dt, copy=False)
        return result[()] if size is None else result

    def _fill_shard(self, dist: str, size, dtype, out, num_threads, params, shard) -> np.ndarray:
        """whole[shard] of the call without shard: the chunks of counters that cover the slice's span of flat
        indices are sampled (a chunk's values depend only on its counter), then the slice is taken from them."""
        if size is None:
            raise ValueError("shard: needs a size, the whole array's shape")
        shape, dt = _check_size(size), _check_dtype(dtype)
        parts = (shard,) if isinstance(shard, slice) else shard
        if not isinstance(parts, tuple) or not all(isinstance(p, slice) for p in parts) or len(parts) > len(shape):
            raise TypeError(f"shard: expected a slice or a tuple of at most {len(shape)} slices, got {shard!r}")
        ranges = [range(*p.indices(n)) for p, n in zip(parts, shape)] + [range(n) for n in shape[len(parts):]]
        out_shape = tuple(len(r) for r in ranges)
        if out is not None:  # checked before the generator moves on
            check_fill(out, out_shape, "the shard's shape", _FLOATS)
        work = np.dtype(np.float32) if dt.itemsize <= 4 else dt
        per_chunk = _C.sample_chunk_values(work.itemsize)
        blocks = _C.sample_chunk_blocks(work.itemsize)
        total_chunks = -(-math.prod(shape) // per_chunk)
        result = np.empty(out_shape, work)
        if result.size:
            strides = [math.prod(shape[a + 1:]) for a in range(len(shape))]
            flat = sum(np.asarray(r, np.int64).reshape([-1 if a == b else 1 for b in range(len(shape))]) * strides[a]
                       for a, r in enumerate(ranges))
            first, last = int(flat.min()) // per_chunk, int(flat.max()) // per_chunk
            span = np.empty((last - first + 1) * per_chunk, work)
            _C.sample(dist, self._key, (self._counter + first * blocks) & _MASK64, span, params,
                      resolve(num_threads), fresh_output=True)
            result[...] = span[flat - first * per_chunk]
        self._counter = (self._counter + total_chunks * blocks) & _MASK64
        result = result.astype(dt, copy=False)
        if out is not None:
            np.copyto(out, result, casting="same_kind")
            return out
        return result

    @documented(_PARAMS, returns=_VALUES, low=("float, default 0", "The lower bound."),
                high=("float, default 1", "The upper bound (> low)."))
    def uniform(self, size: Optional[Union[int, Tuple[int, ...]]] = None, low: Any = 0.0, high: Any = 1.0,
                dtype: DTypeLike = np.float32, out: Optional[np.ndarray] = None,
                num_threads: Optional[int] = None, *, shard: Any = None) -> Any:
        """Uniform values on [low, high): low + (high - low) u with u on a grid of 2**-24 (float32) or 2**-53.

        ``high - low`` must be finite in the dtype computed in (float32 for float16 and float32) and both bounds
        representable in the result's dtype; otherwise the values would be inf or NaN (ValueError)."""
        low, high = _finite("low", low), _finite("high", high)
        if not low < high:
            raise ValueError(f"low, high: need low < high, got low={low}, high={high}")
        dt = out.dtype if isinstance(out, np.ndarray) else _check_dtype(dtype)
        if dt.kind == "f":
            work = np.dtype(np.float32) if dt.itemsize <= 4 else dt
            if max(-low, high) > float(np.finfo(dt).max):
                raise ValueError(f"low, high: bounds beyond the largest {dt}, got low={low}, high={high}")
            if not high - low <= float(np.finfo(work).max):  # also an overflow to inf in float64
                raise ValueError(f"low, high: the range high - low overflows {work}, got low={low}, high={high}")
        return self._fill(_UNIFORM, size, dtype, out, num_threads, _C.SampleParams(low=low, high=high), shard)

    @documented(_PARAMS, returns=_VALUES)
    def normal(self, size: Optional[Union[int, Tuple[int, ...]]] = None, loc: Any = 0.0, scale: Any = 1.0,
               dtype: DTypeLike = np.float32, out: Optional[np.ndarray] = None,
               num_threads: Optional[int] = None, *, shard: Any = None) -> Any:
        """Normal values with mean ``loc`` and standard deviation ``scale`` (Box-Muller on Philox uniforms).

        With ``shard`` (every sampler has it: a tuple of slices into ``size``, or one slice of axis 0) the work
        and memory are those of the span of the whole array's flat indices the slice covers: a block of rows costs
        its own size."""
        loc, scale = _finite("loc", loc), _finite("scale", scale)
        if scale < 0:
            raise ValueError(f"scale: must be >= 0, got {scale}")
        return self._fill(_NORMAL, size, dtype, out, num_threads, _C.SampleParams(loc=loc, scale=scale), shard)

    @documented(_PARAMS, returns=_VALUES)
    def standard_normal(self, size: Optional[Union[int, Tuple[int, ...]]] = None, dtype: DTypeLike = np.float32,
                        out: Optional[np.ndarray] = None, num_threads: Optional[int] = None, *,
                        shard: Any = None) -> Any:
        """Normal values with mean 0 and standard deviation 1."""
        return self.normal(size, 0.0, 1.0, dtype=dtype, out=out, num_threads=num_threads, shard=shard)

    @documented(_PARAMS, returns=_VALUES, a=("float, default -2", "The lower bound, in standard deviations from loc."),
                                   b=("float, default 2", "The upper bound, in standard deviations (> a)."))
    def truncated_normal(self, size: Optional[Union[int, Tuple[int, ...]]] = None, loc: Any = 0.0, scale: Any = 1.0,
                         a: Any = -2.0, b: Any = 2.0, dtype: DTypeLike = np.float32, out: Optional[np.ndarray] = None,
                         num_threads: Optional[int] = None, *, shard: Any = None) -> Any:
        """Normal values restricted to [loc + a scale, loc + b scale] (bounds in standard deviations, as Keras'
        and TensorFlow's truncated normal; PyTorch's ``trunc_normal_`` takes absolute bounds).

        One pass, no rejection loop: the inverse normal CDF (Wichura's AS241) of a uniform on [Phi(a), Phi(b)],
        taken in the lower half by symmetry so that bounds far in the upper tail stay accurate.
        """
        loc, scale = _finite("loc", loc), _finite("scale", scale)
        a, b = _finite("a", a), _finite("b", b)
        if scale < 0:
            raise ValueError(f"scale: must be >= 0, got {scale}")
        if not a < b:
            raise ValueError(f"a, b: need a < b, got a={a}, b={b}")
        params = _C.SampleParams(loc=loc, scale=scale, a=a, b=b)
        return self._fill(_TRUNCATED, size, dtype, out, num_threads, params, shard)


@documented(_PARAMS, returns=("Generator", "A new generator."))
def default_rng(seed: Optional[int] = None) -> Generator:
    """A new :class:`Generator` (NumPy's spelling)."""
    return Generator(seed)


class _NumpySampler:
    """The Generator interface over a ``numpy.random.Generator`` (its own sequence, not fastnorm's)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng

    def _shape_dtype(self, size, dtype, out):
        shape = out.shape if out is not None else _check_size(size)
        return shape, (out.dtype if out is not None else _check_dtype(dtype))

    def _deliver(self, values, dtype, out, size):
        if out is not None:
            np.copyto(out, values, casting="unsafe")
            return out
        values = np.asarray(values, dtype=dtype)
        return values[()] if size is None else values

    def uniform(self, size: Optional[Union[int, Tuple[int, ...]]] = None, low: Any = 0.0, high: Any = 1.0,
                dtype: DTypeLike = np.float32, out: Optional[np.ndarray] = None,
                num_threads: Optional[int] = None) -> np.ndarray:
        shape, dt = self._shape_dtype(size, dtype, out)
        return self._deliver(self._rng.uniform(low, high, shape), dt, out, size)

    def normal(self, size: Optional[Union[int, Tuple[int, ...]]] = None, loc: Any = 0.0, scale: Any = 1.0,
               dtype: DTypeLike = np.float32, out: Optional[np.ndarray] = None,
               num_threads: Optional[int] = None) -> np.ndarray:
        shape, dt = self._shape_dtype(size, dtype, out)
        return self._deliver(self._rng.normal(loc, scale, shape), dt, out, size)

    def standard_normal(self, size: Optional[Union[int, Tuple[int, ...]]] = None, dtype: DTypeLike = np.float32,
                        out: Optional[np.ndarray] = None, num_threads: Optional[int] = None) -> np.ndarray:
        return self.normal(size, 0.0, 1.0, dtype, out)

    def truncated_normal(self, size: Optional[Union[int, Tuple[int, ...]]] = None, loc: Any = 0.0, scale: Any = 1.0,
                         a: Any = -2.0, b: Any = 2.0, dtype: DTypeLike = np.float32, out: Optional[np.ndarray] = None,
                         num_threads: Optional[int] = None) -> np.ndarray:
        if not a < b:
            raise ValueError(f"a, b: need a < b, got a={a}, b={b}")
        shape, dt = self._shape_dtype(size, dtype, out)
        z = self._rng.standard_normal(shape)
        bad = (z < a) | (z > b)
        while bad.any():  # rejection: fine for the usual bounds; use fastnorm's Generator for far tails
            z[bad] = self._rng.standard_normal(int(bad.sum()))
            bad = (z < a) | (z > b)
        return self._deliver(loc + scale * z, dt, out, size)


@documented(_PARAMS, returns=("Generator or numpy.random.Generator", "A generator with fastnorm's sampling methods."),
            rng=("None, int, Generator or numpy.random.Generator", "What to sample from."))
def as_generator(rng: Any = None) -> Any:
    """What every ``rng=`` argument accepts: None (fresh entropy), an int seed, a fastnorm ``Generator``, or a
    ``numpy.random.Generator`` (then its own sequence is used, through the same methods)."""
    if rng is None or isinstance(rng, (int, np.integer)) and not isinstance(rng, (bool, np.bool_)):
        return Generator(None if rng is None else int(rng))
    if isinstance(rng, (Generator, _NumpySampler)):
        return rng
    if isinstance(rng, np.random.Generator):
        return _NumpySampler(rng)
    raise TypeError(f"rng: expected None, an int seed, a fastnorm.random.Generator or a numpy.random.Generator, "
                    f"got {type(rng).__name__}")
