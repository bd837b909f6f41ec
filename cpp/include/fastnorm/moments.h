// Mergeable statistics: count, mean and m2 (the sum of squared deviations from the mean), in double.
//
// x is viewed as (A, C, B), C-contiguous, and reduced over A and B for each of the C channels:
//   (N, C, H*W) batch norm on NCHW, (N*H*W, C, 1) channels-last, (1, rows, D) layer norm, (1, 1, n) everything.
// Values are summed in double around a shift, the first value of their block (about a grain of values: a piece of
// a long run, several short runs of a channel, or rows), and blocks are merged with Chan et al.'s formula in a
// fixed order, so the result is bitwise the same for any thread count and stays accurate for data whose mean is
// far larger than its spread.
#pragma once

#include "fastnorm/isa.h"

namespace fastnorm {

struct Moments {
  double count = 0, mean = 0, m2 = 0;
};

// Chan, Golub & LeVeque: the moments of the union of two disjoint sets.
inline Moments merge(const Moments& a, const Moments& b) {
  if (a.count == 0) return b;
  if (b.count == 0) return a;
  const double n = a.count + b.count;
  const double delta = b.mean - a.mean;
  return {n, a.mean + delta * (b.count / n), a.m2 + b.m2 + delta * delta * (a.count * b.count / n)};
}

// mean[c] and m2[c] of x viewed as (A, C, B), reduced over A and B; every channel has A * B values.  T is the
// storage type: float, double, or half / bf16, widened to float a piece at a time.  Runs of narrow data (B >= 64)
// are summed in float32 around a shift near each kNarrowPiece-value piece's mean (centering.h,
// narrow_piece_moments): within 1e-6 of the float32 array's statistics, not bitwise equal to them; channels-last
// rows of narrow data (B < 64) are summed as float32 data are.
template <class T>
void channel_moments(const T* x, idx A, idx C, idx B, double* mean, double* m2, int num_threads);

}  // namespace fastnorm
