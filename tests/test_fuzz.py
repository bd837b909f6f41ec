"""Fuzzing every public function: whatever a caller passes, fastnorm returns a result or raises TypeError or
ValueError, never crashes, hangs or returns something silently wrong.

For each function a spec draws a valid call (shapes from 0-d and empty to odd sizes, every dtype the API takes,
C / Fortran / strided / reversed / misaligned / read-only layouts, values with NaN, infinities, denormals and
extremes), then, independently:

- an ``out=`` pattern: none, fresh, another float dtype, strided, misaligned, the input itself, an array that
  shares memory with a parameter, or a bad one (wrong shape, dtype, read-only, not an array);
- optionally one keyword replaced by a bad value (None, a string, NaN, inf, a huge int, a float, a list, ...).

It asserts that the call returns or raises only TypeError / ValueError; that no input is modified (out= and
in-place running statistics excepted); that out= is untouched when the call raises; that a result written into
out= equals the same call's result without out=; and, for valid finite float32 / float64 data, that the result
matches ``tests/reference.py``.

CI runs a fixed, derandomized budget (``FASTNORM_FUZZ_EXAMPLES`` per function, 25 by default); set it higher and
``FASTNORM_FUZZ_SEED`` to any int for a longer, differently seeded campaign.
"""
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

import fastnorm
import reference as ref

EXAMPLES = int(os.environ.get("FASTNORM_FUZZ_EXAMPLES", "25"))
SEED = os.environ.get("FASTNORM_FUZZ_SEED")
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=SEED is None, database=None,
                suppress_health_check=list(HealthCheck))


def fuzz(test):
    test = given(data=st.data())(test)
    test = FUZZ(test)
    return seed(int(SEED))(test) if SEED is not None else test


# ---- arrays ------------------------------------------------------------------------------------------------------

def _dtypes():
    out = [np.float32, np.float64, np.float16, np.int32, np.bool_]
    try:
        import ml_dtypes
        out.append(ml_dtypes.bfloat16)
    except ImportError:
        pass
    return [np.dtype(d) for d in out]


DTYPES = _dtypes()
LAYOUTS = ["C", "F", "strided", "reversed", "misaligned", "readonly"]
SPECIALS = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, -1e-310, 3e38, -3e38, 1e300, 65504.0, 1e-8]


def values(data, shape, dtype, specials=True):
    """Float64 values for an array of ``shape``: normal values of a drawn scale and offset, with special values
    (NaN, infinities, denormals, extremes) at a few places when ``specials``."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1), label="seed"))
    scale = data.draw(st.sampled_from([1e-3, 1.0, 1.0, 30.0, 1e4]), label="scale")
    offset = data.draw(st.sampled_from([0.0, 0.0, 2.0, -50.0, 1e4]), label="offset")
    v = np.asarray(rng.standard_normal(shape) * scale + offset)
    if specials and v.size and data.draw(st.booleans(), label="specials"):
        k = data.draw(st.integers(1, 3), label="how many specials")
        flat = v.reshape(-1)
        for _ in range(k):
            flat[rng.integers(flat.size)] = SPECIALS[rng.integers(len(SPECIALS))]
    if np.dtype(dtype).kind in "iub":
        v = np.nan_to_num(np.clip(v, -1000, 1000))
    return v


def laid_out(v, dtype, layout):
    """``v`` as an array of ``dtype`` in ``layout`` (the values are the same whatever the layout)."""
    dtype = np.dtype(dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        a = np.asarray(np.asarray(v).astype(dtype))
    if layout == "F" and a.ndim >= 2:
        return np.asfortranarray(a)
    if layout == "strided" and a.ndim >= 1:
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype)
        big[..., ::2] = a
        return big[..., ::2]
    if layout == "reversed" and a.ndim >= 1:
        return a[..., ::-1].copy()[..., ::-1]
    if layout == "misaligned" and dtype.itemsize > 1:
        raw = bytearray(a.nbytes + 1)
        m = np.frombuffer(raw, dtype, a.size, offset=1).reshape(a.shape)
        m[...] = a
        return m
    if layout == "readonly":
        a.flags.writeable = False
    return a


def array(data, shape, dtype=None, layout=None, specials=True, label="x"):
    dtype = dtype if dtype is not None else data.draw(st.sampled_from(DTYPES), label=f"{label} dtype")
    layout = layout if layout is not None else data.draw(st.sampled_from(LAYOUTS), label=f"{label} layout")
    return laid_out(values(data, shape, dtype, specials), dtype, layout)


def shape(data, min_dims=0, max_dims=4, min_side=0, max_side=7, label="shape"):
    dims = data.draw(st.integers(min_dims, max_dims), label=f"{label} rank")
    return tuple(data.draw(st.integers(min_side, max_side), label=f"{label} side") for _ in range(dims))


# ---- the property ------------------------------------------------------------------------------------------------

BAD_VALUES = [None, "a", float("nan"), float("inf"), -1, 0, 2.5, 10 ** 30, -10 ** 30, [1, 2], object(), True,
              np.float64(3.0), np.array([1.0, 2.0]), 1e-300, 3]

ALLOWED = (TypeError, ValueError)


def snapshot(a):
    return (a.dtype, a.shape, a.tobytes()) if isinstance(a, np.ndarray) else None


def as_f64(a):
    return np.asarray(a).astype(np.float64)


def assert_same(got, want, what):
    if got is None or want is None:
        assert got is None and want is None, what
        return
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, what
    np.testing.assert_array_equal(as_f64(got), as_f64(want), err_msg=what)


def check(call, kwargs, inputs, out=None, expect_error=False, reference=None, updated=()):
    """Runs ``call(**kwargs)`` (with ``out=`` when given) and checks the contract.

    inputs: name -> array the call only reads; updated: names of kwargs the call may update in place."""
    before = {name: snapshot(a) for name, a in inputs.items() if isinstance(a, np.ndarray)}
    out_before = snapshot(out)
    try:
        got = call(**kwargs, **({} if out is None else {"out": out}))
    except ALLOWED as e:
        if out is not None:
            assert snapshot(out) == out_before, f"out= was written before raising {e!r}"
        for name, snap in before.items():
            if name not in updated:
                assert snapshot(inputs[name]) == snap, f"{name} was modified before raising {e!r}"
        return None
    assert not expect_error, "a bad out= was accepted"
    for name, snap in before.items():
        if name not in updated and not (out is not None and np.may_share_memory(inputs[name], out)):
            assert snapshot(inputs[name]) == snap, f"{name} was modified"
    if reference is not None:
        reference(got)
    return got


def out_pattern(data, shape, dtype, inputs, params):
    """(out, expect_error): an out= array for a result of ``shape`` and ``dtype``."""
    names = ["none", "fresh", "float64", "strided", "misaligned", "bad_shape", "bad_dtype", "readonly", "list"]
    names += [f"input:{n}" for n in inputs] + [f"param:{n}" for n in params]
    kind = data.draw(st.sampled_from(names), label="out")
    if kind == "none":
        return None, False
    if kind.startswith("input:"):
        a = inputs[kind[6:]]
        ok = a.shape == shape and a.flags.writeable and np.can_cast(dtype, a.dtype, "same_kind")
        return a, not ok
    if kind.startswith("param:"):
        p = np.asarray(params[kind[6:]])
        base = np.zeros(max(math.prod(shape), p.size), dtype)
        with np.errstate(invalid="ignore", over="ignore"):
            base[:p.size] = p.reshape(-1).astype(dtype)
        # (name, the parameter's values in out's memory): out and the parameter share base's first values
        return base[:math.prod(shape)].reshape(shape), (kind[6:], base[:p.size].reshape(p.shape))
    if kind == "fresh":
        return np.full(shape, 7, dtype), False
    if kind == "float64":
        return np.full(shape, 7, np.float64), not np.can_cast(dtype, np.float64, "same_kind")
    if kind == "strided":
        return laid_out(np.full(shape, 7.0), dtype, "strided"), False
    if kind == "misaligned":
        return laid_out(np.full(shape, 7.0), dtype, "misaligned"), False
    if kind == "bad_shape":
        return np.full(shape + (2,), 7, dtype), True
    if kind == "bad_dtype":
        return np.full(shape, 7, np.int32), True
    if kind == "readonly":
        return laid_out(np.full(shape, 7.0), dtype, "readonly"), True
    return [7.0] * max(1, math.prod(shape)), True


def run_spec(data, build):
    """Draws a valid call from ``build(data) -> Spec``, then an out= pattern and maybe one bad keyword."""
    spec = build(data)
    want = None
    try:
        want = spec.call(**spec.kwargs)
    except ALLOWED:
        spec = spec._replace(reference=None)  # an invalid draw: the rest must still fail cleanly
    first = want[0] if isinstance(want, tuple) else want
    kwargs = dict(spec.kwargs)
    bad = None
    if spec.keywords and data.draw(st.booleans(), label="bad keyword"):
        bad = data.draw(st.sampled_from(sorted(spec.keywords)), label="keyword")
        kwargs[bad] = data.draw(st.sampled_from(BAD_VALUES), label="bad value")
    out, expect_error = None, False
    if spec.out and first is not None and isinstance(first, np.ndarray):
        inputs = {n: a for n, a in spec.kwargs.items() if isinstance(a, np.ndarray) and n in spec.elementwise}
        out, expect_error = out_pattern(data, first.shape, first.dtype, inputs, spec.params(kwargs))
        if isinstance(expect_error, tuple):  # shares memory with a parameter: legal, pass that parameter
            name, shared = expect_error
            kwargs[name] = shared
            # the parameter now holds out's dtype's rounding of its values: the result to match is the call's
            # with those values in an array of their own
            try:
                want = spec.call(**{**kwargs, name: shared.copy()})
            except ALLOWED:
                want = None
            expect_error = False
    if bad is not None:
        expect_error = False  # whether a bad keyword is an error depends on the keyword
    inputs = {n: a for n, a in kwargs.items() if isinstance(a, np.ndarray)}
    got = check(spec.call, kwargs, inputs, out, expect_error and want is not None,
                spec.reference if bad is None and out is None else None, spec.updated)
    if got is not None and bad is None and want is not None and not spec.updated:
        for k, (g, w) in enumerate(zip(_tuple(got), _tuple(want))):
            if k == 0 and out is not None and isinstance(w, np.ndarray) and w.dtype != out.dtype:
                with np.errstate(over="ignore", invalid="ignore"):
                    w = w.astype(out.dtype)  # out= of another dtype holds the result cast to it, as in NumPy
            assert_same(g, w, "a call with out= differs from the call without it")
        if out is not None:
            assert _tuple(got)[0] is out


def _tuple(r):
    return r if isinstance(r, tuple) else (r,)


class Spec:
    """A drawn call: ``call(**kwargs)``, the keywords that may be replaced by bad values, which kwargs are read
    elementwise with the result (candidates for out= aliasing) and which are parameters, an optional reference
    check of the result, and the kwargs updated in place."""

    def __init__(self, call, kwargs, keywords=(), elementwise=("x", "dy"), params=(), reference=None, out=True,
                 updated=()):
        self.call, self.kwargs, self.keywords = call, kwargs, tuple(keywords)
        self.elementwise, self.param_names, self.reference = elementwise, params, reference
        self.out, self.updated = out, updated

    def params(self, kwargs):
        return {n: kwargs[n] for n in self.param_names if isinstance(kwargs.get(n), np.ndarray)
                and kwargs[n].dtype.kind == "f"}

    def _replace(self, reference):
        return Spec(self.call, self.kwargs, self.keywords, self.elementwise, self.param_names, reference, self.out,
                    self.updated)


# ---- specs: activations ------------------------------------------------------------------------------------------

def finite_float(x):
    return x.dtype in (np.float32, np.float64) and np.isfinite(x).all() and np.abs(x).max(initial=0) < 1e4


def near(want, dtype, rtol=None):
    tol = {np.dtype(np.float32): (2e-5, 1e-6), np.dtype(np.float64): (1e-12, 1e-13)}[np.dtype(dtype)]

    def close(got):
        np.testing.assert_allclose(as_f64(_tuple(got)[0]), want, rtol=rtol or tol[0], atol=tol[1])
    return close


def activation_spec(name, backward):
    fwd, grad, kw = ref.ELEMENTWISE[name]
    public = "gelu" if name == "gelu_tanh" else name

    def build(data):
        shp = shape(data)
        x = array(data, shp, label="x")
        if not backward:
            f = getattr(fastnorm, public)
            reference = near(ref.forward(name, as_f64(x), **kw), x.dtype) if finite_float(x) else None
            return Spec(lambda **a: f(**a), dict(x=x, **kw), keywords=("num_threads", *kw), reference=reference)
        f = getattr(fastnorm, public + "_backward")
        dy = array(data, shp, dtype=x.dtype, label="dy")
        reference = None
        if finite_float(x) and finite_float(dy):
            reference = near(as_f64(dy) * ref.derivative(name, as_f64(x), **kw), x.dtype, rtol=1e-4)
        return Spec(lambda **a: f(**a), dict(dy=dy, x=x, **kw), keywords=("num_threads", *kw),
                    reference=reference)
    return build


def prelu_spec(backward):
    def build(data):
        shp = shape(data, min_dims=1)
        x = array(data, shp, label="x")
        axis = data.draw(st.integers(-len(shp), len(shp) - 1), label="axis")
        n = data.draw(st.sampled_from([1, shp[axis]]), label="slopes")
        alpha = array(data, (n,), dtype=np.float32, specials=False, label="alpha") * 0.1
        if backward:
            dy = array(data, shp, dtype=x.dtype, label="dy")
            return Spec(fastnorm.prelu_backward, dict(dy=dy, x=x, alpha=alpha, axis=axis),
                        keywords=("axis", "alpha", "num_threads"), params=("alpha",))
        reference = None
        if finite_float(x):
            reference = near(ref.prelu(x, alpha if n != 1 else alpha[0], axis % len(shp)), x.dtype, rtol=1e-6)
        return Spec(fastnorm.prelu, dict(x=x, alpha=alpha, axis=axis), keywords=("axis", "alpha", "num_threads"),
                    params=("alpha",), reference=reference)
    return build


def maxout_spec(backward):
    def build(data):
        shp = list(shape(data, min_dims=1))
        axis = data.draw(st.integers(-len(shp), len(shp) - 1), label="axis")
        pieces = data.draw(st.integers(1, 3), label="pieces")
        shp[axis] = shp[axis] * pieces
        x = array(data, tuple(shp), label="x")
        if backward:
            out_shape = list(shp)
            out_shape[axis] //= pieces
            dy = array(data, tuple(out_shape), dtype=x.dtype, label="dy")
            return Spec(fastnorm.maxout_backward, dict(dy=dy, x=x, pieces=pieces, axis=axis),
                        keywords=("pieces", "axis", "num_threads"), elementwise=("x",))
        reference = near(ref.maxout(x, pieces, axis), x.dtype) if finite_float(x) else None
        return Spec(fastnorm.maxout, dict(x=x, pieces=pieces, axis=axis), keywords=("pieces", "axis", "num_threads"),
                    elementwise=(), reference=reference)
    return build


# ---- specs: normalization ----------------------------------------------------------------------------------------

NORM_DTYPES = [d for d in DTYPES if d.kind == "f" or d.name == "bfloat16"]


def channel_shape(data, min_count=2):
    shp = shape(data, min_dims=2, max_dims=4, min_side=1, max_side=6)
    axis = data.draw(st.sampled_from([1, -1, len(shp) - 1] if len(shp) > 2 else [1, -1]), label="axis")
    return shp, axis


def batch_norm_spec(backward):
    def build(data):
        shp, axis = channel_shape(data)
        C = shp[axis]
        x = array(data, shp, dtype=data.draw(st.sampled_from(NORM_DTYPES), label="dtype"), label="x")
        affine = data.draw(st.booleans(), label="affine")
        g = array(data, (C,), dtype=np.float64, specials=False, label="gamma") if affine else None
        b = array(data, (C,), dtype=np.float64, specials=False, label="beta") if affine else None
        training = data.draw(st.booleans(), label="training")
        activation = data.draw(st.sampled_from([None, None, "relu", "leaky_relu", "silu", "gelu"]), label="act")
        kw = dict(axis=axis, activation=activation)
        if not backward:
            rm, rv = np.zeros(C, np.float32), np.ones(C, np.float32)
            kwargs = dict(x=x, gamma=g, beta=b, training=training, running_mean=rm, running_var=rv, **kw)
            ok = finite_float(x) and activation is None and training and x.size > C
            reference = near(ref.batch_norm(x, g, b, axis), x.dtype, rtol=1e-4) if ok else None
            return Spec(fastnorm.batch_norm, kwargs, params=("gamma", "beta"), reference=reference,
                        keywords=("axis", "eps", "momentum", "gamma", "running_var", "num_batches_tracked",
                                  "activation", "negative_slope", "num_threads"),
                        updated=("running_mean", "running_var") if training else ())
        xs = x.astype(np.float32) if x.dtype.kind != "f" else x
        try:
            _, mean, rstd = fastnorm.batch_norm(xs, gamma=g, beta=b, axis=axis, return_stats=True)
        except ValueError:
            mean, rstd = np.zeros(C), np.ones(C)
        dy = array(data, shp, dtype=x.dtype, label="dy")
        kwargs = dict(dy=dy, x=x, mean=mean, rstd=rstd, gamma=g, beta=b, training=training, **kw)
        return Spec(fastnorm.batch_norm_backward, kwargs, params=("mean", "rstd", "gamma", "beta"),
                    keywords=("axis", "mean", "rstd", "gamma", "activation", "num_threads"))
    return build



def batch_norm_stage_spec(stage):
    """The staged batch norm: statistics, apply with given statistics, gradient sums, input gradient, running
    statistics; the reference is the fused call on the same data."""
    def build(data):
        shp, axis = channel_shape(data)
        C = shp[axis]
        x = array(data, shp, dtype=data.draw(st.sampled_from(NORM_DTYPES), label="dtype"), label="x")
        xs = x.astype(np.float32) if x.dtype.kind != "f" else x
        stats = fastnorm.batch_norm_stats(xs, axis=axis)
        if stage == "batch_norm_stats":
            return Spec(lambda **a: fastnorm.batch_norm_stats(**a), dict(x=x, axis=axis),
                        keywords=("axis", "num_threads"), out=False)
        g = array(data, (C,), dtype=np.float64, specials=False, label="gamma") if data.draw(st.booleans()) else None
        activation = data.draw(st.sampled_from([None, None, "relu", "gelu"]), label="act")
        kw = dict(gamma=g, axis=axis, activation=activation)
        if stage == "batch_norm_apply":
            ok = finite_float(x) and activation is None and x.size > C
            reference = near(ref.batch_norm(x, g, None, axis), x.dtype, rtol=1e-4) if ok else None
            return Spec(fastnorm.batch_norm_apply, dict(x=x, stats=stats, **kw), params=("gamma",),
                        reference=reference, keywords=("axis", "eps", "gamma", "stats", "activation", "num_threads"))
        if stage == "update_running_stats":
            rm, rv = np.zeros(C, np.float32), np.ones(C, np.float32)
            return Spec(fastnorm.update_running_stats, dict(running_mean=rm, running_var=rv, stats=stats),
                        keywords=("momentum", "stats", "num_batches_tracked"), out=False, elementwise=(),
                        updated=("running_mean", "running_var"))
        mean, rstd = stats.mean, 1.0 / np.sqrt(stats.m2 / max(int(stats.count), 1) + 1e-5)
        dy = array(data, shp, dtype=x.dtype, label="dy")
        if stage == "batch_norm_grad_sums":
            return Spec(fastnorm.batch_norm_grad_sums, dict(dy=dy, x=x, mean=mean, rstd=rstd, **kw),
                        params=("mean", "rstd", "gamma"), out=False,
                        keywords=("axis", "mean", "rstd", "gamma", "activation", "num_threads"))
        s_dy, s_dy_xmu = fastnorm.batch_norm_grad_sums(dy.astype(xs.dtype) if dy.dtype != xs.dtype else dy, xs, mean,
                                                       rstd=rstd, **kw)
        return Spec(fastnorm.batch_norm_input_grad,
                    dict(dy=dy, x=x, mean=mean, rstd=rstd, sum_dy=s_dy, sum_dy_xmu=s_dy_xmu,
                         count=max(int(stats.count), 1), **kw),
                    params=("mean", "rstd", "gamma", "sum_dy", "sum_dy_xmu"),
                    keywords=("axis", "mean", "rstd", "count", "sum_dy", "gamma", "activation", "num_threads"))
    return build



def softmax_spec(log, backward):
    name = ("log_softmax" if log else "softmax") + ("_backward" if backward else "")

    def build(data):
        shp = shape(data, min_dims=1)
        x = array(data, shp, label="x")
        axis = data.draw(st.integers(-len(shp), len(shp) - 1), label="axis")
        f = getattr(fastnorm, name)
        if backward:
            xs = x.astype(np.float32) if x.dtype.kind != "f" else x
            y = (fastnorm.log_softmax if log else fastnorm.softmax)(xs, axis)
            dy = array(data, shp, dtype=x.dtype, label="dy")
            return Spec(lambda **a: f(**a), dict(dy=dy, y=y, axis=axis), keywords=("axis", "num_threads"),
                        elementwise=("dy", "y"))
        reference = None
        if finite_float(x) and x.size:
            reference = near((ref.log_softmax if log else ref.softmax)(x, axis), x.dtype, rtol=1e-5)
        return Spec(lambda **a: f(**a), dict(x=x, axis=axis), keywords=("axis", "num_threads"), reference=reference)
    return build


def cross_entropy_spec(kind):
    def build(data):
        shp = shape(data, min_dims=1, max_dims=3, min_side=1)
        axis = data.draw(st.sampled_from([-1, 0] if len(shp) == 1 else [-1, 1]), label="axis")
        x = array(data, shp, label="logits")
        C = shp[axis]
        lead = tuple(n for i, n in enumerate(shp) if i != axis % len(shp))
        rng = np.random.default_rng(data.draw(st.integers(0, 1000), label="target seed"))
        t = rng.integers(0, C, lead)
        if t.size and data.draw(st.booleans(), label="ignored row"):
            t.reshape(-1)[0] = -100
        kw = dict(axis=axis, reduction=data.draw(st.sampled_from(["mean", "sum", "none"]), label="reduction"))
        if kind != "nll":
            kw["label_smoothing"] = data.draw(st.sampled_from([0.0, 0.1]), label="smoothing")
        if data.draw(st.booleans(), label="weighted"):
            kw["weight"] = rng.uniform(0.5, 2.0, C)
        keywords = ("axis", "reduction", "label_smoothing", "ignore_index", "weight", "num_threads")
        if kind == "forward":
            reference = None
            if finite_float(x) and len(shp) == 2 and axis == -1 and kw["reduction"] != "none" and (t != -100).any():
                def reference(got):
                    want = ref.cross_entropy(x, t, kw.get("weight"), kw["label_smoothing"], -100, kw["reduction"])
                    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
            if data.draw(st.booleans(), label="with its gradient"):
                kw["return_grad"], reference = True, None
            return Spec(fastnorm.cross_entropy, dict(logits=x, target=t, **kw), keywords=keywords, out=False,
                        reference=reference)
        if kind == "backward":
            return Spec(fastnorm.cross_entropy_backward, dict(logits=x, target=t, **kw), keywords=keywords,
                        elementwise=("logits",), params=("weight",))
        kw.pop("num_threads", None)
        f = fastnorm.nll_loss if kind == "nll" else fastnorm.nll_loss_backward
        return Spec(f, dict(log_probs=x, target=t, **kw), keywords=("axis", "reduction", "weight", "ignore_index"),
                    out=False)
    return build


def dropout_spec(name, backward):
    def build(data):
        shp = shape(data, min_dims=2 if name == "channel_dropout" else 0)
        x = array(data, shp, label="x")
        p = data.draw(st.sampled_from([0.0, 0.3, 0.5, 1.0]), label="p")
        seed = data.draw(st.integers(0, 2 ** 64 - 1), label="seed")
        extra = {"axis": data.draw(st.sampled_from([1, -1]), label="axis")} if name == "channel_dropout" else {}
        f = getattr(fastnorm, name)
        if not backward:
            keywords = ("p", "seed", "training", *extra) + (() if name == "channel_dropout" else ("num_threads",))
            return Spec(lambda **a: f(**a), dict(x=x, p=p, seed=seed, **extra), keywords=keywords)
        xs = x.astype(np.float32) if x.dtype.kind != "f" else x
        state = f(xs, p, seed=seed, return_state=True, **extra)[1]
        dy = array(data, shp, dtype=x.dtype, label="dy")
        b = getattr(fastnorm, name + "_backward")
        return Spec(lambda **a: b(**a), dict(dy=dy, state=state, **extra), keywords=("state", *extra),
                    elementwise=("dy",))
    return build


def scatter_spec(data):
    shp = shape(data, min_dims=1, max_dims=3, max_side=6)
    x = array(data, shp, label="x")
    reference = None
    if finite_float(x) and shp[0] > 1 and x.ndim > 1:
        def reference(s):
            np.testing.assert_allclose(s.covariance(), np.atleast_2d(np.cov(as_f64(x).reshape(shp[0], -1),
                                                                            rowvar=False)), rtol=1e-8, atol=1e-8)
    return Spec(lambda **a: fastnorm.scatter(**a), dict(x=x), out=False, reference=reference)


def row_norm_spec(name, backward):
    def build(data):
        shp = shape(data, min_dims=1, max_dims=3, min_side=0, max_side=9)
        D = shp[-1]
        x = array(data, shp, dtype=data.draw(st.sampled_from(NORM_DTYPES), label="dtype"), label="x")
        g = array(data, (D,), dtype=np.float32, specials=False, label="gamma") if data.draw(st.booleans()) else None
        b = array(data, (D,), dtype=np.float32, specials=False, label="beta") \
            if name == "layer_norm" and data.draw(st.booleans()) else None
        extra = dict(beta=b) if name == "layer_norm" else {}
        f = getattr(fastnorm, name)
        if not backward:
            reference = None
            if finite_float(x) and D > 1:
                eps = np.finfo(x.dtype).eps
                want = ref.layer_norm(x, g, b) if name == "layer_norm" else ref.rms_norm(x, g, eps=eps)
                reference = near(want, x.dtype, rtol=1e-4)
            return Spec(f, dict(x=x, gamma=g, **extra), params=("gamma", "beta"), reference=reference,
                        keywords=("axis", "eps", "gamma", "activation", "num_threads"))
        xs = x.astype(np.float32) if x.dtype.kind != "f" else x
        stats = f(xs, g, **extra, return_stats=True)[1:]
        dy = array(data, shp, dtype=x.dtype, label="dy")
        names = ("mean", "rstd") if name == "layer_norm" else ("rstd",)
        kwargs = dict(dy=dy, x=x, **dict(zip(names, stats)), gamma=g)
        return Spec(getattr(fastnorm, name + "_backward"), kwargs, params=(*names, "gamma"),
                    keywords=("axis", *names, "gamma", "num_threads"))
    return build


def group_norm_spec(backward, instance=False):
    def build(data):
        shp, axis = channel_shape(data)
        C = shp[axis]
        G = C if instance else data.draw(st.sampled_from([d for d in range(1, C + 1) if C % d == 0]), label="G")
        x = array(data, shp, dtype=data.draw(st.sampled_from(NORM_DTYPES), label="dtype"), label="x")
        g = array(data, (C,), dtype=np.float64, specials=False, label="gamma") if data.draw(st.booleans()) else None
        b = array(data, (C,), dtype=np.float64, specials=False, label="beta") if data.draw(st.booleans()) else None
        if instance:
            f, fb, lead = fastnorm.instance_norm, fastnorm.instance_norm_backward, {}
        else:
            f, fb, lead = fastnorm.group_norm, fastnorm.group_norm_backward, {"num_groups": G}
        if not backward:
            reference = None
            if finite_float(x):
                reference = near(ref.group_norm(x, G, g, b, axis % len(shp)), x.dtype, rtol=1e-4)
            return Spec(lambda **a: f(**a), dict(x=x, **lead, gamma=g, beta=b, axis=axis), params=("gamma", "beta"),
                        reference=reference, keywords=("axis", "eps", "gamma", "activation", "num_threads", *lead))
        xs = x.astype(np.float32) if x.dtype.kind != "f" else x
        _, mean, rstd = fastnorm.group_norm(xs, G, g, b, axis=axis, return_stats=True)
        dy = array(data, shp, dtype=x.dtype, label="dy")
        return Spec(lambda **a: fb(**a), dict(dy=dy, x=x, mean=mean, rstd=rstd, **lead, gamma=g, axis=axis),
                    params=("mean", "rstd", "gamma"), keywords=("axis", "mean", "rstd", "gamma", "num_threads"))
    return build


# ---- specs: statistics, sampling, initialization, preprocessing, layers ------------------------------------------

def moments_spec(data):
    shp = shape(data)
    x = array(data, shp, label="x")
    axis = data.draw(st.sampled_from([None, 0, -1, (0, -1), ()]) if shp else st.sampled_from([None, ()]),
                     label="axis")
    reference = None
    if finite_float(x) and x.size and axis is not None:
        def reference(m):
            red = tuple(sorted({a % x.ndim for a in ((axis,) if isinstance(axis, int) else axis)}))
            if red and all(x.shape[a] for a in red):
                np.testing.assert_allclose(m.mean, as_f64(x).mean(axis=red), rtol=1e-10, atol=1e-8)
    return Spec(lambda **a: fastnorm.moments(**a), dict(x=x, axis=axis), keywords=("axis", "num_threads"),
                out=False, reference=reference)


def sampler_spec(method):
    def build(data):
        key = data.draw(st.integers(0, 2 ** 64 - 1), label="seed")
        size = data.draw(st.one_of(st.none(), st.integers(0, 50), st.just((2 ** 40, 0)),
                                   st.tuples(st.integers(0, 6), st.integers(0, 6))), label="size")
        dtype = data.draw(st.sampled_from([np.float16, np.float32, np.float64]), label="dtype")
        params = {"uniform": dict(low=-2.0, high=3.0), "normal": dict(loc=1.0, scale=2.0),
                  "truncated_normal": dict(loc=0.0, scale=1.0, a=-1.0, b=2.0)}[method]

        def reference(v):
            v = np.asarray(v)
            assert v.dtype == dtype and np.isfinite(v).all()
            if method == "uniform":
                assert ((v >= -2) & (v <= 3)).all()
            if method == "truncated_normal":
                assert ((v >= -1.001) & (v <= 2.001)).all()
        return Spec(lambda **a: getattr(fastnorm.random.Generator(key), method)(**a),
                    dict(size=size, dtype=dtype, **params), out=False, reference=reference,
                    keywords=("size", "dtype", *params, "num_threads"))
    return build


INITS = ["normal", "uniform", "trunc_normal", "xavier_normal", "xavier_uniform", "kaiming_normal", "kaiming_uniform",
         "lecun_normal", "lecun_uniform", "variance_scaling", "orthogonal", "constant", "zeros", "ones"]


def init_spec(name):
    def build(data):
        shp = shape(data, min_dims=2, max_dims=4, min_side=0, max_side=5)
        f = getattr(fastnorm.init, name)
        keywords = {"normal": ("std", "mean"), "uniform": ("a", "b"), "trunc_normal": ("std", "a", "b"),
                    "xavier_normal": ("gain",), "xavier_uniform": ("gain",), "kaiming_normal": ("a", "mode"),
                    "kaiming_uniform": ("a", "mode"), "variance_scaling": ("scale", "mode", "distribution"),
                    "orthogonal": ("gain",), "constant": ("value",)}.get(name, ())
        kwargs = dict(shape=shp)
        if name not in ("constant", "zeros", "ones"):
            kwargs["rng"] = data.draw(st.integers(0, 100), label="rng")
        return Spec(lambda **a: f(**a), kwargs, keywords=("shape", "dtype", *keywords), out=False)
    return build


def standardizer_spec(kind):
    def build(data):
        n, d = data.draw(st.integers(0, 20), label="n"), data.draw(st.integers(0, 5), label="d")
        x = array(data, (n, d), label="x")
        est = {"Standardizer": fastnorm.preprocessing.Standardizer,
               "PCA": fastnorm.preprocessing.PCA, "Whitening": fastnorm.preprocessing.Whitening}[kind]

        def fit_transform(x, **kw):
            e = est(**kw)
            return e.fit(x).transform(x)
        keywords = {"Standardizer": ("axis", "with_mean"), "PCA": ("n_components", "eps"),
                    "Whitening": ("method", "eps")}[kind]
        return Spec(fit_transform, dict(x=x), keywords=keywords, out=False)
    return build


def fold_spec(data):
    out_ch, in_ch = data.draw(st.integers(0, 4), label="out"), data.draw(st.integers(0, 4), label="in")
    w = array(data, (out_ch, in_ch), dtype=np.float32, label="weight")
    rv = np.abs(array(data, (out_ch,), dtype=np.float64, specials=False, label="rv"))
    kwargs = dict(weight=w, bias=None, gamma=None, beta=None, running_mean=np.zeros(out_ch), running_var=rv,
                  eps=1e-5)
    return Spec(lambda **a: fastnorm.fold_batch_norm(**a), kwargs, keywords=("eps", "running_var", "bias"),
                out=False)


def layer_spec(kind):
    def build(data):
        shp, axis = channel_shape(data)
        C = shp[axis % len(shp)]
        x = array(data, shp, dtype=data.draw(st.sampled_from([np.float32, np.float64]), label="dtype"), label="x")
        make = {"BatchNorm": lambda: fastnorm.layers.BatchNorm(C, axis=axis),
                "GroupNorm": lambda: fastnorm.layers.GroupNorm(1, C, axis=axis),
                "InstanceNorm": lambda: fastnorm.layers.InstanceNorm(C, axis=axis),
                "LayerNorm": lambda: fastnorm.layers.LayerNorm(shp[-1]),
                "RMSNorm": lambda: fastnorm.layers.RMSNorm(shp[-1]),
                "PReLU": lambda: fastnorm.layers.PReLU(C, axis=axis),
                "Maxout": lambda: fastnorm.layers.Maxout(1, axis=axis),
                "Dropout": lambda: fastnorm.layers.Dropout(0.5, seed=0)}[kind]

        def step(x, training=True):
            layer = make()
            layer.train() if training else layer.eval()
            y = layer.forward(x)
            dx = layer.backward(np.ones_like(y))
            return y, dx
        return Spec(step, dict(x=x), keywords=("training",), out=False)
    return build


SPECS = {}
for _name in sorted(ref.ELEMENTWISE):
    SPECS[_name] = activation_spec(_name, False)
    SPECS[_name + "_backward"] = activation_spec(_name, True)
SPECS.update({
    "prelu": prelu_spec(False), "prelu_backward": prelu_spec(True),
    "maxout": maxout_spec(False), "maxout_backward": maxout_spec(True),
    "batch_norm": batch_norm_spec(False), "batch_norm_backward": batch_norm_spec(True),
    "layer_norm": row_norm_spec("layer_norm", False), "layer_norm_backward": row_norm_spec("layer_norm", True),
    "rms_norm": row_norm_spec("rms_norm", False), "rms_norm_backward": row_norm_spec("rms_norm", True),
    "group_norm": group_norm_spec(False), "group_norm_backward": group_norm_spec(True),
    "instance_norm": group_norm_spec(False, True), "instance_norm_backward": group_norm_spec(True, True),
    "moments": moments_spec, "fold_batch_norm": fold_spec, "scatter": scatter_spec,
    **{f"{'log_' if log else ''}softmax{'_backward' if b else ''}": softmax_spec(log, b) for log in (False, True)
       for b in (False, True)},
    "cross_entropy": cross_entropy_spec("forward"), "cross_entropy_backward": cross_entropy_spec("backward"),
    "nll_loss": cross_entropy_spec("nll"), "nll_loss_backward": cross_entropy_spec("nll_backward"),
    **{n + ("_backward" if b else ""): dropout_spec(n, b) for n in ("dropout", "alpha_dropout", "channel_dropout")
       for b in (False, True)},
    **{n: batch_norm_stage_spec(n) for n in ("batch_norm_stats", "batch_norm_apply", "batch_norm_grad_sums",
                                             "batch_norm_input_grad", "update_running_stats")},
    **{f"Generator.{m}": sampler_spec(m) for m in ("uniform", "normal", "truncated_normal")},
    **{f"init.{n}": init_spec(n) for n in INITS},
    **{f"preprocessing.{k}": standardizer_spec(k) for k in ("Standardizer", "PCA", "Whitening")},
    **{f"layers.{k}": layer_spec(k) for k in ("BatchNorm", "GroupNorm", "InstanceNorm", "LayerNorm", "RMSNorm",
                                                 "PReLU", "Maxout", "Dropout")},
})


@pytest.mark.parametrize("name", sorted(SPECS))
@fuzz
def test_fuzz(name, data):
    run_spec(data, SPECS[name])


def test_every_public_function_is_fuzzed():
    covered = {n.split(".")[-1] for n in SPECS} | {"gelu", "gelu_backward"}
    public = {n for n in fastnorm.__all__ if callable(getattr(fastnorm, n)) and not isinstance(getattr(fastnorm, n),
                                                                                               type)}
    not_arrays = {"gradcheck", "numerical_gradient", "info", "get_num_threads", "set_num_threads", "set_buffer_cache",
                  "buffer_cache_info", "merge_moments", "merge_scatter"}  # covered by their own tests
    assert public - not_arrays <= covered, sorted(public - not_arrays - covered)
