"""Fit the polynomial behind fastnorm's normal tail Phi(-a) (cpp/include/fastnorm/simd_math.h, normal_tail).

Phi(-a) = M(a) exp(-a^2 / 2), where the Mills ratio M(a) is smooth on [0, inf) and tends to 1 / (a sqrt(2 pi)).
With t = (a - c) / (a + c), c = 2 sqrt2, which maps [0, inf) onto [-1, 1), the function h(t) = (a + c) M(a) is
analytic and tends to 1 / sqrt(2 pi), so a single polynomial in t approximates it up to the largest a the kernels
pass (normal_tail_max: beyond it a Phi(-a) rounds to zero).  We fit h by Chebyshev interpolation in 50-digit
arithmetic (mpmath.chebyfit) and print the coefficients, highest degree first, for Horner's rule.

    python tools/fit_normal_tail.py        # prints the two tables pasted into simd_math.h
"""
import mpmath as mp

mp.mp.dps = 50
C = 2 * mp.sqrt(2)
# (dtype name, normal_tail_max, polynomial degree): degrees picked so that the fit error is below half an ulp of
# the type (float: 2e-8 at degree 9; double: 6e-18 at degree 25).  Other c between 2 and 4.5 need the same degree.
TABLES = [("float", mp.mpf("14.375"), 9), ("double", mp.mpf("38.6"), 25)]


def h(t):
    a = C * (1 + t) / (1 - t)
    return (a + C) * mp.ncdf(-a) * mp.exp(a * a / 2)


for name, amax, degree in TABLES:
    tmax = (amax - C) / (amax + C)
    coeffs, err = mp.chebyfit(h, [-1, tmax], degree + 1, error=True)
    print(f"// {name}: degree {degree} on a in [0, {amax}], interpolation error {mp.nstr(err, 3)}")
    print(",\n".join(f"    {mp.nstr(c, 20, min_fixed=-1, max_fixed=1)}" for c in coeffs))
