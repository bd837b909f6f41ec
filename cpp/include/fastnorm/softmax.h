// Softmax and log-softmax over the middle axis of an (A, C, B) array (C classes; B == 1: rows), forward and
// backward from the output, and cross-entropy on rows fused with log-softmax.  Each row (or column of a tile of B
// positions) is reduced serially, so results are bitwise the same for any thread count.
#pragma once

#include <cstdint>

#include "fastnorm/isa.h"

namespace fastnorm {

// y = exp(x - max) / sum exp(x - max)  (log: y = x - max - log sum exp(x - max)), the sums in double.
template <class T>
void softmax_forward(const T* x, T* y, idx A, idx C, idx B, bool log, int num_threads);

// softmax: dx = y (dy - sum dy y);  log-softmax: dx = dy - exp(y) sum dy.
template <class T>
void softmax_backward(const T* dy, const T* y, T* dx, idx A, idx C, idx B, bool log, int num_threads);

// Cross-entropy of rows of C logits against class indices (target < 0 or == ignore_index: no loss), with label
// smoothing eps and optional class weights w (nullptr: 1):
//   loss[i] = -(1 - eps) w[t] logp[t] - eps / C sum_c w[c] logp[c],  logp = x - lse,  lse[i] saved for the backward.
template <class T>
void cross_entropy_forward(const T* x, const std::int64_t* target, idx N, idx C, double eps, const double* w,
                           std::int64_t ignore_index, double* loss, double* lse, int num_threads);

// dx[i, j] = g[i] ((1 - eps) w[t] + eps W / C) p[j] - g[i] (1 - eps) w[t] [j == t] - g[i] eps / C w[j], with
// p = exp(x - lse) and W = sum w; rows with no loss get dx = 0.
template <class T>
void cross_entropy_backward(const T* x, const std::int64_t* target, const double* lse, const double* g, T* dx, idx N,
                            idx C, double eps, const double* w, std::int64_t ignore_index, int num_threads);

// Both at once, each row visited once: loss[i] as cross_entropy_forward and dx as cross_entropy_backward.
template <class T>
void cross_entropy_with_grad(const T* x, const std::int64_t* target, const double* g, T* dx, idx N, idx C, double eps,
                             const double* w, std::int64_t ignore_index, double* loss, int num_threads);

}  // namespace fastnorm
