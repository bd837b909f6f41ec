#include "fastnorm/softmax.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "fastnorm/parallel.h"
#include "fastnorm/simd_math.h"

namespace fastnorm {
namespace {

template <class T>
FASTNORM_INLINE T exp_le0(T v) {  // exp of v <= 0 (or NaN; a v rounded just above 0 counts as 0); -inf gives 0
  return math::exp_nonpositive(v > T(0) ? T(0) : v).value();
}

// One row of n values: the maximum, the sum of exp(x - max) (softmax keeps them in y), then y.  Separate loops per
// variant: a store under a condition inside the exp loop kept GCC from vectorising it (softmax 5x slower).
template <class T>
FASTNORM_INLINE T row_max(const T* x, idx n) {
  T m = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : m)
  for (idx i = 0; i < n; ++i) m = x[i] > m ? x[i] : m;  // NaN is skipped here; it turns the sum into NaN below
  return m;
}

// sum exp(x - max) as ties + rest: ties the count of values equal to the maximum (each exp(0) = 1), rest the sum over
// the others.  log(sum) = log1p((ties - 1) + rest) then keeps a rest far below 1 (the largest value's
// log-probability -log(1 + rest) = -1e-30 is not 0), as log(1 + rest) could not.
struct ExpSum {
  double ties = 0, rest = 0;
  double total() const { return ties + rest; }
  double log_total() const { return std::log1p((ties - 1.0) + rest); }
};

template <class T>
struct SoftmaxRow {
  static FASTNORM_INLINE void run(const T* x, T* y, idx n, bool log) {
    const T m = row_max(x, n);
    double ties = 0, rest = 0;
    if (log) {
#pragma omp simd reduction(+ : ties, rest)
      for (idx i = 0; i < n; ++i) {
        const T e = exp_le0(x[i] - m);
        ties += x[i] == m ? 1.0 : 0.0;
        rest += x[i] == m ? T(0) : e;
      }
      const T lse = static_cast<T>(ExpSum{ties, rest}.log_total());
#pragma omp simd
      for (idx i = 0; i < n; ++i) y[i] = (x[i] - m) - lse;
      return;
    }
#pragma omp simd reduction(+ : ties, rest)
    for (idx i = 0; i < n; ++i) {
      const T e = exp_le0(x[i] - m);
      y[i] = e;
      ties += x[i] == m ? 1.0 : 0.0;
      rest += x[i] == m ? T(0) : e;
    }
    const T r = static_cast<T>(1.0 / ExpSum{ties, rest}.total());
#pragma omp simd
    for (idx i = 0; i < n; ++i) y[i] *= r;
  }
};

constexpr idx kTile = 64;  // positions of a (C, B) slab reduced side by side when B > 1

// Positions [b0, b0 + w) of one (C, B) slab, w <= kTile.
template <class T>
struct SoftmaxTile {
  static FASTNORM_INLINE void run(const T* x, T* y, idx C, idx B, idx w, bool log) {
    T m[kTile];
    double ties[kTile], rest[kTile];
    for (idx j = 0; j < w; ++j) {
      m[j] = -std::numeric_limits<T>::infinity();
      ties[j] = rest[j] = 0;
    }
    for (idx c = 0; c < C; ++c) {
      const T* xc = x + c * B;
#pragma omp simd
      for (idx j = 0; j < w; ++j) m[j] = xc[j] > m[j] ? xc[j] : m[j];
    }
    for (idx c = 0; c < C; ++c) {
      const T* xc = x + c * B;
      T* yc = y + c * B;
      if (log) {
#pragma omp simd
        for (idx j = 0; j < w; ++j) {
          const T e = exp_le0(xc[j] - m[j]);
          ties[j] += xc[j] == m[j] ? 1.0 : 0.0;
          rest[j] += xc[j] == m[j] ? T(0) : e;
        }
      } else {
#pragma omp simd
        for (idx j = 0; j < w; ++j) {
          const T e = exp_le0(xc[j] - m[j]);
          yc[j] = e;
          ties[j] += xc[j] == m[j] ? 1.0 : 0.0;
          rest[j] += xc[j] == m[j] ? T(0) : e;
        }
      }
    }
    T k[kTile];
    for (idx j = 0; j < w; ++j) {
      const ExpSum sum{ties[j], rest[j]};
      k[j] = static_cast<T>(log ? sum.log_total() : 1.0 / sum.total());
    }
    for (idx c = 0; c < C; ++c) {
      const T* xc = x + c * B;
      T* yc = y + c * B;
      if (log) {
#pragma omp simd
        for (idx j = 0; j < w; ++j) yc[j] = (xc[j] - m[j]) - k[j];
      } else {
#pragma omp simd
        for (idx j = 0; j < w; ++j) yc[j] *= k[j];
      }
    }
  }
};

template <class T>
struct SoftmaxGradRow {
  static FASTNORM_INLINE void run(const T* dy, const T* y, T* dx, idx n, bool log) {
    double s = 0;
    if (log) {
#pragma omp simd reduction(+ : s)
      for (idx i = 0; i < n; ++i) s += dy[i];
      const T k = static_cast<T>(s);
#pragma omp simd
      for (idx i = 0; i < n; ++i) dx[i] = dy[i] - exp_le0(y[i]) * k;
    } else {
#pragma omp simd reduction(+ : s)
      for (idx i = 0; i < n; ++i) s += static_cast<double>(dy[i] * y[i]);
      const T k = static_cast<T>(s);
#pragma omp simd
      for (idx i = 0; i < n; ++i) dx[i] = y[i] * (dy[i] - k);
    }
  }
};

template <class T>
struct SoftmaxGradTile {
  static FASTNORM_INLINE void run(const T* dy, const T* y, T* dx, idx C, idx B, idx w, bool log) {
    double s[kTile] = {};
    for (idx c = 0; c < C; ++c) {
      const T *dyc = dy + c * B, *yc = y + c * B;
      if (log) {
#pragma omp simd
        for (idx j = 0; j < w; ++j) s[j] += dyc[j];
      } else {
#pragma omp simd
        for (idx j = 0; j < w; ++j) s[j] += static_cast<double>(dyc[j] * yc[j]);
      }
    }
    T k[kTile];
    for (idx j = 0; j < w; ++j) k[j] = static_cast<T>(s[j]);
    for (idx c = 0; c < C; ++c) {
      const T *dyc = dy + c * B, *yc = y + c * B;
      T* dxc = dx + c * B;
      if (log) {
#pragma omp simd
        for (idx j = 0; j < w; ++j) dxc[j] = dyc[j] - exp_le0(yc[j]) * k[j];
      } else {
#pragma omp simd
        for (idx j = 0; j < w; ++j) dxc[j] = yc[j] * (dyc[j] - k[j]);
      }
    }
  }
};

// Runs `row(a)` for every row (B == 1) or `tile(a, b0, w)` for every tile of every slab, in parallel: tasks hold
// whole rows or tiles, so each result is computed by one thread whatever their number.
template <class Row, class Tile>
void over_slabs(idx A, idx C, idx B, int num_threads, const Row& row, const Tile& tile) {
  if (B == 1) {
    parallel_for(A, std::max<idx>(1, kElementwiseGrain / std::max<idx>(C, 1)), num_threads, [&](idx a0, idx a1) {
      for (idx a = a0; a < a1; ++a) row(a);
    });
    return;
  }
  const idx tiles = (B + kTile - 1) / kTile;
  const idx grain = std::max<idx>(1, kElementwiseGrain / std::max<idx>(C * kTile, 1));
  parallel_for(A * tiles, grain, num_threads, [&](idx t0, idx t1) {
    for (idx t = t0; t < t1; ++t) {
      const idx a = t / tiles, b0 = (t % tiles) * kTile;
      tile(a, b0, std::min(kTile, B - b0));
    }
  });
}

template <class T>
FASTNORM_INLINE bool counted(std::int64_t t, idx C, std::int64_t ignore_index) {
  return t != ignore_index && t >= 0 && t < C;
}

}  // namespace

template <class T>
void softmax_forward(const T* x, T* y, idx A, idx C, idx B, bool log, int num_threads) {
  if (A == 0 || C == 0 || B == 0) return;
  over_slabs(
      A, C, B, num_threads, [&](idx a) { isa_call<SoftmaxRow<T>>(x + a * C, y + a * C, C, log); },
      [&](idx a, idx b0, idx w) {
        isa_call<SoftmaxTile<T>>(x + a * C * B + b0, y + a * C * B + b0, C, B, w, log);
      });
}

template <class T>
void softmax_backward(const T* dy, const T* y, T* dx, idx A, idx C, idx B, bool log, int num_threads) {
  if (A == 0 || C == 0 || B == 0) return;
  over_slabs(
      A, C, B, num_threads,
      [&](idx a) { isa_call<SoftmaxGradRow<T>>(dy + a * C, y + a * C, dx + a * C, C, log); },
      [&](idx a, idx b0, idx w) {
        const idx at = a * C * B + b0;
        isa_call<SoftmaxGradTile<T>>(dy + at, y + at, dx + at, C, B, w, log);
      });
}

namespace {

template <class T>
struct CrossEntropyRow {  // loss and lse of one row
  static FASTNORM_INLINE void run(const T* x, idx C, std::int64_t t, double eps, const double* w, double* loss,
                                  double* lse) {
    const T m = row_max(x, C);
    double ties = 0, rest = 0, sx = 0;
    if (w == nullptr) {
#pragma omp simd reduction(+ : ties, rest, sx)
      for (idx i = 0; i < C; ++i) {
        const T e = exp_le0(x[i] - m);
        ties += x[i] == m ? 1.0 : 0.0;
        rest += x[i] == m ? T(0) : e;
        sx += x[i];
      }
    } else {
#pragma omp simd reduction(+ : ties, rest, sx)
      for (idx i = 0; i < C; ++i) {
        const T e = exp_le0(x[i] - m);
        ties += x[i] == m ? 1.0 : 0.0;
        rest += x[i] == m ? T(0) : e;
        sx += w[i] * x[i];
      }
    }
    const double log_sum = ExpSum{ties, rest}.log_total();
    const double l = static_cast<double>(m) + log_sum;
    *lse = l;
    const double wt = w ? w[t] : 1.0;
    double sw = static_cast<double>(C);
    if (w) {
      sw = 0;
      for (idx i = 0; i < C; ++i) sw += w[i];
    }
    // x[t] - lse as (x[t] - max) - log(sum): exact for the largest logit, whose loss may be far below its size
    double out = -(1.0 - eps) * wt * ((static_cast<double>(x[t]) - static_cast<double>(m)) - log_sum);
    if (eps != 0) out -= eps / static_cast<double>(C) * (sx - sw * l);
    *loss = out;
  }
};

template <class T>
struct CrossEntropyGradRow {
  static FASTNORM_INLINE void run(const T* x, T* dx, idx C, std::int64_t t, double lse, double g, double eps,
                                  const double* w, double sw) {
    const double wt = w ? w[t] : 1.0;
    const T a = static_cast<T>(g * ((1.0 - eps) * wt + eps * sw / static_cast<double>(C)));
    const T l = static_cast<T>(lse);
    const T lo = static_cast<T>(lse - static_cast<double>(l));  // lse = l + lo: x - lse without losing lse's low part
    if (w == nullptr || eps == 0) {
#pragma omp simd
      for (idx i = 0; i < C; ++i) dx[i] = a * exp_le0((x[i] - l) - lo);
      if (eps != 0) {
        const T c = static_cast<T>(g * eps / static_cast<double>(C));
#pragma omp simd
        for (idx i = 0; i < C; ++i) dx[i] -= c;
      }
    } else {
      const double c = g * eps / static_cast<double>(C);
#pragma omp simd
      for (idx i = 0; i < C; ++i) dx[i] = a * exp_le0((x[i] - l) - lo) - static_cast<T>(c * w[i]);
    }
    dx[t] -= static_cast<T>(g * (1.0 - eps) * wt);
  }
};

}  // namespace

template <class T>
void cross_entropy_forward(const T* x, const std::int64_t* target, idx N, idx C, double eps, const double* w,
                           std::int64_t ignore_index, double* loss, double* lse, int num_threads) {
  parallel_for(N, std::max<idx>(1, kElementwiseGrain / std::max<idx>(C, 1)), num_threads, [&](idx r0, idx r1) {
    for (idx r = r0; r < r1; ++r) {
      if (!counted<T>(target[r], C, ignore_index)) {
        loss[r] = 0;
        lse[r] = std::numeric_limits<double>::quiet_NaN();
        continue;
      }
      isa_call<CrossEntropyRow<T>>(x + r * C, C, target[r], eps, w, loss + r, lse + r);
    }
  });
}

template <class T>
void cross_entropy_backward(const T* x, const std::int64_t* target, const double* lse, const double* g, T* dx, idx N,
                            idx C, double eps, const double* w, std::int64_t ignore_index, int num_threads) {
  double sw = static_cast<double>(C);
  if (w) {
    sw = 0;
    for (idx i = 0; i < C; ++i) sw += w[i];
  }
  parallel_for(N, std::max<idx>(1, kElementwiseGrain / std::max<idx>(C, 1)), num_threads, [&](idx r0, idx r1) {
    for (idx r = r0; r < r1; ++r) {
      if (!counted<T>(target[r], C, ignore_index)) {
        std::fill(dx + r * C, dx + (r + 1) * C, T(0));
        continue;
      }
      isa_call<CrossEntropyGradRow<T>>(x + r * C, dx + r * C, C, target[r], lse[r], g[r], eps, w, sw);
    }
  });
}

#define FASTNORM_SOFTMAX(T)                                                                                          \
  template void softmax_forward<T>(const T*, T*, idx, idx, idx, bool, int);                                        \
  template void softmax_backward<T>(const T*, const T*, T*, idx, idx, idx, bool, int);                             \
  template void cross_entropy_forward<T>(const T*, const std::int64_t*, idx, idx, double, const double*,             \
                                         std::int64_t, double*, double*, int);                                      \
  template void cross_entropy_backward<T>(const T*, const std::int64_t*, const double*, const double*, T*, idx, idx, \
                                          double, const double*, std::int64_t, int);
FASTNORM_SOFTMAX(float)
FASTNORM_SOFTMAX(double)

}  // namespace fastnorm
