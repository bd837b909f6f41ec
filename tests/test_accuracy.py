"""Accuracy of every activation over a dense sweep of inputs, in ulps, against a more precise reference.

float32 results are compared with the float64 references of reference.py (whose own error is far below a float32
ulp); float64 results with mpmath at 40 digits.  The sweep covers [-100, 100] densely, both signs of a geometric
range from the smallest denormal up, 0, -0, +-1e-8, +-20, +-100, the large negatives where x exp(x) underflows (down
to the most negative finite value) and NaN (infinities: test_activations.py).
Functions run with their default parameters.  Forward error is |y - f(x)| / ulp(f(x)) where f(x) is in the
normal range; denormal results (below 1.2e-38 in float32, 2.2e-308 in float64) are checked separately against
an absolute bound in units of the smallest denormal, since there an ulp is that fixed spacing and a product
rounded into it loses relative accuracy.  Backward error (dy = 1) is |dx - f'(x)| / eps, absolute in units of
machine epsilon, since derivatives are O(1) and have zeros where a relative measure means nothing.
The bounds below are asserted at every ISA level; docs/accuracy.md publishes the measured values
(`python tools/accuracy_table.py`).
"""
import mpmath as mp
import numpy as np
import pytest

import fastnorm
import reference as ref
from helpers import call_backward, call_forward

# name: (forward ulps float32, float64; backward eps float32, float64)
BOUNDS = {
    "sigmoid": (2.5, 2.5, 1, 0.5), "tanh": (2.5, 2.5, 1.5, 2.5), "relu": (0, 0, 0, 0),
    "leaky_relu": (1, 1, 0.01, 0),  # the slope 0.01 itself rounds in float32
    "elu": (1, 1, 0.5, 0.5), "selu": (2, 2, 1.5, 1.5), "gelu": (4.5, 3.5, 2, 1.5),
    # gelu_tanh's tails: exp(-2|u|) with u = sqrt(2/pi)(x + 0.044715 x^3) rounded in the working precision has
    # a relative error of about |2u| ulps, the conditioning of the formula itself (the same in any
    # implementation that evaluates u in float32 / float64).  Over |x| <= 4 the error is a few ulps.
    "gelu_tanh": (200, 1200, 1.5, 1), "silu": (3, 3, 1.5, 1.5), "softplus": (2, 2, 1, 1.5),
    "mish": (3.5, 3.5, 1.5, 1.5), "hardtanh": (0, 0, 0, 0), "hardsigmoid": (1, 1, 0.1, 0),
    "hardswish": (2, 2, 1, 0),
}
DENORMAL_BOUND = 64  # |y - f(x)| in units of the smallest denormal, where f(x) is denormal
KW = {name: {} for name in ref.ELEMENTWISE}  # default parameters
KW["gelu_tanh"] = {"approximate": "tanh"}
NAMES = sorted(ref.ELEMENTWISE)

mp.mp.dps = 40


def sweep(dtype):
    dtype = np.dtype(dtype)
    fi = np.finfo(dtype)
    n = 40001 if dtype == np.float32 else 3001
    geo = np.geomspace(float(fi.smallest_subnormal), 100.0, n // 4)
    special = [0.0, -0.0, 1e-8, -1e-8, 20.0, -20.0, 100.0, -100.0, float(fi.smallest_subnormal)]
    # Beyond the sweep: where x exp(x) is a denormal and past where it rounds to zero (float32 -104 .. -110,
    # float64 -745 .. -760), and on to the most negative finite value.
    special += [105.0, 1000.0, 1e10, -105.0, -107.0, -109.0, -110.0, -120.0, -1000.0, -1e10, -1e30, float(fi.min)]
    if dtype == np.float64:
        special += [-746.0, -750.0, -755.0, -760.0, -800.0]
    x = np.concatenate([np.linspace(-100, 100, n), geo, -geo, special]).astype(dtype)
    return x


def _mp_forward(name):
    """mpmath versions of the forwards with default parameters, for float64 references."""
    e = mp.exp
    sig = lambda v: 1 / (1 + e(-v))
    sp = lambda v, b=1: mp.log1p(e(b * v)) / b

    def two_u(v):
        return 2 * mp.sqrt(2 / mp.pi) * (v + mp.mpf("0.044715") * v ** 3)

    return {
        "sigmoid": sig, "tanh": mp.tanh, "relu": lambda v: max(v, 0),
        "leaky_relu": lambda v: v if v > 0 else mp.mpf("0.01") * v,
        "elu": lambda v: v if v > 0 else mp.expm1(v),
        "selu": lambda v: mp.mpf(ref.SELU_SCALE) * (v if v > 0 else mp.mpf(ref.SELU_ALPHA) * mp.expm1(v)),
        "gelu": lambda v: v * mp.erfc(-v / mp.sqrt(2)) / 2 if v > -1e6 else mp.mpf(0),  # (mpmath's erfc overflows)
        "gelu_tanh": lambda v: v * sig(two_u(v)),
        "silu": lambda v: v * sig(v),
        "softplus": lambda v: v if v > 20 else sp(v),
        "mish": lambda v: v * mp.tanh(sp(v)),
        "hardtanh": lambda v: min(max(v, -1), 1),
        "hardsigmoid": lambda v: min(max(v + 3, 0), 6) / mp.mpf(6),
        "hardswish": lambda v: v * min(max(v + 3, 0), 6) / mp.mpf(6),
    }[name]


def _ulp(r, dtype):
    """ulp of each reference value in dtype (the smallest denormal at 0)."""
    fi = np.finfo(dtype)
    with np.errstate(over="ignore"):
        rd = np.abs(np.asarray(r, dtype=np.float64)).astype(dtype)
    return np.maximum(np.spacing(rd).astype(np.float64), float(fi.smallest_subnormal))


def _reference_and_error(name, dtype):
    """x, f(x) (float64) and |y - f(x)| in float64 (from mpmath differences for float64 input)."""
    x = sweep(dtype)
    y = call_forward(name, x, KW[name])
    nan = np.isnan(x)
    assert np.isnan(y[nan]).all()
    x, y = x[~nan], y[~nan].astype(np.float64)
    if np.dtype(dtype) == np.float32:
        r = ref.forward(name, x)
        return x, r, np.abs(y - r)
    f = _mp_forward(name)
    r, diff = np.empty(x.size), np.empty(x.size)
    for i, (xi, yi) in enumerate(zip(x.tolist(), y.tolist())):
        ri = f(mp.mpf(xi))
        r[i], diff[i] = float(ri), float(abs(mp.mpf(yi) - ri))
    return x, r, diff


def forward_error(name, dtype):
    """(max error in ulps over normal-range results, x where it occurs, max denormal-range error in units of
    the smallest denormal) of the forward over the sweep."""
    x, r, diff = _reference_and_error(name, dtype)
    fi = np.finfo(dtype)
    normal = np.abs(r) >= float(fi.tiny)
    err = diff[normal] / _ulp(r[normal], dtype)
    assert np.isfinite(err).all(), f"non-finite result at x={x[normal][~np.isfinite(err)][:5]}"
    i = int(np.argmax(err))
    denormal = diff[~normal] / float(fi.smallest_subnormal)
    return float(err[i]), float(x[normal][i]), float(denormal.max(initial=0.0))


def backward_error(name, dtype):
    """(max |dx - f'(x)| / eps, x where it occurs) over the finite part of the sweep, dy = 1."""
    x = sweep(dtype)
    x = x[np.isfinite(x)]
    dx = call_backward(name, np.ones_like(x), x, KW[name]).astype(np.float64)
    with np.errstate(all="ignore"):
        d = ref.derivative(name, x)
    err = np.abs(dx - d) / np.finfo(dtype).eps
    i = int(np.argmax(err))
    return float(err[i]), float(x[i])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_accuracy(name, dtype):
    err, where, denormal = forward_error(name, dtype)
    bound = BOUNDS[name][0 if dtype == np.float32 else 1]
    assert err <= bound, f"{name} {np.dtype(dtype)}: {err:.2f} ulps at x={where!r} (bound {bound})"
    assert denormal <= DENORMAL_BOUND, f"{name} {np.dtype(dtype)}: denormal results off by {denormal}"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_accuracy(name, dtype):
    err, where = backward_error(name, dtype)
    bound = BOUNDS[name][2 if dtype == np.float32 else 3]
    assert err <= bound, f"{name}_backward {np.dtype(dtype)}: {err:.2f} eps at x={where!r} (bound {bound})"


def test_tanh_has_no_cancellation_near_zero():
    x = np.array([1e-30, 1e-12, 1e-8, -1e-6, 1e-4, 1e-3], dtype=np.float32)
    y = call_forward("tanh", x, {})
    np.testing.assert_allclose(y, np.tanh(x.astype(np.float64)), rtol=3e-7)


def test_exact_gelu_has_no_cancellation_in_the_negative_tail():
    x = np.array([-5.0, -8.0, -10.0, -12.0, -13.0], dtype=np.float32)  # gelu(-13) = -8e-38, still normal
    y = call_forward("gelu", x, {}).astype(np.float64)
    exact = np.array([float(mp.mpf(float(v)) * mp.erfc(-mp.mpf(float(v)) / mp.sqrt(2)) / 2) for v in x])
    np.testing.assert_allclose(y, exact, rtol=1e-6)
    assert (y < 0).all()
    x64 = np.array([-20.0, -30.0, -37.0])
    y64 = call_forward("gelu", x64, {})
    exact64 = [float(mp.mpf(v) * mp.erfc(-mp.mpf(v) / mp.sqrt(2)) / 2) for v in x64]
    np.testing.assert_allclose(y64, exact64, rtol=1e-14)


def measure_all():
    """Rows of (name, f32 fwd ulps, f64 fwd ulps, f32 bwd eps, f64 bwd eps, denormal f32, denormal f64)."""
    rows = []
    for name in NAMES:
        f32, f64 = forward_error(name, np.float32), forward_error(name, np.float64)
        b32, b64 = backward_error(name, np.float32)[0], backward_error(name, np.float64)[0]
        rows.append((name, f32[0], f64[0], b32, b64, f32[2], f64[2]))
    return rows


# ---- softmax and log-softmax on extreme logits -----------------------------------------------------------------

SOFTMAX_BOUNDS = {np.float32: (4, 8), np.float64: (4, 8)}  # log-softmax ulps; |sum(softmax) - 1| in eps


def softmax_logits(dtype):
    """Rows of 64 logits: spread over +-1e4 (most probabilities underflow), spread over 69 (probabilities down to
    1e-30), near the dtype's largest values, a few huge ones among small ones, and ordinary N(0, 3) rows."""
    rng = np.random.default_rng(11)
    big = float(np.finfo(dtype).max)
    rows = [rng.uniform(-1e4, 1e4, (50, 64)), rng.uniform(-69.0, 0.0, (50, 64)),
            rng.uniform(0.5, 1.0, (20, 64)) * big * rng.choice([-1, 1], (20, 64)),
            np.where(rng.random((20, 64)) < 0.05, 1e3, rng.standard_normal((20, 64))),
            rng.standard_normal((100, 64)) * 3]
    return np.concatenate(rows).astype(dtype)


def _mp_log_softmax(row):
    xs = [mp.mpf(float(v)) for v in row]
    m = max(xs)
    lse = m + mp.log(mp.fsum(mp.exp(v - m) for v in xs))
    return np.array([float(v - lse) for v in xs])


def softmax_error(dtype):
    """(log-softmax: max ulps where the result is normal; softmax: max |row sum - 1| in units of eps)."""
    from fastnorm import log_softmax, softmax
    x = softmax_logits(dtype)
    if dtype == np.float32:
        want = ref.log_softmax(x)
    else:  # every other row, against mpmath
        x = x[::2]
        want = np.array([_mp_log_softmax(r) for r in x])
    with np.errstate(invalid="ignore"):
        got = log_softmax(x).astype(np.float64)
    # where the result is normal in dtype (x - max itself overflows for logits of both signs near the largest value:
    # -inf is then the right rounding)
    normal = (np.abs(want) >= np.finfo(dtype).tiny) & (np.abs(want) <= np.finfo(dtype).max)
    ulps = np.abs(got[normal] - want[normal]) / _ulp(want[normal], dtype)
    sums = softmax(x).astype(np.float64).sum(axis=1)
    return float(ulps.max()), float(np.abs(sums - 1).max() / np.finfo(dtype).eps)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_softmax_and_softmax_accuracy(dtype):
    lsm, total = softmax_error(dtype)
    # The bounds are the optimized builds' (every ISA level).  The sanitizer build vectorises the row sums
    # differently (float lanes summed in another order: 4.14 ulps measured), so it gets one ulp more.
    sanitized = "-fsanitize" in fastnorm._C.build_info()["flags"]
    assert lsm <= SOFTMAX_BOUNDS[dtype][0] + sanitized and total <= SOFTMAX_BOUNDS[dtype][1] + sanitized
