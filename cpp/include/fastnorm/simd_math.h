// Branch-free elementary functions that vectorise under `#pragma omp simd` at every ISA level.
//
// Each function is a template over float and double, always inlined into the kernel loop that calls it, written
// with selects instead of branches so that the compiler can if-convert it (we build with -fno-trapping-math).
// No -ffast-math: NaN in gives NaN out, infinities follow the maths, denormal results are produced, not flushed.
// Measured accuracy (ulps against a high-precision reference) is in docs/accuracy.md and asserted by
// tests/test_accuracy.py.
//
// Structs returned by these helpers hold T members only, no bool and no nested struct: either makes GCC keep the
// struct in memory, and the calling loop then silently falls back to scalar code, 20x slower (seen with GCC 12).
// Signs are re-derived from x where needed.
//
//   exp_nonpositive(x)   x <= 0: Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, minimax polynomial, and 2^n
//                        applied as 2^(n+K) then a constant 2^-K, so that denormal results round once
//   expm1_nonpositive(x) x <= 0: same reduction, 2^n expm1(r) + (2^n - 1): no cancellation near 0
// Every activation needs exp only of arguments <= 0 (exp(-|x|), exp(-x^2/2)), which keeps these cheap.
//   log1p_(u)          u > -1; fdlibm-style log(1 + f) = f - (f^2/2 - s (f^2/2 + R(s^2))), s = f / (2 + f)
//   log_(x)            x > 0 normal: the same core
//   tanh_(x)           -e / (e + 2) with e = expm1(-2|x|): relative accuracy near 0 and in the tails
//   normal_tail(a)       Phi(-a) and exp(-a^2 / 2) for a >= 0: accurate in the tail, where 1 + erf(x / sqrt2)
//                        cancels
#pragma once

#include <cstdint>
#include <limits>
#include <type_traits>

#include "fastnorm/isa.h"

namespace fastnorm {
namespace math {

template <class T>
struct float_traits;

template <>
struct float_traits<float> {
  using I = std::int32_t;
  using U = std::uint32_t;
  static constexpr int mantissa_bits = 23;
  static constexpr I exponent_bias = 127;
  static constexpr float round_magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  static constexpr float ln2_hi = 0.693359375f;      // exact in 9 bits, so n * ln2_hi is exact
  static constexpr float ln2_lo = -2.12194440e-4f;
  // exp(x) is 0 below exp_lo (exp_nonpositive), and so is x exp(x): 110 exp(-110) is below half the smallest
  // denormal.  (A clamp at -104, where exp alone underflows, left products a exp(x) at a exp(-104): silu(-1e30)
  // was -6.8e-16.)
  static constexpr float exp_lo = -110.0f;
  static constexpr int scale_offset = 33;   // n in [-159, 0]: 2^(n + 33) is normal
  static constexpr float expm1_lo = -18.0f;  // expm1(x) rounds to -1 below this
  static constexpr U split_mask = 0xfffff000u;  // keeps 12 significant bits: hi * hi is exact
};

template <>
struct float_traits<double> {
  using I = std::int64_t;
  using U = std::uint64_t;
  static constexpr int mantissa_bits = 52;
  static constexpr I exponent_bias = 1023;
  static constexpr double round_magic = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr double ln2_hi = 6.93145751953125e-1;
  static constexpr double ln2_lo = 1.42860682030941723212e-6;
  static constexpr double exp_lo = -760.0;  // as float's: 760 exp(-760) is below half the smallest denormal
  static constexpr int scale_offset = 75;  // n in [-1097, 0]: 2^(n + 75) is normal
  static constexpr double expm1_lo = -40.0;
  static constexpr U split_mask = 0xfffffffff8000000ull;  // 26 significant bits
};

template <class To, class From>
FASTNORM_INLINE To bit_cast(From v) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast needs equal sizes");
  To out;
  __builtin_memcpy(&out, &v, sizeof out);
  return out;
}

// Horner's rule, coefficients from the highest degree down: horner(x, a, b, c) = (a x + b) x + c.
template <class T>
FASTNORM_INLINE T horner(T, T acc) {
  return acc;
}
template <class T, class... C>
FASTNORM_INLINE T horner(T x, T acc, T next, C... rest) {
  return horner(x, acc * x + next, static_cast<T>(rest)...);
}

// The integer v as a floating-point value, exact for |v| <= 2^51 (double): AVX2 has no 64-bit integer -> double
// conversion, and a loop with one stays scalar there; adding v to the bits of 1.5 * 2^52 and subtracting
// 1.5 * 2^52 vectorises everywhere.
FASTNORM_INLINE float exact_float(std::int32_t v) { return static_cast<float>(v); }
FASTNORM_INLINE double exact_float(std::int64_t v) {
  constexpr double magic = 6755399441055744.0;  // 1.5 * 2^52
  return bit_cast<double>(bit_cast<std::int64_t>(magic) + v) - magic;
}

// floor(v / 2^s) for signed v, using only a logical shift (AVX2 has no 64-bit arithmetic shift).
template <class I>
FASTNORM_INLINE I shift_right_floor(I v, int s) {
  using U = typename std::make_unsigned<I>::type;
  constexpr U sign = U(1) << (sizeof(I) * 8 - 1);
  return static_cast<I>((static_cast<U>(v) ^ sign) >> s) - static_cast<I>(sign >> s);
}

// 2^n for integer n in the normal exponent range.
template <class T>
FASTNORM_INLINE T pow2i(typename float_traits<T>::I n) {
  using F = float_traits<T>;
  using U = typename F::U;
  return bit_cast<T>(static_cast<U>(n + F::exponent_bias) << F::mantissa_bits);
}

// NaN-preserving clamp: a NaN x compares false both times and comes out unchanged.
template <class T>
FASTNORM_INLINE T clamp(T x, T lo, T hi) {
  x = x < lo ? lo : x;
  return x > hi ? hi : x;
}

// Bit operations in every ISA; the float overloads matter: the double builtins would convert.
FASTNORM_INLINE float abs_(float x) { return __builtin_fabsf(x); }
FASTNORM_INLINE double abs_(double x) { return __builtin_fabs(x); }
FASTNORM_INLINE float copysign_(float mag, float sign) { return __builtin_copysignf(mag, sign); }
FASTNORM_INLINE double copysign_(double mag, double sign) { return __builtin_copysign(mag, sign); }

// a * b, but a signed zero where b is 0, so that x * f(x) tends to 0 (not NaN) as x -> +-inf and f(x) -> 0.
template <class T>
FASTNORM_INLINE T mul_or_zero(T a, T b) {
  return b == T(0) ? copysign_(T(0), a) : a * b;
}

// x = n ln2 + r with |r| <= ln2 / 2 (after clamping x to [lo, hi]).
template <class T>
struct Reduced {
  typename float_traits<T>::I n;
  T r;
};

template <class T>
FASTNORM_INLINE Reduced<T> reduce_ln2(T x) {
  using F = float_traits<T>;
  using I = typename F::I;
  const T t = x * T(1.44269504088896340736) + F::round_magic;
  const T nf = t - F::round_magic;
  const I n = bit_cast<I>(t) - bit_cast<I>(F::round_magic);
  T r = x - nf * F::ln2_hi;
  r = r - nf * F::ln2_lo;
  return {n, r};
}

// expm1(r) for |r| <= ln2 / 2, as r + r^2 P(r).  float: degree-4 minimax P (fitted with mpmath.chebyfit to
// (expm1(r) - r) / r^2, 0.75 ulp with rounding); double: Taylor series to 1/13!, truncation 4e-18 relative.
FASTNORM_INLINE float expm1_reduced(float r) {
  const float p = horner(r, 1.392617612e-3f, 8.363173075e-3f, 4.166655466e-2f, 1.666657703e-1f, 0.5f);
  return r + (r * r) * p;
}

FASTNORM_INLINE double expm1_reduced(double r) {
  // 1/13!, 1/12!, ..., 1/2!
  const double p = horner(r, 1.6059043836821614599e-10, 2.0876756987868098979e-9, 2.5052108385441718775e-8,
                          2.7557319223985890653e-7, 2.7557319223985890653e-6, 2.4801587301587301587e-5,
                          1.9841269841269841270e-4, 1.3888888888888888889e-3, 8.3333333333333333333e-3,
                          4.1666666666666666667e-2, 1.6666666666666666667e-1, 0.5);
  return r + (r * r) * p;
}

// exp(x) for x <= 0 (and NaN) as (m * s1) * s2: s1 = 2^(n + K) is normal and s2 = 2^-K a constant, so a product
// a * exp(x) is rounded once, even where exp(x) alone would be denormal (x * sigmoid(x) near x = -90).
template <class T>
struct ExpParts {
  T m, s1;
  static constexpr int K = float_traits<T>::scale_offset;  // 2^-K in two halves: 2^K overflows float's U
  static constexpr T s2 = T(1) / (T(typename float_traits<T>::U(1) << (K / 2)) *
                                  T(typename float_traits<T>::U(1) << (K - K / 2)));
  FASTNORM_INLINE T value() const { return (m * s1) * s2; }
  // a * exp(x), rounded once.  Callers handle infinite a themselves (inf * 0 would be NaN).
  FASTNORM_INLINE T times(T a) const { return (a * m * s1) * s2; }
};

// exp(x + tail) for x <= 0 and a small |tail| (<= 0.06) that is added to the reduced argument, so that it is not
// lost to rounding x + tail (exp(-x^2 / 2) keeps the low part of x^2 this way).
// exp_lo <= x <= 0 (or NaN).
template <class T>
FASTNORM_INLINE ExpParts<T> exp_nonpositive_in_range(T x, T tail = T(0)) {
  const Reduced<T> red = reduce_ln2(x);
  return {expm1_reduced(red.r + tail) + T(1), pow2i<T>(red.n + float_traits<T>::scale_offset)};
}

// Below exp_lo (-inf included) m is 0, so that the products times() forms are 0 too.  Those lanes compute exp(0)
// first: GCC may give lanes that a caller discards (elu's derivative for x > 0) the values of this path, and
// exp(exp_lo)'s parts made denormal products there, a microcode assist per vector (elu backward 7x slower).
template <class T>
FASTNORM_INLINE ExpParts<T> exp_nonpositive(T x, T tail = T(0)) {
  using F = float_traits<T>;
  const bool under = x < T(F::exp_lo);  // NaN compares false and stays NaN
  ExpParts<T> e = exp_nonpositive_in_range(under ? T(0) : x, tail);
  e.m = under ? T(0) : e.m;
  return e;
}

// expm1(x) for x <= 0 (and NaN): 2^n expm1(r) + (2^n - 1), with 2^n normal since x >= expm1_lo.
template <class T>
FASTNORM_INLINE T expm1_nonpositive(T x) {
  using F = float_traits<T>;
  x = x < T(F::expm1_lo) ? T(F::expm1_lo) : x;
  const Reduced<T> red = reduce_ln2(x);
  const T s = pow2i<T>(red.n);
  return s * expm1_reduced(red.r) + (s - T(1));
}

// m = 2^k (1 + f) with 1 + f in [sqrt(1/2), sqrt(2)), k read from the exponent bits (m positive and normal).
template <class T>
struct LogReduced {
  T f, k;
};

template <class T>
FASTNORM_INLINE LogReduced<T> reduce_log(T m) {
  using F = float_traits<T>;
  using I = typename F::I;
  using U = typename F::U;
  const I offset = bit_cast<I>(m) - bit_cast<I>(T(0.70710678118654752440));
  const I k = shift_right_floor(offset, F::mantissa_bits);
  const T f = bit_cast<T>(bit_cast<I>(m) - static_cast<I>(static_cast<U>(k) << F::mantissa_bits)) - T(1);
  return {f, exact_float(k)};
}

// log(1 + f) for 1 + f in [sqrt(1/2), sqrt(2)), fdlibm's arrangement f - (f^2/2 - s (f^2/2 + R)), s = f / (2 + f).
template <class T>
FASTNORM_INLINE T log1p_reduced(T f) {
  const T s = f / (T(2) + f);
  const T z = s * s;
  // R = 2/3 z + 2/5 z^2 + ...: the series of log((1 + s) / (1 - s)) = 2s + s R, truncated below 1e-9 (float)
  // and 1e-17 (double) relative, since |s| <= 0.172.
  T R;
  if constexpr (sizeof(T) == 4) {
    R = z * horner(z, T(2.0 / 9), T(2.0 / 7), T(2.0 / 5), T(2.0 / 3));
  } else {
    R = z * horner(z, T(2.0 / 23), T(2.0 / 21), T(2.0 / 19), T(2.0 / 17), T(2.0 / 15), T(2.0 / 13), T(2.0 / 11),
                   T(2.0 / 9), T(2.0 / 7), T(2.0 / 5), T(2.0 / 3));
  }
  const T hfsq = T(0.5) * f * f;
  return f - (hfsq - s * (hfsq + R));
}

// log(1 + u) for u >= -1 (NaN below, -inf at -1, inf at inf).
template <class T>
FASTNORM_INLINE T log1p_(T u) {
  using F = float_traits<T>;
  const T m = T(1) + u;
  const LogReduced<T> r = reduce_log(m);
  // m rounds 1 + u; c = (u - (m - 1)) / m restores what the rounding lost.
  const T c = (u - (m - T(1))) / m;
  T result = r.k * F::ln2_hi + (log1p_reduced(r.f) + (c + r.k * F::ln2_lo));
  result = u == T(-1) ? -std::numeric_limits<T>::infinity() : result;
  result = u < T(-1) ? std::numeric_limits<T>::quiet_NaN() : result;
  return u == std::numeric_limits<T>::infinity() ? u : result;
}

// log(x) for positive, normal, finite x (the samplers' uniforms).
template <class T>
FASTNORM_INLINE T log_(T x) {
  using F = float_traits<T>;
  const LogReduced<T> r = reduce_log(x);
  return r.k * F::ln2_hi + (log1p_reduced(r.f) + r.k * F::ln2_lo);
}

template <class T>
FASTNORM_INLINE T tanh_(T x) {
  const T e = expm1_nonpositive(T(-2) * abs_(x));
  return copysign_(-e / (e + T(2)), x);
}

// The logistic function from one exp, e = exp(-|x|): s = sigmoid(x), sc = 1 - s = sigmoid(-x) without
// cancellation, and products with the small one of them rounded once.
template <class T>
struct Logistic {
  T m, s1;  // exp(-|x|) = (m * s1) * s2, see ExpParts
  T big;    // 1 / (1 + e), the larger of s and sc
  T s, sc;
  // a * e / (1 + e) = a * min(s, sc), rounded once
  FASTNORM_INLINE T small_times(T a) const { return ExpParts<T>{m, s1}.times(a * big); }
  // a * s, for the x this was computed from
  FASTNORM_INLINE T s_times(T a, T x) const { return x >= T(0) ? a * big : small_times(a); }
  // a * s * (1 - s) = a * big * small
  FASTNORM_INLINE T s_sc_times(T a) const { return small_times(a * big); }
};

template <class T>
FASTNORM_INLINE Logistic<T> logistic(T x) {
  const ExpParts<T> e = exp_nonpositive(-abs_(x));
  const T big = T(1) / (T(1) + e.value());
  const T small = e.value() * big;
  const bool pos = x >= T(0);
  return {e.m, e.s1, big, pos ? big : small, pos ? small : big};
}

// sigmoid(x) alone: (x >= 0 ? 1 : e) / (1 + e), one division, rounded once.
template <class T>
FASTNORM_INLINE T sigmoid_(T x) {
  const T e = exp_nonpositive(-abs_(x)).value();
  return (x >= T(0) ? T(1) : e) / (T(1) + e);
}

// The standard normal distribution's lower tail Phi(-a) = erfc(a / sqrt2) / 2 and exp(-a^2 / 2), for
// 0 <= a <= normal_tail_max (NaN propagates), from one exp and one division:
//   exp(-a^2 / 2): a^2 = hi^2 + lo (a + hi), with hi keeping half the significand so that -hi^2 / 2 is exact; the
//     rest, at most a^2 2^-12 (float) or a^2 2^-26 (double), joins the reduced argument of exp.  (Rounding a^2
//     would cost up to a^2 ulps in the tail.)
//   Phi(-a) = M(a) exp(-a^2 / 2), with the Mills ratio M(a) = h(t) / (a + c), t = (a - c) / (a + c), c = 2 sqrt2,
//     and h a polynomial fitted by tools/fit_normal_tail.py (relative error 2e-8 for float, 6e-18 for double).
// normal_tail_max is as far as these need no clamping (a^2 / 2 <= -exp_lo), and far enough that a Phi(-a) rounds
// to zero there: callers clamp |x| to it and get the tail's limit for free.
template <class T>
struct normal_tail_traits;
template <>
struct normal_tail_traits<float> {
  static constexpr float max = 14.375f;  // 14.375^2 / 2 = 103.3 <= 110;  14.375 Phi(-14.375) = 0.76 * 2^-150
};
template <>
struct normal_tail_traits<double> {
  static constexpr double max = 38.6;  // 38.6^2 / 2 = 745.0 <= 760;  38.6 Phi(-38.6) = 0.46 * 2^-1075
};

FASTNORM_INLINE float mills_poly(float t) {
  return horner(t, -5.0625974938596293138e-5f, -3.9747876572219564865e-4f, -4.99865592447542649e-4f,
                2.1749591227278229653e-3f, 4.5471877884285425101e-3f, -1.5212228872784141175e-2f,
                -2.5763803572970849379e-2f, 1.9761698076418607423e-1f, -4.8589616196421092076e-1f,
                7.223680520420754756e-1f);
}

FASTNORM_INLINE double mills_poly(double t) {
  return horner(t, -1.3504014819492823924e-9, -6.3372702449768010701e-9, -4.8754005668028414498e-9,
                2.7092622773545437419e-8, 6.8885988380884260375e-8, 1.2242245872818562201e-8,
                -2.1574011700840460636e-7, -4.1304093033503955974e-7, -1.0177743992682720516e-8,
                1.4189187445917657725e-6, 2.5828147523072479286e-6, -7.9652756470563700922e-7,
                -1.1401418504210140969e-5, -1.5341522150137518406e-5, 2.4147427381878772809e-5,
                1.0215626131530150848e-4, 2.4304199345975246006e-5, -4.6886377532513196087e-4,
                -5.9205771662819444957e-4, 2.1853927453741867684e-3, 4.5814756975973514462e-3,
                -1.5210334889880153696e-2, -2.57685490200753902e-2, 1.9761661179878099746e-1,
                -4.8589597971379466671e-1, 7.2236805841953241604e-1);
}

// Both scaled by 1 / s2 (see ExpParts): multiply by ExpParts<T>::s2 last, so that products with them round once.
template <class T>
struct NormalTail {
  T e_s;     // exp(-a^2 / 2) / s2
  T tail_s;  // Phi(-a) / s2
};

template <class T>
FASTNORM_INLINE NormalTail<T> normal_tail(T a) {
  using F = float_traits<T>;
  using I = typename F::I;
  constexpr T c = T(2.8284271247461900976);
  const T hi = bit_cast<T>(static_cast<I>(bit_cast<typename F::U>(a) & F::split_mask));
  const T lo = a - hi;
  const ExpParts<T> e = exp_nonpositive_in_range(T(-0.5) * hi * hi, T(-0.5) * lo * (a + hi));
  const T inv = T(1) / (a + c);
  const T e_s = e.m * e.s1;
  return {e_s, (mills_poly((a - c) * inv) * inv) * e_s};
}

// |x| clamped to normal_tail_max (NaN passes).
template <class T>
FASTNORM_INLINE T normal_tail_arg(T x) {
  const T a = abs_(x);
  return a > normal_tail_traits<T>::max ? normal_tail_traits<T>::max : a;
}

}  // namespace math
}  // namespace fastnorm
