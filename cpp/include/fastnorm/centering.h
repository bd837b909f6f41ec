// Centring numerics: how values are taken around a point near their mean so that nothing cancels.  An affine map
// of centred values keeps x - hi exact (hi the mean rounded to the storage type) and folds the mean's rest into its
// constant; statistics are summed around a shift (a run's first value, or for narrow storage a piece's first block
// mean) and turned into Moments by from_shifted.  DESIGN.md, Numerics, gives the rules.
#pragma once

#include <algorithm>
#include <cmath>

#include "fastnorm/blocked.h"
#include "fastnorm/isa.h"
#include "fastnorm/moments.h"
#include "fastnorm/narrow.h"
#include "fastnorm/tuning.h"

namespace fastnorm {
namespace loops {

// (x - mean) * k + c in T, computed as (x - hi) * k + c' (one fused multiply-add after the subtraction): hi is the
// mean rounded to T, so that x - hi is exact near the mean (Sterbenz) however far the mean is from zero, and the
// rest of the mean goes into the constant, c' = c - (mean - hi) k, computed in double and rounded once (a
// separate lo subtracted from every x was a rounding and an instruction more per value).  mean_rest(mean, hi) is
// that rest, exact in double; sums of dy (x - mean) take it off in double after summing dy (x - hi).
template <class T>
FASTNORM_INLINE double mean_rest(double mean, T hi) {
  return mean - static_cast<double>(hi);
}
template <class T>
FASTNORM_INLINE T folded(double c, double mean, T hi, double k) {
  return static_cast<T>(c - mean_rest(mean, hi) * k);
}
// The constants of y = (x - mean) * scale + shift in T: the mean's hi, the scale, the shift folded.
template <class T>
FASTNORM_INLINE void affine_consts(double mean, double scale, double shift, T* hi, T* k, T* c) {
  *hi = static_cast<T>(mean);
  *k = static_cast<T>(scale);
  *c = folded(shift, mean, *hi, scale);
}

// The two maps of centred values that every per-channel body applies, written once: the forward's
// (x - hi) scale + shift, and the input gradient's k_dy dy + ((x - hi) k_xmu + k_one), constants folded as above.
template <class V>
FASTNORM_INLINE V centred_affine(V x, V hi, V scale, V shift) {
  return (x - hi) * scale + shift;
}
template <class V>
FASTNORM_INLINE V centred_grad(V dy, V x, V hi, V k_dy, V k_xmu, V k_one) {
  return k_dy * dy + ((x - hi) * k_xmu + k_one);
}

// Sums of (x - shift) and (x - shift)^2 over a contiguous run, in double.
template <class T>
struct ShiftedSums {
  static FASTNORM_INLINE void run(const T* x, idx n, double shift, double* s1, double* s2) {
    double a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
    for (idx i = 0; i < n; ++i) {
      const double d = static_cast<double>(x[i]) - shift;
      a += d;
      b += d * d;
    }
    *s1 = a;
    *s2 = b;
  }
};

// The same over `runs` runs of n values, run k at x + k * stride, all around one shift (short runs of a channel:
// one call, no per-run merge): kW partial sums carried across the runs, folded once.
template <class T>
struct ShiftedSumsRuns {
  static constexpr idx kW = 16, kAhead = 1024;
  static FASTNORM_INLINE void run(const T* x, idx runs, idx n, idx stride, double shift, double* s1, double* s2) {
    double a[kW] = {}, b[kW] = {};
    for (idx k = 0; k < runs; ++k) {
      const T* r = x + k * stride;
      // the next run's first kAhead bytes: runs lie C * B apart, a new page each, where the hardware prefetcher
      // starts over (64x256x14x14 float32, 1 thread: 0.83 -> 0.52 ms; all of a long run's lines at once was slower)
      if (k + 1 < runs)
        for (idx i = 0; i < std::min(n, kAhead / idx(sizeof(T))); i += 64 / idx(sizeof(T)))
          __builtin_prefetch(r + stride + i);
      idx i = 0;
      for (; i + kW <= n; i += kW) {
#pragma omp simd
        for (idx j = 0; j < kW; ++j) {
          const double d = static_cast<double>(r[i + j]) - shift;
          a[j] += d;
          b[j] += d * d;
        }
      }
      for (idx j = 0; i < n; ++i, ++j) {
        const double d = static_cast<double>(r[i]) - shift;
        a[j] += d;
        b[j] += d * d;
      }
    }
    double sa = 0, sb = 0;
    for (idx j = 0; j < kW; ++j) {
      sa += a[j];
      sb += b[j];
    }
    *s1 = sa;
    *s2 = sb;
  }
};

inline Moments from_shifted(double n, double shift, double s1, double s2) {
  const double mean_shifted = s1 / n;
  const double m2 = s2 - s1 * mean_shifted;
  return {n, shift + mean_shifted, m2 < 0 ? 0.0 : m2};  // rounding can leave m2 just below 0; NaN stays NaN
}

// Moments of n contiguous values summed in double around the first (ShiftedSums).
template <class T>
Moments shifted_moments(const T* x, idx n) {
  const double shift = static_cast<double>(x[0]);
  double s1, s2;
  isa_call<ShiftedSums<T>>(x, n, shift, &s1, &s2);
  return from_shifted(static_cast<double>(n), shift, s1, s2);
}

// Statistics of values stored narrow (float16: 11 significant bits, bfloat16: 8) are summed in float32 around a
// piece-local shift (DESIGN.md, Numerics), the float64 sums above being the slow part once the bytes halve: a piece
// of at most kNarrowPiece values (4 KiB of float16, widened in registers) is summed in one pass for x - m and
// (x - m)^2, m the mean of its first kWidth values.  That shift is near the piece's mean: the first block's own
// squares bound it, k (m - mean)^2 <= n var, so with k = 64 and n <= 2048 the sums cancel by at most a factor of
// 33 (m2 = b - a^2 / n, a^2 / n <= 32 m2), and float32's rounding over 32 terms per partial sum (kWidth of them,
// added pairwise) stays near 2^-19 times that, far below the storage's 2^-11: measured within 4e-7 of float64, a
// first block 100 away from the rest included.  (A first pass for the piece's own mean cost 15-23% of the half
// forward norms: 32x64x56x56 float16 group norm, 1 thread, 1.42 -> 1.10 ms.)  Pieces whose sums overflow, see NaN,
// or whose spread is so small that squares may underflow (b < 2^-100) are summed again as float32 data are
// (ShiftedSums, in double).
constexpr idx kNarrowPiece = tuning::kNarrowPiece;

template <class S>
struct NarrowPieceSums {  // S: the narrow storage type, or float for values already widened
  static constexpr bool takes_isa = true;
  static constexpr idx kWidth = 64;  // partial sums: four AVX-512 vectors, independent chains
  template <idx W>
  static FASTNORM_INLINE void halve(float* acc) {  // compile-time widths: a loop over a variable one ran scalar
#pragma omp simd
    for (idx j = 0; j < W; ++j) acc[j] += acc[j + W];
  }
  static FASTNORM_INLINE float fold(float* acc) {
    halve<32>(acc);
    halve<16>(acc);
    halve<8>(acc);
    halve<4>(acc);
    halve<2>(acc);
    return acc[0] + acc[1];
  }
  // kWidth values from x as float: x itself, or widened into v (in registers, narrow.h)
  template <Isa I>
  static FASTNORM_INLINE const float* values(const S* x, float* v) {
    if constexpr (is_narrow<S>) {
      for (idx q = 0; q < kWidth; q += kLanes) NarrowIO<I, S>::load(x + q, v + q);
      return v;
    } else {
      return x;
    }
  }
  // m = a shift near the mean of x[0, n): the mean of its first kWidth values (all n when fewer); a = sum of
  // (x - m), b = sum of (x - m)^2, in one pass; n <= kNarrowPiece.  The pass prefetches the next piece (`next`,
  // when there is one) a line or two per step, so that memory keeps streaming.
  template <Isa I>
  static FASTNORM_INLINE void run(const S* x, idx n, const S* next, float* m, float* a, float* b) {
    const idx whole = n - n % kWidth;
    float s1[kWidth] = {}, s2[kWidth] = {}, v[kWidth], head[kWidth];
    float rest[kWidth];  // the last n % kWidth values, when there are any (short rows pay for converting them)
    const float* r = rest;
    if (whole < n) {
      S padded[kWidth] = {};
      for (idx j = 0; whole + j < n; ++j) padded[j] = x[whole + j];
      r = values<I>(padded, rest);
    }
    // the shift: the first block's mean (the zero padding of a short piece left out)
    const float* first = whole > 0 ? values<I>(x, v) : r;
    const idx k = std::min(n, kWidth);
    for (idx j = 0; j < kWidth; ++j) head[j] = j < k ? first[j] : 0.0f;
    const float shift = fold(head) / static_cast<float>(k);
    constexpr idx kLine = 64 / static_cast<idx>(sizeof(S));
    for (idx i = 0; i < whole; i += kWidth) {
      if (next)
        for (idx q = 0; q < kWidth; q += kLine) __builtin_prefetch(next + i + q);
      const float* w = values<I>(x + i, v);
#pragma omp simd
      for (idx j = 0; j < kWidth; ++j) {
        const float d = w[j] - shift;
        s1[j] += d;
        s2[j] += d * d;
      }
    }
    for (idx j = 0; whole + j < n; ++j) {
      const float d = r[j] - shift;
      s1[j] += d;
      s2[j] += d * d;
    }
    *m = shift;
    *a = fold(s1);
    *b = fold(s2);
  }
};

// Moments of one piece of n <= kNarrowPiece narrow values (S narrow, or float for values already widened), as
// described above.
template <class S>
Moments narrow_piece_moments(const S* x, idx n, const S* next = nullptr) {
  float m, a, b;
  isa_call<NarrowPieceSums<S>>(x, n, next, &m, &a, &b);
  const double count = static_cast<double>(n);
  if (std::isfinite(a) && std::isfinite(b) && b >= 0x1p-100f)
    return from_shifted(count, static_cast<double>(m), static_cast<double>(a), static_cast<double>(b));
  if constexpr (is_narrow<S>) {
    float w[kNarrowPiece];
    to_float(x, w, n);
    return shifted_moments(static_cast<const float*>(w), n);
  } else {
    return shifted_moments(x, n);
  }
}

}  // namespace loops
}  // namespace fastnorm
