#include "fastnorm/group_norm.h"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "fastnorm/channel_loops.h"
#include "fastnorm/parallel.h"

namespace fastnorm {
namespace {

using namespace loops;

template <class T>
void split(double v, T* hi, T* lo) {
  *hi = static_cast<T>(v);
  *lo = static_cast<T>(v - static_cast<double>(*hi));
}

// Per-channel constants of one sample, in T: the group's mean as hi + lo, and two or three coefficients.
template <class T>
struct SampleConsts {
  std::vector<T> hi, lo, a, b, c;
  explicit SampleConsts(idx C) : hi(C), lo(C), a(C), b(C), c(C) {}
};

// Walks a channels-last sample of P rows of C channels, each a run of Q values: rows(all P) when Q == 1, else
// run(p, c) for each run.
template <class Rows, class Run>
FASTNORM_INLINE void rows_or_runs(idx P, idx C, idx Q, const Rows& rows, const Run& run) {
  if (Q == 1) {
    rows();
    return;
  }
  for (idx p = 0; p < P; ++p)
    for (idx c = 0; c < C; ++c) run(p, c);
}

template <class T, class Op>
void forward_contiguous(const T* x, T* y, const GroupShape& s, double eps, const double* gamma, const double* beta,
                        double* mean, double* rstd, act::Params<T> p, int num_threads) {
  const idx Cg = s.C / s.G, len = Cg * s.Q;
  const double count = static_cast<double>(std::max<idx>(len, 1));
  const bool stream = stream_out<T>(s.N * s.G * len, act::compute_bound<Op>::value);
  parallel_for(s.N * s.G, std::max<idx>(1, kElementwiseGrain / std::max<idx>(1, len)), num_threads,
               [&](idx t0, idx t1) {
    T* piece = stream_piece<T>(stream, s.Q);
    for (idx t = t0; t < t1; ++t) {  // t = n * G + g: the group's values are x[t * len, (t + 1) * len)
      const Moments m = run_moments(x + t * len, len);
      const double r = 1.0 / std::sqrt(m.m2 / count + eps);
      mean[t] = m.mean;
      rstd[t] = r;
      T hi, lo;
      split(m.mean, &hi, &lo);
      const idx c0 = (t % s.G) * Cg;
      for (idx k = 0; k < Cg; ++k) {
        const idx c = c0 + k, run = t * Cg + k;  // channel c's run of Q values
        const T scale = static_cast<T>(gamma ? r * gamma[c] : r), shift = static_cast<T>(beta ? beta[c] : 0.0);
        write_run(y, run, s.Q, piece, [&](idx i, idx n, T* dst) {
          isa_call<ApplyRun<T, Op>>(x + run * s.Q + i, dst, n, hi, lo, scale, shift, p);
        });
      }
    }
    if (stream) stream_fence();
  });
}

template <class T, class Op>
void forward_interleaved(const T* x, T* y, const GroupShape& s, double eps, const double* gamma, const double* beta,
                         double* mean, double* rstd, act::Params<T> p, int num_threads) {
  const idx C = s.C, Q = s.Q, L = C * Q, Cg = C / s.G, S = s.P * L;
  const double count = static_cast<double>(std::max<idx>(Cg * s.P * Q, 1));
  const bool stream = stream_out<T>(s.N * S, act::compute_bound<Op>::value);
  parallel_for(s.N, 1, num_threads, [&](idx n0, idx n1) {
    std::vector<double> shift(L), s1(L), s2(L);
    SampleConsts<T> k(C);
    for (idx n = n0; n < n1; ++n) {
      const T* xs = x + n * S;
      T* ys = y + n * S;
      for (idx j = 0; j < L; ++j) shift[j] = static_cast<double>(xs[j]);
      std::fill(s1.begin(), s1.end(), 0.0);
      std::fill(s2.begin(), s2.end(), 0.0);
      isa_call<ShiftedRowSums<T>>(xs, s.P, L, shift.data(), s1.data(), s2.data());
      for (idx g = 0; g < s.G; ++g) {
        Moments acc;  // the group's columns j = c * Q + q are consecutive
        for (idx j = g * Cg * Q; j < (g + 1) * Cg * Q; ++j)
          acc = merge(acc, from_shifted(static_cast<double>(s.P), shift[j], s1[j], s2[j]));
        const double r = 1.0 / std::sqrt(acc.m2 / count + eps);
        mean[n * s.G + g] = acc.mean;
        rstd[n * s.G + g] = r;
        for (idx c = g * Cg; c < (g + 1) * Cg; ++c) {
          split(acc.mean, &k.hi[c], &k.lo[c]);
          k.a[c] = static_cast<T>(gamma ? r * gamma[c] : r);
          k.b[c] = static_cast<T>(beta ? beta[c] : 0.0);
        }
      }
      rows_or_runs(
          s.P, C, Q,
          [&] {
            write_rows(ys, 0, s.P, C, stream, [&](idx r, idx rows, T* dst) {
              isa_call<ApplyRows<T, Op>>(xs + r * C, dst, rows, C, k.hi.data(), k.lo.data(), k.a.data(), k.b.data(),
                                         p);
            });
          },
          [&](idx row, idx c) {
            const idx at = (row * C + c) * Q;
            isa_call<ApplyRun<T, Op>>(xs + at, ys + at, Q, k.hi[c], k.lo[c], k.a[c], k.b[c], p);
          });
    }
  });
}

// The input-gradient coefficients of group g of one sample from its per-channel sums:
// dx = k_dy dy + k_xmu (x - mean) + k_one, with sums over the group of g = gamma dy and g xhat.
template <class T>
void group_grad_consts(idx g, idx Cg, double count, double mean, double r, const double* gamma, const double* sd,
                       const double* sdx, SampleConsts<T>& k) {
  double sum_g = 0, sum_gx = 0;
  for (idx c = g * Cg; c < (g + 1) * Cg; ++c) {
    const double w = gamma ? gamma[c] : 1.0;
    sum_g += w * sd[c];
    sum_gx += w * sdx[c];
  }
  sum_gx *= r;
  const T k_xmu = static_cast<T>(-(r * r * sum_gx / count)), k_one = static_cast<T>(-(r * sum_g / count));
  for (idx c = g * Cg; c < (g + 1) * Cg; ++c) {
    split(mean, &k.hi[c], &k.lo[c]);
    k.a[c] = static_cast<T>((gamma ? gamma[c] : 1.0) * r);
    k.b[c] = k_xmu;
    k.c[c] = k_one;
  }
}

template <class T, class Op>
void backward_contiguous(const T* dy, const T* x, T* dx, const GroupShape& s, const double* mean, const double* rstd,
                         const double* gamma, const double* beta, act::Params<T> p, double* sum_dy,
                         double* sum_dy_xmu, int num_threads) {
  constexpr bool post = !std::is_same_v<Op, act::Identity>;
  const idx Cg = s.C / s.G, len = Cg * s.Q;
  const double count = static_cast<double>(std::max<idx>(len, 1));
  const bool stream = stream_out<T>(s.N * s.G * len, false);
  parallel_for(s.N * s.G, std::max<idx>(1, kElementwiseGrain / std::max<idx>(1, len)), num_threads,
               [&](idx t0, idx t1) {
    SampleConsts<T> k(s.C), z(post ? Cg : 0);
    // the group's post'(z) dy, and after it the piece that dx is streamed out through
    const idx piece_len = stream ? std::min(s.Q, kStreamPiece) : 0;
    T* scratch = post || stream ? thread_scratch<T>(static_cast<size_t>((post ? len : 0) + piece_len)) : nullptr;
    T* dz = post ? scratch : nullptr;
    T* piece = stream ? scratch + (post ? len : 0) : nullptr;
    for (idx t = t0; t < t1; ++t) {
      const idx n = t / s.G, g = t % s.G;
      double* sd = sum_dy + n * s.C;
      double* sdx = sum_dy_xmu + n * s.C;
      const T* grad = dy + t * len;  // the group's gradient: dy, or dz = post'(z) dy in a scratch block
      if constexpr (post) {
        for (idx i = 0; i < Cg; ++i) {  // z as the forward computed it
          const idx c = g * Cg + i;
          split(mean[t], &z.hi[i], &z.lo[i]);
          z.a[i] = static_cast<T>(gamma ? rstd[t] * gamma[c] : rstd[t]);
          z.b[i] = static_cast<T>(beta ? beta[c] : 0.0);
        }
        isa_call<PostOpGradRuns<T, Op>>(dy + t * len, x + t * len, dz, idx(0), Cg, Cg, s.Q, z.hi.data(),
                                        z.lo.data(), z.a.data(), z.b.data(), p);
        grad = dz;
      }
      for (idx i = 0; i < Cg; ++i) {
        const idx c = g * Cg + i;
        sd[c] = sdx[c] = 0;
        isa_call<SumsRun<T>>(grad + i * s.Q, x + t * len + i * s.Q, s.Q, mean[t], &sd[c], &sdx[c]);
      }
      group_grad_consts(g, Cg, count, mean[t], rstd[t], gamma, sd, sdx, k);
      for (idx i = 0; i < Cg; ++i) {
        const idx c = g * Cg + i, run = t * Cg + i;  // channel c's run of Q values
        write_run(dx, run, s.Q, piece, [&](idx j, idx n, T* dst) {
          isa_call<GradRun<T>>(grad + i * s.Q + j, x + run * s.Q + j, dst, n, k.hi[c], k.lo[c], k.a[c], k.b[c],
                               k.c[c]);
        });
      }
    }
    if (stream) stream_fence();
  });
}

template <class T, class Op>
void backward_interleaved(const T* dy, const T* x, T* dx, const GroupShape& s, const double* mean, const double* rstd,
                          const double* gamma, const double* beta, act::Params<T> p, double* sum_dy,
                          double* sum_dy_xmu, int num_threads) {
  constexpr bool post = !std::is_same_v<Op, act::Identity>;
  const idx C = s.C, Q = s.Q, Cg = C / s.G, S = s.P * C * Q;
  const double count = static_cast<double>(std::max<idx>(Cg * s.P * Q, 1));
  const bool stream = stream_out<T>(s.N * S, false);
  parallel_for(s.N, 1, num_threads, [&](idx n0, idx n1) {
    std::vector<double> mean_c(C);
    SampleConsts<T> k(C), z(post ? C : 0);
    const bool whole = Q != 1 || act::compute_bound<Op>::value;
    T* dz = post ? thread_scratch<T>(static_cast<size_t>(whole ? S : std::max<idx>(1, 4096 / C) * C)) : nullptr;
    for (idx n = n0; n < n1; ++n) {
      const T *dys = dy + n * S, *xs = x + n * S;
      T* dxs = dx + n * S;
      double* sd = sum_dy + n * C;
      double* sdx = sum_dy_xmu + n * C;
      for (idx c = 0; c < C; ++c) {
        mean_c[c] = mean[n * s.G + c / Cg];
        sd[c] = sdx[c] = 0;
      }
      if constexpr (post) {  // dz = post'(z) dy for the sample, z as the forward computed it
        for (idx c = 0; c < C; ++c) {
          const double r = rstd[n * s.G + c / Cg];
          split(mean_c[c], &z.hi[c], &z.lo[c]);
          z.a[c] = static_cast<T>(gamma ? r * gamma[c] : r);
          z.b[c] = static_cast<T>(beta ? beta[c] : 0.0);
        }
        if (Q != 1) {  // the whole sample's dz, computed once (L2)
          isa_call<PostOpGradRuns<T, Op>>(dys, xs, dz, idx(0), s.P * C, C, Q, z.hi.data(), z.lo.data(), z.a.data(),
                                          z.b.data(), p);
          dys = dz;
        }
      }
      // Rows (channels-last) with a post-op: dz a few rows at a time, summed while in L1.  An expensive post-op
      // keeps each block in place in the sample's dz for the second pass; a cheap one writes them all to one L1
      // block and computes them again there (a second full-size stream costs more than the arithmetic).
      const bool rows_post = post && Q == 1, keep = act::compute_bound<Op>::value;
      const idx step = std::max<idx>(1, 4096 / C);
      const auto dz_rows = [&](idx p0, idx p1) {
        T* block = keep ? dz + p0 * C : dz;
        isa_call<PostOpGradRows<T, Op>>(dys + p0 * C, xs + p0 * C, block, p1 - p0, C, z.hi.data(), z.lo.data(),
                                        z.a.data(), z.b.data(), p);
        return static_cast<const T*>(block);
      };
      if (rows_post) {
        for (idx p0 = 0; p0 < s.P; p0 += step) {
          const idx p1 = std::min(s.P, p0 + step);
          isa_call<SumsRows<T>>(dz_rows(p0, p1), xs + p0 * C, p1 - p0, C, static_cast<const double*>(mean_c.data()),
                                sd, sdx);
        }
        if (keep) dys = dz;
      } else {
        rows_or_runs(
            s.P, C, Q,
            [&] { isa_call<SumsRows<T>>(dys, xs, s.P, C, static_cast<const double*>(mean_c.data()), sd, sdx); },
            [&](idx row, idx c) {
              const idx at = (row * C + c) * Q;
              isa_call<SumsRun<T>>(dys + at, xs + at, Q, mean_c[c], &sd[c], &sdx[c]);
            });
      }
      for (idx g = 0; g < s.G; ++g)
        group_grad_consts(g, Cg, count, mean[n * s.G + g], rstd[n * s.G + g], gamma, sd, sdx, k);
      if (rows_post && !keep) {
        for (idx p0 = 0; p0 < s.P; p0 += step) {
          const idx p1 = std::min(s.P, p0 + step);
          isa_call<GradRows<T>>(dz_rows(p0, p1), xs + p0 * C, dxs + p0 * C, p1 - p0, C, k.hi.data(), k.lo.data(),
                                k.a.data(), k.b.data(), k.c.data());
        }
        continue;
      }
      rows_or_runs(
          s.P, C, Q,
          [&] {
            write_rows(dxs, 0, s.P, C, stream, [&](idx r, idx rows, T* dst) {
              isa_call<GradRows<T>>(dys + r * C, xs + r * C, dst, rows, C, k.hi.data(), k.lo.data(), k.a.data(),
                                    k.b.data(), k.c.data());
            });
          },
          [&](idx row, idx c) {
            const idx at = (row * C + c) * Q;
            isa_call<GradRun<T>>(dys + at, xs + at, dxs + at, Q, k.hi[c], k.lo[c], k.a[c], k.b[c], k.c[c]);
          });
    }
  });
}

}  // namespace

template <class T>
void group_norm_forward(const T* x, T* y, const GroupShape& s, double eps, const double* gamma, const double* beta,
                        double* mean, double* rstd, int num_threads, const PostOp& post) {
  const act::Params<T> p = post.params<T>();
  visit_post_op(post, [&](auto op) {
    using Op = decltype(op);
    if (s.P == 1)
      forward_contiguous<T, Op>(x, y, s, eps, gamma, beta, mean, rstd, p, num_threads);
    else
      forward_interleaved<T, Op>(x, y, s, eps, gamma, beta, mean, rstd, p, num_threads);
  });
}

template <class T>
void group_norm_backward(const T* dy, const T* x, T* dx, const GroupShape& s, const double* mean,
                         const double* rstd, const double* gamma, double* sum_dy, double* sum_dy_xmu,
                         int num_threads, const PostOp& post, const double* beta) {
  const act::Params<T> p = post.params<T>();
  visit_post_op(post, [&](auto op) {
    using Op = decltype(op);
    if (s.P == 1)
      backward_contiguous<T, Op>(dy, x, dx, s, mean, rstd, gamma, beta, p, sum_dy, sum_dy_xmu, num_threads);
    else
      backward_interleaved<T, Op>(dy, x, dx, s, mean, rstd, gamma, beta, p, sum_dy, sum_dy_xmu, num_threads);
  });
}

template void group_norm_forward<float>(const float*, float*, const GroupShape&, double, const double*,
                                        const double*, double*, double*, int, const PostOp&);
template void group_norm_forward<double>(const double*, double*, const GroupShape&, double, const double*,
                                         const double*, double*, double*, int, const PostOp&);
template void group_norm_backward<float>(const float*, const float*, float*, const GroupShape&, const double*,
                                         const double*, const double*, double*, double*, int, const PostOp&,
                                         const double*);
template void group_norm_backward<double>(const double*, const double*, double*, const GroupShape&, const double*,
                                          const double*, const double*, double*, double*, int, const PostOp&,
                                          const double*);

}  // namespace fastnorm
