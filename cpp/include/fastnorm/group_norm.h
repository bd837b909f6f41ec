// Group normalization (and instance normalization, one channel per group) in one read of the input per pass.
//
// x is viewed as (N, P, C, Q): batch, the axes before the channel axis, channels, the axes after it (NCHW: P = 1,
// Q = H*W; channels-last: P = H*W, Q = 1).  Channels form G groups of C / G consecutive channels; each (sample,
// group) is normalized over its channels and all of P and Q.  A group of NCHW-style data is contiguous: it is
// summed and then normalized while it is still in cache, one task per group.  Channels-last groups interleave, so
// a whole sample is the unit: its per-channel sums in one pass, then the normalization while it is in cache.  Each
// group or sample is the work of one thread, so results are bitwise the same for any thread count; statistics
// are shifted float64 sums merged with Chan's formula, as in moments.h (float32 sums around each piece's mean for
// narrow data in contiguous groups, centering.h).  T is the storage type: float, double, or half / bf16,
// computed in float a piece (group, rows, run) at a time: results from the statistics are float32's, rounded once.
#pragma once

#include "fastnorm/isa.h"
#include "fastnorm/post_op.h"

namespace fastnorm {

struct GroupShape {
  idx N, P, C, Q, G;
};

// y = post((x - mean[n, g]) * rstd[n, g] * gamma[c] + beta[c]), with mean and rstd = 1 / sqrt(var + eps)
// written to mean[N * G] and rstd[N * G].  gamma and beta may be null (1 and 0).
template <class T>
void group_norm_forward(const T* x, T* y, const GroupShape& s, double eps, const double* gamma, const double* beta,
                        double* mean, double* rstd, int num_threads, const PostOp& post = {});

// dx from dy, x and the saved mean and rstd (N * G); sum_dy[n * C + c] and sum_dy_xmu[n * C + c] receive the
// per-sample, per-channel sums of dy and dy (x - mean[n, g]) (for the parameter gradients).  gamma may be null.
// With a post-op, dy is the gradient of its output and the sums are of dz = post'(z) dy, z recomputed from x
// (beta, may be null, is then needed).
template <class T>
void group_norm_backward(const T* dy, const T* x, T* dx, const GroupShape& s, const double* mean,
                         const double* rstd, const double* gamma, double* sum_dy, double* sum_dy_xmu,
                         int num_threads, const PostOp& post = {}, const double* beta = nullptr);

}  // namespace fastnorm
