#include "fastnorm/moments.h"

#include <algorithm>
#include <vector>

#include "fastnorm/channel_loops.h"
#include "fastnorm/run_moments.h"
#include "fastnorm/parallel.h"

namespace fastnorm {
namespace {

using namespace loops;

// Runs of B >= kMinRunMoments values (RunPieces): tasks are (channel, block of units), one partial per task.
template <class T>
void moments_by_runs(const T* x, idx A, idx C, idx B, double* mean, double* m2, int num_threads) {
  const RunPieces pieces(A, C, B);
  const idx blocks = pieces.blocks;
  std::vector<Moments> partial(static_cast<size_t>(C * blocks));
  parallel_for(C * blocks, 1, num_threads, [&](idx t0, idx t1) {
    for (idx t = t0; t < t1; ++t) partial[t] = pieces.block(x, t / blocks, t % blocks);
  });
  for (idx c = 0; c < C; ++c) {
    const Moments acc = RunPieces::merged(blocks, [&](idx blk) { return partial[c * blocks + blk]; });
    mean[c] = acc.mean;
    m2[c] = acc.m2;
  }
}

// Short runs (B < kMinRunMoments): rows of L = C * B values, per-column sums across the rows.  Every task sums its
// rows around the same shift, the array's first row, so the tasks' partial sums add up directly (in task order); a
// merge per column and task would cost more than the sums themselves when rows are short.  Each of the B
// positions of a channel is then its own shifted piece, merged in order.
template <class T>
void moments_by_rows(const T* x, idx A, idx C, idx B, double* mean, double* m2, int num_threads) {
  const idx L = C * B;
  const idx rows_per_task = std::max<idx>(1, kElementwiseGrain / L);
  const idx tasks = (A + rows_per_task - 1) / rows_per_task;
  std::vector<double> shift(static_cast<size_t>(L));
  const compute_t<T>* first = widened<Scratch::x>(x, L);
  for (idx j = 0; j < L; ++j) shift[j] = static_cast<double>(first[j]);
  TaskPartials<2> partials(tasks, L);
  parallel_for(tasks, 1, num_threads, [&](idx t0, idx t1) {
    for (idx t = t0; t < t1; ++t) {
      const idx r0 = t * rows_per_task, r1 = std::min(A, r0 + rows_per_task);
      for (idx r = r0; r < r1; r += sum_rows(L)) {  // a piece at a time (narrow storage widened in L1)
        const idx rows = std::min(r1 - r, sum_rows(L));
        isa_call<ShiftedRowSums<compute_t<T>>>(widened<Scratch::x>(x + r * L, rows * L), rows, L,
                                               static_cast<const double*>(shift.data()), partials.row(0, t),
                                               partials.row(1, t));
      }
    }
  });
  std::vector<double> s1(static_cast<size_t>(L)), s2(static_cast<size_t>(L));
  partials.total({s1.data(), s2.data()}, num_threads);
  const double rows = static_cast<double>(A);
  for (idx c = 0; c < C; ++c) {
    Moments acc;
    for (idx b = 0; b < B; ++b) {
      const idx j = c * B + b;
      acc = merge(acc, from_shifted(rows, shift[j], s1[j], s2[j]));
    }
    mean[c] = acc.mean;
    m2[c] = acc.m2;
  }
}

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
  if (B >= kMinRunMoments || A == 1)
    moments_by_runs(x, A, C, B, mean, m2, num_threads);
  else
    moments_by_rows(x, A, C, B, mean, m2, num_threads);
}

#define FASTNORM_INSTANTIATE(T) template void channel_moments<T>(const T*, idx, idx, idx, double*, double*, int);
FASTNORM_FOR_EACH_STORAGE(FASTNORM_INSTANTIATE)
#undef FASTNORM_INSTANTIATE

}  // namespace fastnorm
