#include "fastnorm/batch_norm.h"

#include <algorithm>
#include <vector>

#include "fastnorm/channels.h"
#include "fastnorm/parallel.h"

namespace fastnorm {
namespace {

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


}  // namespace

template <class T>
void bn_apply(const T* x, T* y, idx A, idx C, idx B, const double* mean, const double* scale, const double* shift,
              int num_threads) {
  const ChannelConsts<T> k(C, mean, scale, shift, nullptr);
  if (B == 1) {
    parallel_for(A, rows_per_task(C), num_threads, [&](idx r0, idx r1) {
      for (idx r = r0; r < r1; ++r)
        isa_call<ApplyRow<T>>(x + r * C, y + r * C, C, k.mean_hi.data(), k.mean_lo.data(), k.a.data(), k.b.data());
    });
    return;
  }
  parallel_for(A * C * B, kElementwiseGrain, num_threads, [&](idx b, idx e) {
    for_each_channel_run(b, e, C, B, [&](idx i, idx len, idx c) {
      isa_call<ApplyRun<T>>(x + i, y + i, len, k.mean_hi[c], k.mean_lo[c], k.a[c], k.b[c]);
    });
  });
}

template <class T>
void bn_input_grad(const T* dy, const T* x, T* dx, idx A, idx C, idx B, const double* mean, const double* k_dy,
                   const double* k_xmu, const double* k_one, int num_threads) {
  const ChannelConsts<T> k(C, mean, k_dy, k_xmu, k_one);
  if (B == 1) {
    parallel_for(A, rows_per_task(C), num_threads, [&](idx r0, idx r1) {
      for (idx r = r0; r < r1; ++r)
        isa_call<GradRow<T>>(dy + r * C, x + r * C, dx + r * C, C, k.mean_hi.data(), k.mean_lo.data(),
                             k.a.data(), k.b.data(), k.c.data());
    });
    return;
  }
  parallel_for(A * C * B, kElementwiseGrain, num_threads, [&](idx b, idx e) {
    for_each_channel_run(b, e, C, B, [&](idx i, idx len, idx c) {
      isa_call<GradRun<T>>(dy + i, x + i, dx + i, len, k.mean_hi[c], k.mean_lo[c], k.a[c], k.b[c], k.c[c]);
    });
  });
}

template <class T>
void bn_grad_sums(const T* dy, const T* x, idx A, idx C, idx B, const double* mean, double* sum_dy,
                  double* sum_dy_xmu, int num_threads) {
  // Tasks of about one grain each keep per-channel partial sums; they are added in task order afterwards.
  const idx row = C * B;
  const idx task_rows = rows_per_task(B == 1 ? C : B * C);
  const idx tasks = A == 0 ? 0 : (A + task_rows - 1) / task_rows;
  std::vector<double> part_dy(static_cast<size_t>(tasks * C), 0.0), part_dyx(static_cast<size_t>(tasks * C), 0.0);
  parallel_for(tasks, 1, num_threads, [&](idx t0, idx t1) {
    for (idx t = t0; t < t1; ++t) {
      double* pd = part_dy.data() + t * C;
      double* px = part_dyx.data() + t * C;
      for (idx r = t * task_rows; r < std::min(A, (t + 1) * task_rows); ++r) {
        if (B == 1) {
          isa_call<SumsRow<T>>(dy + r * row, x + r * row, C, mean, pd, px);
        } else {
          for (idx c = 0; c < C; ++c)
            isa_call<SumsRun<T>>(dy + r * row + c * B, x + r * row + c * B, B, mean[c], pd + c, px + c);
        }
      }
    }
  });
  for (idx c = 0; c < C; ++c) sum_dy[c] = sum_dy_xmu[c] = 0;
  for (idx t = 0; t < tasks; ++t)
    for (idx c = 0; c < C; ++c) {
      sum_dy[c] += part_dy[t * C + c];
      sum_dy_xmu[c] += part_dyx[t * C + c];
    }
}

#define FASTNORM_INSTANTIATE(T)                                                                                  \
  template void bn_apply<T>(const T*, T*, idx, idx, idx, const double*, const double*, const double*, int);     \
  template void bn_grad_sums<T>(const T*, const T*, idx, idx, idx, const double*, double*, double*, int);       \
  template void bn_input_grad<T>(const T*, const T*, T*, idx, idx, idx, const double*, const double*,           \
                                 const double*, const double*, int);
FASTNORM_INSTANTIATE(float)
FASTNORM_INSTANTIATE(double)
#undef FASTNORM_INSTANTIATE

}  // namespace fastnorm
