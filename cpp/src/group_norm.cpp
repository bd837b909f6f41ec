#include "fastnorm/group_norm.h"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "fastnorm/channel_loops.h"
#include "fastnorm/run_moments.h"
#include "fastnorm/parallel.h"

namespace fastnorm {
namespace {

using namespace loops;

// Channel ch's constants of z = (x - mean) r gamma + beta in T (loops::affine_consts).
template <class T>
FASTNORM_INLINE void channel_affine(double mean, double r, const double* gamma, const double* beta, idx ch, T* hi,
                                    T* scale, T* shift) {
  affine_consts(mean, gamma ? r * gamma[ch] : r, beta ? beta[ch] : 0.0, hi, scale, shift);
}

// Per-channel constants of one sample, in T: the group's mean's hi and two or three coefficients (as ChannelConsts).
template <class T>
struct SampleConsts {
  std::vector<T> hi, a, b, c;
  explicit SampleConsts(idx C) : hi(C), a(C), b(C), c(C) {}
  void set_affine(idx i, double mean, double r, const double* gamma, const double* beta, idx ch) {
    channel_affine(mean, r, gamma, beta, ch, &hi[i], &a[i], &b[i]);
  }
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

// Short contiguous groups, a batch at a time: their statistics in one dispatch (ShiftedSums around each group's first
// value, the call run_moments makes for a group of at most a grain, so the same bits); with one value per channel
// ((N, C) data, Q == 1) the batch's channels are then one channels-last row for ApplyChannelsLast / GradChannelsLast
// (tuning.h: kGnRowBatch).
template <class T>
struct GroupShiftedSums {
  static constexpr bool takes_isa = true;
  template <Isa I>
  static FASTNORM_INLINE void run(const T* x, idx groups, idx len, double* s1, double* s2) {
    for (idx t = 0; t < groups; ++t)
      ShiftedSums<T>::run(x + t * len, len, static_cast<double>(x[t * len]), &s1[t], &s2[t]);
  }
};

// Moments of groups [b0, b1) of len contiguous values, to out(t, moments): run_moments of each, wide groups of at
// most a grain (one piece) in one dispatch.  s1, s2: room for b1 - b0 sums.
template <class T, class Out>
void group_moments(const T* x, idx b0, idx b1, idx len, double* s1, double* s2, const Out& out) {
  if constexpr (!is_narrow<T>) {
    if (len <= kElementwiseGrain) {
      isa_call<GroupShiftedSums<T>>(x + b0 * len, b1 - b0, len, s1, s2);
      for (idx t = b0; t < b1; ++t)
        out(t, from_shifted(static_cast<double>(len), static_cast<double>(x[t * len]), s1[t - b0], s2[t - b0]));
      return;
    }
  }
  for (idx t = b0; t < b1; ++t) out(t, run_moments<T>(x + t * len, len));
}

// Groups per batch: short groups (instance norm on 14x14 maps) up to kGnBatchBytes, statistics first, as
// layer_norm's short rows; groups of one value per channel up to kGnRowBatch groups, as one row.
template <class T>
idx batch_groups(idx len, idx Q) {
  const idx fit = tuning::kGnBatchBytes / std::max<idx>(len * static_cast<idx>(sizeof(T)), 1);
  return std::clamp<idx>(fit, 1, Q == 1 ? tuning::kGnRowBatch : 8);
}

template <class T, class Op>
void forward_contiguous(const T* x, T* y, const GroupShape& s, double eps, const double* gamma, const double* beta,
                        double* mean, double* rstd, act::Params<compute_t<T>> p, int num_threads) {
  using V = compute_t<T>;
  const idx Cg = s.C / s.G, len = Cg * s.Q;
  const double count = static_cast<double>(std::max<idx>(len, 1));
  const bool stream =
      stream_runs(y, s.N * s.G * len, s.Q, 3, act::compute_bound<Op>::value, tuning::kStreamRunBytesForward);
  const idx batch = batch_groups<T>(len, s.Q);
  const bool rows = s.Q == 1;  // the batch's groups as one channels-last row
  parallel_for(s.N * s.G, std::max<idx>(1, kElementwiseGrain / std::max<idx>(1, len)), num_threads,
               [&](idx t0, idx t1) {
    // the channels' constants (of a group, or of a batch as one row), with kLanes more that a channels-last row
    // reads but never uses
    SampleConsts<V> k((rows ? batch : 1) * Cg + kLanes);
    std::vector<double> s1(static_cast<size_t>(batch)), s2(s1);
    for (idx b0 = t0; b0 < t1; b0 += batch) {  // t = n * G + g: the group's values are x[t * len, (t + 1) * len)
      const idx b1 = std::min(t1, b0 + batch);
      group_moments(x, b0, b1, len, s1.data(), s2.data(), [&](idx t, const Moments& m) {
        mean[t] = m.mean;
        rstd[t] = 1.0 / std::sqrt(m.m2 / count + eps);
      });
      if (rows) {
        for (idx t = b0; t < b1; ++t)
          for (idx i = 0; i < Cg; ++i)
            k.set_affine((t - b0) * Cg + i, mean[t], rstd[t], gamma, beta, (t % s.G) * Cg + i);
        const idx n = (b1 - b0) * Cg;
        isa_call<ApplyChannelsLast<T, Op>>(x + b0 * len, y + b0 * len, n, n, k.hi.data(), k.a.data(), k.b.data(), p,
                                           stream);
        continue;
      }
      for (idx t = b0; t < b1; ++t) {  // one dispatch for the group's runs
        const idx c0 = (t % s.G) * Cg;
        for (idx i = 0; i < Cg; ++i) k.set_affine(i, mean[t], rstd[t], gamma, beta, c0 + i);
        isa_call<ApplyRuns<T, Op>>(x + t * len, y + t * len, idx(0), Cg, Cg, s.Q, k.hi.data(), k.a.data(),
                                   k.b.data(), p, stream);
      }
    }
    if (stream) stream_fence();
  });
}

template <class T, class Op>
void forward_interleaved(const T* x, T* y, const GroupShape& s, double eps, const double* gamma, const double* beta,
                         double* mean, double* rstd, act::Params<compute_t<T>> p, int num_threads) {
  using V = compute_t<T>;
  const idx C = s.C, Q = s.Q, L = C * Q, Cg = C / s.G, S = s.P * L;
  const double count = static_cast<double>(std::max<idx>(Cg * s.P * Q, 1));
  const bool stream = stream_out<T>(s.N * S, 3, act::compute_bound<Op>::value);
  parallel_for(s.N, 1, num_threads, [&](idx n0, idx n1) {
    std::vector<double> shift(L), s1(L), s2(L);
    SampleConsts<V> k(C);
    for (idx n = n0; n < n1; ++n) {
      const T* xs = x + n * S;
      T* ys = y + n * S;
      const V* first = widened<Scratch::x>(xs, L);
      for (idx j = 0; j < L; ++j) shift[j] = static_cast<double>(first[j]);
      std::fill(s1.begin(), s1.end(), 0.0);
      std::fill(s2.begin(), s2.end(), 0.0);
      for (idx p0 = 0; p0 < s.P; p0 += sum_rows(L)) {  // per-column sums, a piece of rows at a time
        const idx rows = std::min(s.P - p0, sum_rows(L));
        isa_call<ShiftedRowSums<V>>(widened<Scratch::x>(xs + p0 * L, rows * L), rows, L,
                                    static_cast<const double*>(shift.data()), s1.data(), s2.data());
      }
      for (idx g = 0; g < s.G; ++g) {
        Moments acc;  // the group's columns j = c * Q + q are consecutive
        for (idx j = g * Cg * Q; j < (g + 1) * Cg * Q; ++j)
          acc = merge(acc, from_shifted(static_cast<double>(s.P), shift[j], s1[j], s2[j]));
        const double r = 1.0 / std::sqrt(acc.m2 / count + eps);
        mean[n * s.G + g] = acc.mean;
        rstd[n * s.G + g] = r;
        for (idx c = g * Cg; c < (g + 1) * Cg; ++c) k.set_affine(c, acc.mean, r, gamma, beta, c);
      }
      rows_or_runs(
          s.P, C, Q,
          [&] {
            for (auto* v : {&k.hi, &k.a, &k.b}) extend_periodic(*v, C);
            isa_call<ApplyChannelsLast<T, Op>>(xs, ys, s.P * C, C, k.hi.data(), k.a.data(), k.b.data(), p, stream);
          },
          [&](idx row, idx c) {
            const idx at = (row * C + c) * Q;
            V* out = compute_target(ys + at, Q);
            isa_call<ApplyRun<V, Op>>(widened<Scratch::x>(xs + at, Q), out, Q, k.hi[c], k.a[c], k.b[c], p);
            narrow_into(out, ys + at, Q);
          });
    }
    if (stream) stream_fence();
  });
}

// The input-gradient coefficients of group g of one sample from its per-channel sums:
// dx = k_dy dy + k_xmu (x - mean) + k_one, with sums over the group of g = gamma dy and g xhat; channel g Cg + i's
// go to k at `to` + i.
template <class T>
void group_grad_consts(idx g, idx Cg, double count, double mean, double r, const double* gamma, const double* sd,
                       const double* sdx, SampleConsts<T>& k, idx to) {
  double sum_g = 0, sum_gx = 0;
  for (idx c = g * Cg; c < (g + 1) * Cg; ++c) {
    const double w = gamma ? gamma[c] : 1.0;
    sum_g += w * sd[c];
    sum_gx += w * sdx[c];
  }
  sum_gx *= r;
  const double k_xmu = -(r * (r * sum_gx) / count), k_one = -(r * sum_g / count);  // as batch norm's grad_k_xmu
  const T hi = static_cast<T>(mean), k_xmu_t = static_cast<T>(k_xmu), k_one_t = folded(k_one, mean, hi, k_xmu);
  for (idx c = g * Cg, i = to; c < (g + 1) * Cg; ++c, ++i) {  // as ChannelConsts::gradient
    k.hi[i] = hi;
    k.a[i] = static_cast<T>((gamma ? gamma[c] : 1.0) * r);
    k.b[i] = k_xmu_t;
    k.c[i] = k_one_t;
  }
}

// Groups [t0, t1) of float32 (N, C) data (one value a channel), batch groups at a time: the sums of the batch's
// channels, one row of SumsRows (each channel's sums are of its one value, the same whether its group's row or the
// batch's is summed), each group's constants (group_grad_consts), then dx over the batch's channels as one
// channels-last row.
void backward_rows(const float* dy, const float* x, float* dx, const GroupShape& s, const double* mean,
                   const double* rstd, const double* gamma, double* sum_dy, double* sum_dy_xmu, idx t0, idx t1,
                   idx batch, bool stream) {
  const idx Cg = s.C / s.G;
  const double count = static_cast<double>(std::max<idx>(Cg, 1));
  SampleConsts<float> row(batch * Cg + kLanes);  // the batch's constants, as one row
  std::vector<double> group_mean(static_cast<size_t>(batch * Cg));  // each channel's group mean (SumsRows)
  for (idx b0 = t0; b0 < t1; b0 += batch) {
    const idx b1 = std::min(t1, b0 + batch), n = (b1 - b0) * Cg;
    // group t's channels are t * Cg ... of the (N, C) sums: the batch's are consecutive
    double *sd = sum_dy + b0 * Cg, *sdx = sum_dy_xmu + b0 * Cg;
    for (idx t = b0; t < b1; ++t)
      for (idx i = 0; i < Cg; ++i) group_mean[(t - b0) * Cg + i] = mean[t];
    std::fill(sd, sd + n, 0.0);
    std::fill(sdx, sdx + n, 0.0);
    isa_call<SumsRows<float>>(dy + b0 * Cg, x + b0 * Cg, idx(1), n, static_cast<const double*>(group_mean.data()),
                              sd, sdx);
    for (idx t = b0; t < b1; ++t) {
      const idx sample = t / s.G;
      group_grad_consts(t % s.G, Cg, count, mean[t], rstd[t], gamma, sum_dy + sample * s.C,
                        sum_dy_xmu + sample * s.C, row, (t - b0) * Cg);
    }
    isa_call<GradChannelsLast<float>>(dy + b0 * Cg, x + b0 * Cg, dx + b0 * Cg, n, n, row.hi.data(), row.a.data(),
                                      row.b.data(), row.c.data(), stream);
  }
}

template <class T, class Op>
void backward_contiguous(const T* dy, const T* x, T* dx, const GroupShape& s, const double* mean, const double* rstd,
                         const double* gamma, const double* beta, act::Params<compute_t<T>> p, double* sum_dy,
                         double* sum_dy_xmu, int num_threads) {
  using V = compute_t<T>;
  constexpr bool post = !std::is_same_v<Op, act::Identity>;
  const idx Cg = s.C / s.G, len = Cg * s.Q;
  const double count = static_cast<double>(std::max<idx>(len, 1));
  const bool stream = stream_out<T>(s.N * s.G * len, 5, false);
  const idx batch = batch_groups<T>(len, s.Q);
  parallel_for(s.N * s.G, std::max<idx>(1, kElementwiseGrain / std::max<idx>(1, len)), num_threads,
               [&](idx t0, idx t1) {
    if constexpr (std::is_same_v<T, float> && !post) {
      if (s.Q == 1) {  // float32, one value a channel ((N, C) data): a batch of groups as one channels-last row
        backward_rows(dy, x, dx, s, mean, rstd, gamma, sum_dy, sum_dy_xmu, t0, t1, batch, stream);
        return;
      }
    }
    SampleConsts<V> k(s.C), z(post ? Cg : 0), kg(0);  // kg: one group's, as a channels-last row
    std::vector<double> group_mean(static_cast<size_t>(Cg));  // the group's mean, once per channel (SumsRuns)
    V* dz = post ? thread_scratch<V>(static_cast<size_t>(len)) : nullptr;  // the group's post'(z) dy
    for (idx t = t0; t < t1; ++t) {
      const idx n = t / s.G, g = t % s.G;
      double* sd = sum_dy + n * s.C;
      double* sdx = sum_dy_xmu + n * s.C;
      // The group's sums and dx from its gradient g (dy, or dz = post'(z) dy) and x, stored as X: the storage
      // itself (narrow storage widened in registers), or widened into L1 for the post-op.
      const auto sums_and_dx = [&](auto* g_x, auto* x_x) {
        using X = std::remove_const_t<std::remove_pointer_t<decltype(g_x)>>;
        const idx c0 = g * Cg;  // the group's channels; their runs of Q values lie one after another
        // the group's runs in one call each way (a call per run of 196 values was most of the backward's time:
        // 64x256x14x14 float32, GroupNorm(32), 1 thread, 54% of the samples for 0.5 ms of vector work in 3.6 ms)
        for (idx i = 0; i < Cg; ++i) {
          sd[c0 + i] = sdx[c0 + i] = 0;
          group_mean[i] = mean[t];
        }
        // float32 with one value a channel ((N, C) data): the group's channels as one channels-last row, the same
        // sums and values as runs of one value give, without a call's set-up per value
        if constexpr (std::is_same_v<T, float> && std::is_same_v<X, float>) {
          if (s.Q == 1) {
            isa_call<SumsRows<X>>(g_x, x_x, idx(1), Cg, static_cast<const double*>(group_mean.data()), sd + c0,
                                  sdx + c0);
            group_grad_consts(g, Cg, count, mean[t], rstd[t], gamma, sd, sdx, k, g * Cg);
            // a row of Cg values reads kLanes constants past its channels but never uses them
            const auto group_row = [&](const std::vector<V>& all, std::vector<V>& row) {
              row.resize(static_cast<std::size_t>(Cg + kLanes));  // allocated once
              std::copy(all.begin() + c0, all.begin() + c0 + Cg, row.begin());
            };
            group_row(k.hi, kg.hi), group_row(k.a, kg.a), group_row(k.b, kg.b), group_row(k.c, kg.c);
            isa_call<GradChannelsLast<T>>(g_x, x_x, dx + t * len, Cg, Cg, kg.hi.data(), kg.a.data(), kg.b.data(),
                                          kg.c.data(), stream);
            return;
          }
        }
        isa_call<SumsRuns<X>>(g_x, x_x, idx(0), Cg, Cg, s.Q, static_cast<const double*>(group_mean.data()), sd + c0,
                              sdx + c0);
        group_grad_consts(g, Cg, count, mean[t], rstd[t], gamma, sd, sdx, k, g * Cg);
        isa_call<GradRuns<T, X>>(g_x, x_x, dx + t * len, idx(0), Cg, Cg, s.Q, k.hi.data() + c0, k.a.data() + c0,
                                 k.b.data() + c0, k.c.data() + c0, stream);
      };
      if constexpr (post) {
        const V* xg = widened<Scratch::x>(x + t * len, len);
        for (idx i = 0; i < Cg; ++i) z.set_affine(i, mean[t], rstd[t], gamma, beta, g * Cg + i);  // z as forward
        isa_call<PostOpGradRuns<V, Op>>(widened<Scratch::dy>(dy + t * len, len), xg, dz, idx(0), Cg, Cg, s.Q,
                                        z.hi.data(), z.a.data(), z.b.data(), p);
        sums_and_dx(static_cast<const V*>(dz), xg);
      } else {
        sums_and_dx(dy + t * len, x + t * len);
      }
    }
    if (stream) stream_fence();
  });
}

template <class T, class Op>
void backward_interleaved(const T* dy, const T* x, T* dx, const GroupShape& s, const double* mean, const double* rstd,
                          const double* gamma, const double* beta, act::Params<compute_t<T>> p, double* sum_dy,
                          double* sum_dy_xmu, int num_threads) {
  using V = compute_t<T>;
  constexpr bool post = !std::is_same_v<Op, act::Identity>;
  const idx C = s.C, Q = s.Q, L = C * Q, Cg = C / s.G, S = s.P * L;
  const double count = static_cast<double>(std::max<idx>(Cg * s.P * Q, 1));
  const bool stream = stream_out<T>(s.N * S, 5, false);
  // With a post-op, dz = post'(z) dy is computed a piece of rows at a time for the sums.  An expensive post-op
  // (or runs, Q > 1) keeps the sample's dz for the second pass (L2); a cheap one computes it again there, in L1 (a
  // second full-size stream costs more than the arithmetic).
  const bool keep = post && (Q != 1 || act::compute_bound<Op>::value);
  const idx step = sum_rows(L);
  parallel_for(s.N, 1, num_threads, [&](idx n0, idx n1) {
    std::vector<double> mean_c(C);
    SampleConsts<V> k(C), z(post ? C : 0);
    V* dz = post ? thread_scratch<V>(static_cast<size_t>(keep ? S : std::max(step, piece_rows(C)) * L)) : nullptr;
    for (idx n = n0; n < n1; ++n) {
      const T *dys = dy + n * S, *xs = x + n * S;
      T* dxs = dx + n * S;
      double* sd = sum_dy + n * C;
      double* sdx = sum_dy_xmu + n * C;
      for (idx c = 0; c < C; ++c) {
        mean_c[c] = mean[n * s.G + c / Cg];
        sd[c] = sdx[c] = 0;
      }
      if constexpr (post) {  // z as the forward computed it
        for (idx c = 0; c < C; ++c) z.set_affine(c, mean_c[c], rstd[n * s.G + c / Cg], gamma, beta, c);
      }
      for (idx p0 = 0; p0 < s.P; p0 += step) {  // per-channel sums, a piece of rows at a time
        const idx rows = std::min(step, s.P - p0), m = rows * L;
        const V* xw = widened<Scratch::x>(xs + p0 * L, m);
        const V* g = widened<Scratch::dy>(dys + p0 * L, m);
        if constexpr (post) {
          V* block = keep ? dz + p0 * L : dz;
          if (Q == 1)
            isa_call<PostOpGradRows<V, Op>>(g, xw, block, rows, C, z.hi.data(), z.a.data(), z.b.data(), p);
          else
            isa_call<PostOpGradRuns<V, Op>>(g, xw, block, idx(0), rows * C, C, Q, z.hi.data(), z.a.data(),
                                            z.b.data(), p);
          g = block;
        }
        rows_or_runs(
            rows, C, Q,
            [&] { isa_call<SumsRows<V>>(g, xw, rows, C, static_cast<const double*>(mean_c.data()), sd, sdx); },
            [&](idx row, idx c) {
              const idx at = (row * C + c) * Q;
              isa_call<SumsRun<V>>(g + at, xw + at, Q, mean_c[c], &sd[c], &sdx[c]);
            });
      }
      for (idx g = 0; g < s.G; ++g)
        group_grad_consts(g, Cg, count, mean[n * s.G + g], rstd[n * s.G + g], gamma, sd, sdx, k, g * Cg);
      rows_or_runs(
          s.P, C, Q,
          [&] {
            // From dy (or the kept dz, for wide storage) and x where they are, written out from registers
            if (!post || (keep && !is_narrow<T>)) {
              for (auto* v : {&k.hi, &k.a, &k.b, &k.c}) extend_periodic(*v, C);
              const T* g = dys;
              if constexpr (!is_narrow<T>) g = post ? dz : dys;  // V is T
              isa_call<GradChannelsLast<T>>(g, xs, dxs, s.P * C, C, k.hi.data(), k.a.data(), k.b.data(), k.c.data(),
                                            stream);
              return;
            }
            write_rows(dxs, 0, s.P, C, stream, [&](idx r, idx rows, V* out) {
              const idx m = rows * C;
              const V* xw = widened<Scratch::x>(xs + r * C, m);
              const V* g = keep ? dz + r * C : widened<Scratch::dy>(dys + r * C, m);
              if (post && !keep) {
                isa_call<PostOpGradRows<V, Op>>(g, xw, dz, rows, C, z.hi.data(), z.a.data(), z.b.data(), p);
                g = dz;
              }
              isa_call<GradRows<V>>(g, xw, out, rows, C, k.hi.data(), k.a.data(), k.b.data(), k.c.data());
            });
          },
          [&](idx row, idx c) {  // keep holds dz with a post-op
            const idx at = (row * C + c) * Q;
            const V* g = post ? dz + at : widened<Scratch::dy>(dys + at, Q);
            V* out = compute_target(dxs + at, Q);
            isa_call<GradRun<V>>(g, widened<Scratch::x>(xs + at, Q), out, Q, k.hi[c], k.a[c], k.b[c], k.c[c]);
            narrow_into(out, dxs + at, Q);
          });
    }
    if (stream) stream_fence();
  });
}

}  // namespace

template <class T>
void group_norm_forward(const T* x, T* y, const GroupShape& s, double eps, const double* gamma, const double* beta,
                        double* mean, double* rstd, int num_threads, const PostOp& post) {
  if (s.N * s.P * s.C * s.Q == 0) {  // no values: the statistics of nothing, and no work along the other axes
    std::fill(mean, mean + s.N * s.G, std::nan(""));
    std::fill(rstd, rstd + s.N * s.G, std::nan(""));
    return;
  }
  const act::Params<compute_t<T>> p = post.params<compute_t<T>>();
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
  if (s.N * s.P * s.C * s.Q == 0) {  // sums over nothing
    std::fill(sum_dy, sum_dy + s.N * s.C, 0.0);
    std::fill(sum_dy_xmu, sum_dy_xmu + s.N * s.C, 0.0);
    return;
  }
  const act::Params<compute_t<T>> p = post.params<compute_t<T>>();
  visit_post_op(post, [&](auto op) {
    using Op = decltype(op);
    if (s.P == 1)
      backward_contiguous<T, Op>(dy, x, dx, s, mean, rstd, gamma, beta, p, sum_dy, sum_dy_xmu, num_threads);
    else
      backward_interleaved<T, Op>(dy, x, dx, s, mean, rstd, gamma, beta, p, sum_dy, sum_dy_xmu, num_threads);
  });
}

#define FASTNORM_INSTANTIATE(T)                                                                                 \
  template void group_norm_forward<T>(const T*, T*, const GroupShape&, double, const double*, const double*,      \
                                      double*, double*, int, const PostOp&);                                    \
  template void group_norm_backward<T>(const T*, const T*, T*, const GroupShape&, const double*, const double*,   \
                                       const double*, double*, double*, int, const PostOp&, const double*);
FASTNORM_FOR_EACH_STORAGE(FASTNORM_INSTANTIATE)
#undef FASTNORM_INSTANTIATE

}  // namespace fastnorm
