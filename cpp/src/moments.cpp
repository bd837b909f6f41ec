#include "fastnorm/moments.h"

#include <algorithm>
#include <vector>

#include "fastnorm/channel_loops.h"
#include "fastnorm/parallel.h"

namespace fastnorm {
namespace {

using namespace loops;

// Runs of B >= kMinRun values, cut into pieces of at most one grain so that a few long runs still use every
// thread.  Units are (run a, piece k) in order; tasks are (channel, block of units), one partial per task, merged
// in unit order.
template <class T>
void moments_by_runs(const T* x, idx A, idx C, idx B, double* mean, double* m2, int num_threads) {
  const idx piece = std::min(B, kElementwiseGrain);
  const idx pieces_per_run = (B + piece - 1) / piece;
  const idx units = A * pieces_per_run;
  const idx units_per_task = std::max<idx>(1, kElementwiseGrain / piece);
  const idx blocks = (units + units_per_task - 1) / units_per_task;
  std::vector<Moments> partial(static_cast<size_t>(C * blocks));
  parallel_for(C * blocks, 1, num_threads, [&](idx t0, idx t1) {
    for (idx t = t0; t < t1; ++t) {
      const idx c = t / blocks, blk = t % blocks;
      Moments acc;
      for (idx u = blk * units_per_task; u < std::min(units, (blk + 1) * units_per_task); ++u) {
        const idx a = u / pieces_per_run, k = u % pieces_per_run;
        const idx b0 = k * piece, len = std::min(B, b0 + piece) - b0;
        const T* run = x + (a * C + c) * B + b0;
        double s1, s2;
        const double shift = static_cast<double>(run[0]);
        isa_call<ShiftedSums<T>>(run, len, shift, &s1, &s2);
        acc = merge(acc, from_shifted(static_cast<double>(len), shift, s1, s2));
      }
      partial[t] = acc;
    }
  });
  for (idx c = 0; c < C; ++c) {
    Moments acc;
    for (idx blk = 0; blk < blocks; ++blk) acc = merge(acc, partial[c * blocks + blk]);
    mean[c] = acc.mean;
    m2[c] = acc.m2;
  }
}

// Short runs (B < kMinRun): rows of L = C * B values, per-channel accumulators across the row; tasks are blocks
// of rows, one partial per channel and task, merged in row order.
template <class T>
void moments_by_rows(const T* x, idx A, idx C, idx B, double* mean, double* m2, int num_threads) {
  const idx L = C * B;
  const idx rows_per_task = std::max<idx>(1, kElementwiseGrain / L);
  const idx tasks = (A + rows_per_task - 1) / rows_per_task;
  std::vector<Moments> partial(static_cast<size_t>(tasks * C));
  parallel_for(tasks, 1, num_threads, [&](idx t0, idx t1) {
    std::vector<double> shift(L), s1(L), s2(L);
    for (idx t = t0; t < t1; ++t) {
      const idx r0 = t * rows_per_task, r1 = std::min(A, r0 + rows_per_task);
      const T* first = x + r0 * L;
      for (idx j = 0; j < L; ++j) shift[j] = static_cast<double>(first[j]);
      std::fill(s1.begin(), s1.end(), 0.0);
      std::fill(s2.begin(), s2.end(), 0.0);
      isa_call<ShiftedRowSums<T>>(first, r1 - r0, L, shift.data(), s1.data(), s2.data());
      // Each of the B positions of a channel is its own shifted piece; merge them in order.
      const double rows = static_cast<double>(r1 - r0);
      for (idx c = 0; c < C; ++c) {
        Moments acc;
        for (idx b = 0; b < B; ++b) {
          const idx j = c * B + b;
          acc = merge(acc, from_shifted(rows, shift[j], s1[j], s2[j]));
        }
        partial[t * C + c] = acc;
      }
    }
  });
  for (idx c = 0; c < C; ++c) {
    Moments acc;
    for (idx t = 0; t < tasks; ++t) acc = merge(acc, partial[t * C + c]);
    mean[c] = acc.mean;
    m2[c] = acc.m2;
  }
}

constexpr idx kMinRun = 64;  // shorter runs are summed across the row instead

}  // namespace

template <class T>
void channel_moments(const T* x, idx A, idx C, idx B, double* mean, double* m2, int num_threads) {
  if (C == 0) return;
  if (A == 0 || B == 0) {  // no values: the identity of merge
    for (idx c = 0; c < C; ++c) mean[c] = m2[c] = 0;
    return;
  }
  // Rows (one per A) only pay for channels-last data; a single row of short runs (layer norm with a small D)
  // would make one task of the whole array.
  if (B >= kMinRun || A == 1)
    moments_by_runs(x, A, C, B, mean, m2, num_threads);
  else
    moments_by_rows(x, A, C, B, mean, m2, num_threads);
}

template void channel_moments<float>(const float*, idx, idx, idx, double*, double*, int);
template void channel_moments<double>(const double*, idx, idx, idx, double*, double*, int);

}  // namespace fastnorm
