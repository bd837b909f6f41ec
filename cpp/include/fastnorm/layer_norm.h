// Layer and RMS normalization kernels on x viewed as (M, D): each of the M rows is normalized over its D values,
// gamma and beta are per feature d.  A row's statistics are those of moments() over it (shifted float64 sums),
// and it is normalized right after, while it is in cache: one read of x.
//   layer norm: y = (x - mean[r]) * rstd[r] * gamma[d] + beta[d]
//   RMS norm:   y = x * rstd[r] * gamma[d]            (mean = 0, beta = 0, rstd = 1 / sqrt(mean(x^2) + eps))
#pragma once

#include "fastnorm/isa.h"
#include "fastnorm/post_op.h"

namespace fastnorm {

// mean[r] (0 for RMS norm) and rstd[r] = 1 / sqrt(var + eps), var = m2 / D for layer norm and m2 / D + mean^2
// (the mean of squares) for RMS norm, are written for each row.
// T is the storage type: float, double, or half / bf16 computed in float (gamma and beta in the compute type; either
// may be null, meaning 1 and 0, so that a default is never as large as a row).
template <class T>
void ln_forward(const T* x, T* y, idx M, idx D, double eps, bool centered, const compute_t<T>* gamma,
                const compute_t<T>* beta, double* mean, double* rstd, int num_threads, const PostOp& post = {});

// dx = rstd (g - [centered] mean(g) - xhat mean(g xhat)), g = dy gamma, xhat = (x - mean) rstd;
// dgamma[d] = sum over rows of dy xhat, dbeta[d] = sum of dy (float64, fixed order); either may be null, and with
// both null no per-feature partial sums are kept.  gamma (and beta) may be null: 1 (and 0).
// With a post-op (y = post(z), z = xhat gamma + beta), dy is the gradient of y and beta is needed: the
// gradients are those of z's gradient post'(z) dy, computed row by row.
template <class T>
void ln_backward(const T* dy, const T* x, T* dx, idx M, idx D, const double* mean, const double* rstd,
                 const compute_t<T>* gamma, bool centered, double* dgamma, double* dbeta, int num_threads,
                 const PostOp& post = {}, const compute_t<T>* beta = nullptr);

}  // namespace fastnorm
