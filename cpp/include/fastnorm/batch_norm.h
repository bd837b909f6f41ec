// Batch normalization kernels on x viewed as (A, C, B), C-contiguous, channel c = the middle index:
//   (N, C, H*W) for NCHW-style data, (N*H*W, C, 1) for channels-last, any channel axis in general.
// Statistics come from channel_moments (moments.h); these are the per-channel maps and reductions around them.
// Per-channel constants arrive in double and are rounded once to the type computed in here.  T is the storage type:
// float, double, or half / bf16, computed in float a piece at a time (results from given statistics: float32's,
// rounded once; statistics of narrow data: moments.h).  The mean is taken off as hi, the mean
// rounded to T, its rest folded into the constant (centering.h), so that x - mean is exact to T's rounding even
// when |mean| is far above the spread of x.
#pragma once

#include <string>
#include <vector>

#include "fastnorm/enum_table.h"
#include "fastnorm/isa.h"
#include "fastnorm/post_op.h"

namespace fastnorm {

// The schedules of the training calls (bn_forward_train, bn_backward_train): `fastest` takes by_channel (one pass
// over memory, a few channels at a time while they are in L2) where the shape suits and two_pass otherwise;
// `by_channel` and `two_pass` force one of them, so that the tests can compare them bit for bit (by_channel then
// declines the shapes it does not suit).  A process-wide setting, `fastest` unless set.
#define FASTNORM_BN_SCHEDULES(X) X(fastest) X(by_channel) X(two_pass)
enum class BnSchedule : int { FASTNORM_BN_SCHEDULES(FASTNORM_ENUM_VALUE) };
inline std::vector<const char*> bn_schedule_names() { return {FASTNORM_BN_SCHEDULES(FASTNORM_ENUM_NAME)}; }
BnSchedule bn_schedule();
void set_bn_schedule(BnSchedule schedule);

// y = post((x - mean[c]) * scale[c] + shift[c])   (scale = gamma * rstd, shift = beta; post: an activation)
template <class T>
void bn_apply(const T* x, T* y, idx A, idx C, idx B, const double* mean, const double* scale, const double* shift,
              int num_threads, const PostOp& post = {});

// sum_dy[c] = sum of dy, sum_dy_xmu[c] = sum of dy * (x - mean[c]), over A and B, in double, in a fixed order.
// With a post-op, dy is the gradient of its output, and the sums are of dz = post'(z) dy, z = (x - mean[c]) *
// scale[c] + shift[c] recomputed (the forward's scale and shift).
template <class T>
void bn_grad_sums(const T* dy, const T* x, idx A, idx C, idx B, const double* mean, double* sum_dy,
                  double* sum_dy_xmu, int num_threads, const PostOp& post = {}, const double* scale = nullptr,
                  const double* shift = nullptr);

// dx = k_dy[c] * dy + k_xmu[c] * (x - mean[c]) + k_one[c]
template <class T>
void bn_input_grad(const T* dy, const T* x, T* dx, idx A, idx C, idx B, const double* mean, const double* k_dy,
                   const double* k_xmu, const double* k_one, int num_threads, const PostOp& post = {},
                   const double* scale = nullptr, const double* shift = nullptr);

// The whole training backward (no post-op) in one pass over memory where a channel's values fit in L2: channel
// by channel, its sums and then its dx, with k_dy = gamma * rstd and k_xmu, k_one from the sums as
// batch_norm_backward computes them.  The same bits as bn_grad_sums followed by bn_input_grad.  Returns false,
// doing nothing, where the shape does not suit (channels-last, channels too large, fewer channels than threads).
template <class T>
bool bn_backward_by_channel(const T* dy, const T* x, T* dx, idx A, idx C, idx B, const double* mean,
                            const double* rstd, const double* k_dy, double* sum_dy, double* sum_dy_xmu,
                            int num_threads);

// The whole training forward in one pass over memory where a channel's values fit in L2: block by block of
// channels, each channel's statistics (mean[c] and m2[c], as channel_moments gives them), then its values
// normalized as bn_apply does with rstd = 1 / sqrt(m2 / (A B) + eps), scale = gamma * rstd (rstd without gamma)
// and shift = beta (0 without): the same bits as channel_moments followed by bn_apply with those constants.
// Returns false, doing nothing, where the shape does not suit (runs shorter than moments' pieces, channels too
// large, fewer channels than threads).
template <class T>
bool bn_forward_by_channel(const T* x, T* y, idx A, idx C, idx B, const double* gamma, const double* beta,
                           double eps, double* mean, double* m2, int num_threads, const PostOp& post = {});

// The whole training forward for any shape: bn_forward_by_channel where it suits, else channel_moments and
// bn_apply with its constants (the same bits either way), as bn_schedule() says.  One call from Python: a batch norm
// on 1,000 values spent more in NumPy's arithmetic on the constants than in the kernels.  Returns whether y was
// written (false only under BnSchedule::by_channel, for a shape it does not suit).
template <class T>
bool bn_forward_train(const T* x, T* y, idx A, idx C, idx B, const double* gamma, const double* beta, double eps,
                      double* mean, double* m2, int num_threads, const PostOp& post = {});

// The whole training backward for any shape, from the forward's mean and rstd (gamma, beta: nullptr for none; beta
// matters only with a post-op): bn_backward_by_channel where it suits, else bn_grad_sums and bn_input_grad with
// k_dy = gamma rstd, k_xmu = -k_dy rstd^2 sum_dy_xmu / count and k_one = -k_dy sum_dy / count (0 without values).
// The schedule and the result as bn_forward_train's.
template <class T>
bool bn_backward_train(const T* dy, const T* x, T* dx, idx A, idx C, idx B, const double* mean, const double* rstd,
                       const double* gamma, const double* beta, double* sum_dy, double* sum_dy_xmu, int num_threads,
                       const PostOp& post = {});

}  // namespace fastnorm
