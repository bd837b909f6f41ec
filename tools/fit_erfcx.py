"""Fit the polynomial behind fastnorm's erfc (cpp/include/fastnorm/simd_math.h).

erfcx(z) = exp(z^2) * erfc(z) is smooth on [0, inf).  With t = (z - K) / (z + K), which maps [0, inf) onto
[-1, 1), the function g(t) = (z + K) * erfcx(z) is analytic and tends to 1/sqrt(pi), so a single polynomial in t
approximates it over the whole range where erfc(z) does not underflow.  We fit g by Chebyshev interpolation in
50-digit arithmetic (mpmath.chebyfit) and print the coefficients, highest degree first, for Horner's rule.

    python tools/fit_erfcx.py        # prints the two tables pasted into simd_math.h
"""
import mpmath as mp

mp.mp.dps = 50
K = 2
# (dtype name, largest z before erfc underflows, polynomial degree): degrees picked so that the fit error is
# below a quarter of an ulp of the type (float: 3e-8 at degree 9; double: 9e-18 at degree 25).
TABLES = [("float", 10.5, 9), ("double", 27.5, 25)]


def g(t):
    z = K * (1 + t) / (1 - t)
    return (z + K) * mp.erfc(z) * mp.exp(z * z)


for name, zmax, degree in TABLES:
    tmax = mp.mpf(zmax - K) / (zmax + K)
    coeffs, err = mp.chebyfit(g, [-1, tmax], degree + 1, error=True)
    print(f"// {name}: degree {degree} on z in [0, {zmax}], interpolation error {mp.nstr(err, 3)}")
    print(",\n".join(f"    {mp.nstr(c, 20, min_fixed=-1, max_fixed=1)}" for c in coeffs))
