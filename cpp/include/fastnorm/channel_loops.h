// The loop bodies of the per-channel normalization kernels (batch, group and instance norm, moments): each an
// always-inline static run() holding one `#pragma omp simd` loop, to be run through isa_call (isa.h).  "Run": the
// contiguous values of one channel; "row": one value of each of C channels (channels-last).
#pragma once

#include <algorithm>
#include <vector>

#include "fastnorm/isa.h"
#include "fastnorm/moments.h"

namespace fastnorm {
namespace loops {

// Per-channel constants in T, the mean as hi + lo.
template <class T>
struct ChannelConsts {
  std::vector<T> mean_hi, mean_lo, a, b, c;
  ChannelConsts(idx C, const double* mean, const double* a64, const double* b64, const double* c64)
      : mean_hi(C), mean_lo(C), a(C), b(C), c(C, T(0)) {
    for (idx i = 0; i < C; ++i) {
      mean_hi[i] = static_cast<T>(mean[i]);
      mean_lo[i] = static_cast<T>(mean[i] - static_cast<double>(mean_hi[i]));
      a[i] = static_cast<T>(a64[i]);
      b[i] = static_cast<T>(b64[i]);
      if (c64) c[i] = static_cast<T>(c64[i]);
    }
  }
};

// (x - hi) is exact when x is near the mean (Sterbenz); lo then carries the rest of the mean.
template <class T>
FASTNORM_INLINE T centered(T x, T hi, T lo) {
  return (x - hi) - lo;
}

template <class T>
struct ApplyRun {  // one channel: y = (x - mean) * scale + shift
  static FASTNORM_INLINE void run(const T* x, T* y, idx n, T hi, T lo, T scale, T shift) {
#pragma omp simd
    for (idx i = 0; i < n; ++i) y[i] = centered(x[i], hi, lo) * scale + shift;
  }
};

template <class T>
struct ApplyRow {  // a row of C channels
  static FASTNORM_INLINE void run(const T* x, T* y, idx C, const T* hi, const T* lo, const T* scale,
                                  const T* shift) {
#pragma omp simd
    for (idx c = 0; c < C; ++c) y[c] = centered(x[c], hi[c], lo[c]) * scale[c] + shift[c];
  }
};

template <class T>
struct GradRun {  // one channel: dx = k_dy dy + k_xmu (x - mean) + k_one
  static FASTNORM_INLINE void run(const T* dy, const T* x, T* dx, idx n, T hi, T lo, T k_dy, T k_xmu, T k_one) {
#pragma omp simd
    for (idx i = 0; i < n; ++i) dx[i] = k_dy * dy[i] + (k_xmu * centered(x[i], hi, lo) + k_one);
  }
};

template <class T>
struct GradRow {
  static FASTNORM_INLINE void run(const T* dy, const T* x, T* dx, idx C, const T* hi, const T* lo, const T* k_dy,
                                  const T* k_xmu, const T* k_one) {
#pragma omp simd
    for (idx c = 0; c < C; ++c) dx[c] = k_dy[c] * dy[c] + (k_xmu[c] * centered(x[c], hi[c], lo[c]) + k_one[c]);
  }
};

template <class T>
struct SumsRun {  // sums of dy and dy (x - mean) over one channel's run, in double
  static FASTNORM_INLINE void run(const T* dy, const T* x, idx n, double mean, double* s_dy, double* s_dyx) {
    double a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
    for (idx i = 0; i < n; ++i) {
      const double g = static_cast<double>(dy[i]);
      a += g;
      b += g * (static_cast<double>(x[i]) - mean);
    }
    *s_dy += a;
    *s_dyx += b;
  }
};

template <class T>
struct SumsRow {
  static FASTNORM_INLINE void run(const T* dy, const T* x, idx C, const double* mean, double* s_dy,
                                  double* s_dyx) {
#pragma omp simd
    for (idx c = 0; c < C; ++c) {
      const double g = static_cast<double>(dy[c]);
      s_dy[c] += g;
      s_dyx[c] += g * (static_cast<double>(x[c]) - mean[c]);
    }
  }
};

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

// Per-channel shifted sums over rows of `channels` values (channels-last): s1[c] += x[r, c] - shift[c], etc.
template <class T>
struct ShiftedRowSums {
  // Tiles of kTile columns keep their two accumulators in registers over kRowBlock rows (a row-by-row sweep of
  // all columns loads and stores them at every row); each column is still summed row after row, so the result is
  // the same as the plain loop's.
  static constexpr idx kTile = 16, kRowBlock = 64;
  static FASTNORM_INLINE void run(const T* x, idx rows, idx channels, const double* shift, double* s1,
                                  double* s2) {
    const idx tiled = channels - channels % kTile;
    for (idx r0 = 0; r0 < rows; r0 += kRowBlock) {
      const idx r1 = std::min(rows, r0 + kRowBlock);
      for (idx c0 = 0; c0 < tiled; c0 += kTile) {
        double a[kTile], b[kTile], sh[kTile];
        for (idx j = 0; j < kTile; ++j) {
          a[j] = s1[c0 + j];
          b[j] = s2[c0 + j];
          sh[j] = shift[c0 + j];
        }
        for (idx r = r0; r < r1; ++r) {
          const T* xr = x + r * channels + c0;
#pragma omp simd
          for (idx j = 0; j < kTile; ++j) {
            const double d = static_cast<double>(xr[j]) - sh[j];
            a[j] += d;
            b[j] += d * d;
          }
        }
        for (idx j = 0; j < kTile; ++j) {
          s1[c0 + j] = a[j];
          s2[c0 + j] = b[j];
        }
      }
      for (idx r = r0; r < r1; ++r) {
        const T* xr = x + r * channels;
#pragma omp simd
        for (idx c = tiled; c < channels; ++c) {
          const double d = static_cast<double>(xr[c]) - shift[c];
          s1[c] += d;
          s2[c] += d * d;
        }
      }
    }
  }
};

inline Moments from_shifted(double n, double shift, double s1, double s2) {
  const double mean_shifted = s1 / n;
  const double m2 = s2 - s1 * mean_shifted;
  return {n, shift + mean_shifted, m2 < 0 ? 0.0 : m2};  // rounding can leave m2 just below 0; NaN stays NaN
}

}  // namespace loops
}  // namespace fastnorm
