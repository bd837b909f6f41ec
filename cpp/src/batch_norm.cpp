#include "fastnorm/batch_norm.h"

#include <algorithm>
#include <vector>

#include "fastnorm/channel_loops.h"
#include "fastnorm/channels.h"
#include "fastnorm/parallel.h"

namespace fastnorm {

using namespace loops;

template <class T>
void bn_apply(const T* x, T* y, idx A, idx C, idx B, const double* mean, const double* scale, const double* shift,
              int num_threads) {
  const ChannelConsts<T> k(C, mean, scale, shift, nullptr);
  if (B == 1) {
    parallel_for(A, rows_per_task(C), num_threads, [&](idx r0, idx r1) {
      isa_call<ApplyRows<T>>(x + r0 * C, y + r0 * C, r1 - r0, C, k.mean_hi.data(), k.mean_lo.data(), k.a.data(),
                             k.b.data());
    });
    return;
  }
  parallel_for(A * C, rows_per_task(B), num_threads, [&](idx r0, idx r1) {
    isa_call<ApplyRuns<T>>(x, y, r0, r1, C, B, k.mean_hi.data(), k.mean_lo.data(), k.a.data(), k.b.data());
  });
}

template <class T>
void bn_input_grad(const T* dy, const T* x, T* dx, idx A, idx C, idx B, const double* mean, const double* k_dy,
                   const double* k_xmu, const double* k_one, int num_threads) {
  const ChannelConsts<T> k(C, mean, k_dy, k_xmu, k_one);
  if (B == 1) {
    parallel_for(A, rows_per_task(C), num_threads, [&](idx r0, idx r1) {
      isa_call<GradRows<T>>(dy + r0 * C, x + r0 * C, dx + r0 * C, r1 - r0, C, k.mean_hi.data(), k.mean_lo.data(),
                            k.a.data(), k.b.data(), k.c.data());
    });
    return;
  }
  parallel_for(A * C, rows_per_task(B), num_threads, [&](idx r0, idx r1) {
    isa_call<GradRuns<T>>(dy, x, dx, r0, r1, C, B, k.mean_hi.data(), k.mean_lo.data(), k.a.data(), k.b.data(),
                          k.c.data());
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
      const idx r0 = t * task_rows, r1 = std::min(A, (t + 1) * task_rows);
      if (B == 1) {
        isa_call<SumsRows<T>>(dy + r0 * row, x + r0 * row, r1 - r0, C, mean, pd, px);
        continue;
      }
      isa_call<SumsRuns<T>>(dy, x, r0 * C, r1 * C, C, B, mean, pd, px);
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
