#include "fastnorm/batch_norm.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <vector>

#include "fastnorm/blocked.h"
#include "fastnorm/channel_loops.h"
#include "fastnorm/run_moments.h"
#include "fastnorm/channels.h"
#include "fastnorm/moments.h"
#include "fastnorm/parallel.h"

namespace fastnorm {

using namespace loops;

// Narrow storage (float16, bfloat16): runs that are not streamed are read and written in registers by ApplyRun /
// GradRun (narrow.h); the rest goes through the float bodies a piece at a time (scratch.h: widened,
// compute_target, narrow_into): rows of a task, streamed runs, the gradient sums.  V is the type computed in.

template <class T>
void bn_apply(const T* x, T* y, idx A, idx C, idx B, const double* mean, const double* scale, const double* shift,
              int num_threads, const PostOp& post) {
  using V = compute_t<T>;
  const auto k = ChannelConsts<V>::affine(C, mean, scale, shift);
  const act::Params<V> p = post.params<V>();
  visit_post_op(post, [&](auto op) {
    using Op = decltype(op);
    const bool stream = stream_out<T>(A * C * B, 2, act::compute_bound<Op>::value);
    if (B == 1) {
      parallel_for(A, rows_per_task(C), num_threads, [&](idx r0, idx r1) {
        isa_call<ApplyChannelsLast<T, Op>>(x + r0 * C, y + r0 * C, (r1 - r0) * C, C, k.mean_hi.data(), k.a.data(),
                                           k.b.data(), p, stream);
        if (stream) stream_fence();
      });
      return;
    }
    parallel_for(A * C, rows_per_task(B), num_threads, [&](idx r0, idx r1) {  // one dispatch for the task's runs
      isa_call<ApplyRuns<T, Op>>(x, y, r0, r1, C, B, k.mean_hi.data(), k.a.data(), k.b.data(), p, stream);
      if (stream) stream_fence();
    });
  });
}

namespace {

// The per-channel constants of training, in one place: the one-pass kernels and the two-pass paths around them
// (bn_forward_train, bn_backward_train) must give the same bits.
double batch_rstd(double m2, double count, double eps) { return 1.0 / std::sqrt(m2 / count + eps); }
// dx = k_dy dy + k_xmu (x - mean) + k_one
// (rstd sum_dy_xmu first: near 1 / sqrt(count) in size, so no intermediate leaves the range of doubles before the
// result does, where the spread of x is up to about 1e150)
double grad_k_xmu(double k_dy, double rstd, double sum_dy_xmu, double count) {
  return -(k_dy * (rstd * (rstd * sum_dy_xmu))) / count;
}
double grad_k_one(double k_dy, double sum_dy, double count) { return -k_dy * sum_dy / count; }

// With a post-op, the backward works on dz = post'(z) dy, z as the forward had it, computed piece by piece into
// an L1 scratch block just before use: one run of B values (B > 1), or a few rows of C (B == 1).  dy and x are
// the piece's (widened) values.
template <class V>
struct PostOpPieces {
  const PostOp& post;
  const ChannelConsts<V>& z;
  idx C, B;
  // dz for `rows` rows (B == 1) into dz
  void rows(const V* dy, const V* x, V* dz, idx rows) const {
    const act::Params<V> p = post.params<V>();
    visit_post_op(post, [&](auto op) {
      isa_call<PostOpGradRows<V, decltype(op)>>(dy, x, dz, rows, C, z.mean_hi.data(), z.a.data(), z.b.data(), p);
    });
  }
  // dz for one run of channel c (B > 1) into dz
  void run(const V* dy, const V* x, V* dz, idx c) const {
    const act::Params<V> p = post.params<V>();
    visit_post_op(post, [&](auto op) {
      isa_call<PostOpGradRun<V, decltype(op)>>(dy, x, dz, B, z.mean_hi[c], z.a[c], z.b[c], p);
    });
  }
};

}  // namespace

template <class T>
void bn_input_grad(const T* dy, const T* x, T* dx, idx A, idx C, idx B, const double* mean, const double* k_dy,
                   const double* k_xmu, const double* k_one, int num_threads, const PostOp& post,
                   const double* scale, const double* shift) {
  using V = compute_t<T>;
  const auto k = ChannelConsts<V>::gradient(C, mean, k_dy, k_xmu, k_one);
  if (post.active()) {
    const auto z = ChannelConsts<V>::affine(C, mean, scale, shift);
    const PostOpPieces<V> pieces{post, z, C, B};
    if (B == 1) {
      const idx step = piece_rows(C);
      parallel_for(A, rows_per_task(C), num_threads, [&](idx r0, idx r1) {
        V* dz = thread_scratch<V>(static_cast<size_t>(step * C));
        for (idx a = r0; a < r1; a += step) {
          const idx rows = std::min(r1, a + step) - a, n = rows * C;
          const V* xw = widened<Scratch::x>(x + a * C, n);
          pieces.rows(widened<Scratch::dy>(dy + a * C, n), xw, dz, rows);
          V* out = compute_target(dx + a * C, n);
          isa_call<GradRows<V>>(static_cast<const V*>(dz), xw, out, rows, C, k.mean_hi.data(), k.a.data(),
                                k.b.data(), k.c.data());
          narrow_into(out, dx + a * C, n);
        }
      });
      return;
    }
    const bool stream = stream_out<T>(A * C * B, 3, false);
    parallel_for(A * C, rows_per_task(B), num_threads, [&](idx r0, idx r1) {
      V* dz = thread_scratch<V>(static_cast<size_t>(B));
      for (idx r = r0; r < r1; ++r) {
        const idx c = r % C;
        const V* xw = widened<Scratch::x>(x + r * B, B);
        pieces.run(widened<Scratch::dy>(dy + r * B, B), xw, dz, c);
        isa_call<GradRun<T, V>>(static_cast<const V*>(dz), xw, dx + r * B, B, k.mean_hi[c], k.a[c], k.b[c],
                                k.c[c], stream);
      }
      if (stream) stream_fence();
    });
    return;
  }
  const bool stream = stream_out<T>(A * C * B, 3, false);
  if (B == 1) {
    parallel_for(A, rows_per_task(C), num_threads, [&](idx r0, idx r1) {
      isa_call<GradChannelsLast<T>>(dy + r0 * C, x + r0 * C, dx + r0 * C, (r1 - r0) * C, C, k.mean_hi.data(),
                                    k.a.data(), k.b.data(), k.c.data(), stream);
      if (stream) stream_fence();
    });
    return;
  }
  parallel_for(A * C, rows_per_task(B), num_threads, [&](idx r0, idx r1) {  // one dispatch for the task's runs
    isa_call<GradRuns<T>>(dy, x, dx, r0, r1, C, B, k.mean_hi.data(), k.a.data(), k.b.data(), k.c.data(), stream);
    if (stream) stream_fence();
  });
}

template <class T>
void bn_grad_sums(const T* dy, const T* x, idx A, idx C, idx B, const double* mean, double* sum_dy,
                  double* sum_dy_xmu, int num_threads, const PostOp& post, const double* scale,
                  const double* shift) {
  using V = compute_t<T>;
  // Tasks of about one grain each keep per-channel partial sums; they are added in task order afterwards.  With
  // a post-op, the sums are of dz, piece by piece, instead of dy (same order).
  const idx row = C * B;
  const idx task_rows = rows_per_task(B == 1 ? C : B * C);
  const idx tasks = A == 0 ? 0 : (A + task_rows - 1) / task_rows;
  TaskPartials<2> partials(tasks, C);  // sums of dy, of dy (x - mean)
  const auto z = ChannelConsts<V>::affine(post.active() ? C : 0, mean, scale, shift);
  const PostOpPieces<V> pieces{post, z, C, B};
  const idx step = sum_rows(C);
  parallel_for(tasks, 1, num_threads, [&](idx t0, idx t1) {
    V* dz = post.active() ? thread_scratch<V>(static_cast<size_t>(B == 1 ? step * C : B)) : nullptr;
    for (idx t = t0; t < t1; ++t) {
      double* pd = partials.row(0, t);
      double* px = partials.row(1, t);
      const idx r0 = t * task_rows, r1 = std::min(A, (t + 1) * task_rows);
      if (B == 1) {  // rows, a piece at a time
        for (idx a = r0; a < r1; a += step) {
          const idx rows = std::min(r1, a + step) - a, n = rows * C;
          const V* g = widened<Scratch::dy>(dy + a * row, n);
          const V* xw = widened<Scratch::x>(x + a * row, n);
          if (post.active()) {
            pieces.rows(g, xw, dz, rows);
            g = dz;
          }
          isa_call<SumsRows<V>>(g, xw, rows, C, mean, pd, px);
        }
        continue;
      }
      if (!post.active()) {  // one dispatch for all the task's runs (narrow storage widened in registers)
        isa_call<SumsRuns<T>>(dy, x, r0 * C, r1 * C, C, B, mean, pd, px);
        continue;
      }
      for (idx r = r0 * C; r < r1 * C; ++r) {
        const idx c = r % C;
        const V* g = widened<Scratch::dy>(dy + r * B, B);
        const V* xw = widened<Scratch::x>(x + r * B, B);
        if (post.active()) {
          pieces.run(g, xw, dz, c);
          g = dz;
        }
        isa_call<SumsRun<V>>(g, xw, B, mean[c], pd + c, px + c);
      }
    }
  });
  partials.total({sum_dy, sum_dy_xmu}, num_threads);
}

namespace {

// Channels [c0, c1) of the training backward, their runs strided by C * B: the sums of dy and dy (x - mean) first,
// added as bn_grad_sums adds them (runs into a partial per task of task_rows rows, the partials in task order:
// the same bits), then dx = k_dy dy + k_xmu (x - mean) + k_one with the constants batch_norm_backward computes.
// A few neighbouring channels at a time make each row's piece a longer contiguous stream.
template <class T>
struct ChannelsBackward {
  static constexpr bool takes_isa = true;
  template <Isa I>
  static FASTNORM_INLINE void run(const T* dy, const T* x, T* dx, idx A, idx C, idx B, idx c0, idx c1,
                                  idx task_rows, const double* mean, const double* rstd, const double* k_dy,
                                  double* sum_dy, double* sum_dy_xmu, bool stream) {
    const idx stride = C * B;
    for (idx c = c0; c < c1; ++c) sum_dy[c] = sum_dy_xmu[c] = 0;
    double part_dy[kMaxBlock], part_dyx[kMaxBlock];
    for (idx a0 = 0; a0 < A; a0 += task_rows) {
      for (idx c = c0; c < c1; ++c) part_dy[c - c0] = part_dyx[c - c0] = 0;
      for (idx a = a0; a < std::min(A, a0 + task_rows); ++a) {
        for (idx c = c0; c < c1; ++c) {
          const idx at = a * stride + c * B;
          SumsRun<T>::template run<I>(dy + at, x + at, B, mean[c], part_dy + (c - c0), part_dyx + (c - c0));
        }
      }
      for (idx c = c0; c < c1; ++c) {
        sum_dy[c] += part_dy[c - c0];
        sum_dy_xmu[c] += part_dyx[c - c0];
      }
    }
    const double count = static_cast<double>(A * B);
    using V = compute_t<T>;
    V hi[kMaxBlock], kd[kMaxBlock], kx[kMaxBlock], k1[kMaxBlock];
    for (idx c = c0; c < c1; ++c) {  // grad_k_xmu / grad_k_one, ChannelConsts::gradient
      const idx j = c - c0;
      const double k_xmu = grad_k_xmu(k_dy[c], rstd[c], sum_dy_xmu[c], count);
      hi[j] = static_cast<V>(mean[c]);
      kd[j] = static_cast<V>(k_dy[c]);
      kx[j] = static_cast<V>(k_xmu);
      k1[j] = folded<V>(grad_k_one(k_dy[c], sum_dy[c], count), mean[c], hi[j], k_xmu);
    }
    for (idx a = 0; a < A; ++a) {
      for (idx c = c0; c < c1; ++c) {
        const idx at = a * stride + c * B, j = c - c0;
        GradRun<T>::template run<I>(dy + at, x + at, dx + at, B, hi[j], kd[j], kx[j], k1[j], stream);
      }
    }
  }
  static constexpr idx kMaxBlock = tuning::kBnMaxBlock;
};

}  // namespace

template <class T>
bool bn_backward_by_channel(const T* dy, const T* x, T* dx, idx A, idx C, idx B, const double* mean,
                            const double* rstd, const double* k_dy, double* sum_dy, double* sum_dy_xmu,
                            int num_threads) {
  // The channels a task works on must stay in L2 between its two loops (tuning.h), and every thread needs a
  // channel.  Narrow storage too, widened in registers in both loops (float16 32x64x56x56, 1 / 2 threads:
  // 2.34 -> 2.07 / 1.18 -> 0.93 ms; bfloat16 2.44 -> 2.50 / 1.25 -> 1.17).
  constexpr idx kL2Bytes = tuning::kBnBackwardL2Bytes;
  const idx channel_bytes = A * B * 2 * static_cast<idx>(sizeof(T));
  const idx threads = resolve_threads(num_threads);
  if (B <= 1 || A <= 0 || channel_bytes > kL2Bytes || C < threads) return false;
  const idx task_rows = rows_per_task(B * C);  // bn_grad_sums' tasks
  // Neighbouring channels together (their pieces of each row adjacent in memory: longer streams), as many as fit
  // while every thread still gets a block: 64 x 256 x 14 x 14 float32, 1 thread: 2.4 ms in two passes, 2.2 ms
  // one channel at a time, 1.8 ms in blocks of 4 to 8.
  const idx block = std::clamp<idx>(std::min(kL2Bytes / channel_bytes, C / threads), 1,
                                    ChannelsBackward<T>::kMaxBlock);
  const idx blocks = (C + block - 1) / block;
  const idx grain = std::max<idx>(1, kElementwiseGrain / (A * B * block));
  const bool stream = stream_out<T>(A * C * B, 5, false);
  parallel_for(blocks, grain, num_threads, [&](idx b0, idx b1) {
    for (idx b = b0; b < b1; ++b) {
      isa_call<ChannelsBackward<T>>(dy, x, dx, A, C, B, b * block, std::min(C, (b + 1) * block), task_rows,
                                    mean, rstd, k_dy, sum_dy, sum_dy_xmu, stream);
    }
    if (stream) stream_fence();
  });
  return true;
}

template <class T>
bool bn_forward_by_channel(const T* x, T* y, idx A, idx C, idx B, const double* gamma, const double* beta,
                           double eps, double* mean, double* m2, int num_threads, const PostOp& post) {
  using V = compute_t<T>;
  // A task's channels stay in L2 between their statistics and their normalization (as bn_backward_by_channel),
  // with room to spare (tuning.h).  Runs long enough for channel_moments to sum them in pieces (RunPieces), which
  // give the same bits here.  Narrow storage too, widened in registers for
  // each of the two loops (unlike the backward's scratch widening, this pays: float16 32x64x56x56, 1 thread,
  // 1.69 -> 1.35 ms; bfloat16 1.74 -> 1.68).
  constexpr idx kL2Bytes = tuning::kBnForwardL2Bytes, kMaxBlock = tuning::kBnMaxBlock;
  const idx channel_bytes = A * B * static_cast<idx>(sizeof(T));
  const idx threads = resolve_threads(num_threads);
  if (B < kMinRunMoments || A <= 0 || channel_bytes > kL2Bytes || C < threads) return false;
  const RunPieces pieces(A, C, B);
  const idx block = std::clamp<idx>(std::min(kL2Bytes / channel_bytes, C / threads), 1, kMaxBlock);
  const idx blocks = (C + block - 1) / block;
  const idx grain = std::max<idx>(1, kElementwiseGrain / (A * B * block));
  const double count = static_cast<double>(A * B);
  std::vector<V> hi(static_cast<size_t>(C)), scale(hi), shift(hi);
  const act::Params<V> p = post.params<V>();
  visit_post_op(post, [&](auto op) {
    using Op = decltype(op);
    const bool stream = stream_out<T>(A * C * B, 3, act::compute_bound<Op>::value);
    parallel_for(blocks, grain, num_threads, [&](idx b0, idx b1) {
      for (idx blk = b0; blk < b1; ++blk) {
        const idx c0 = blk * block, c1 = std::min(C, c0 + block);
        for (idx c = c0; c < c1; ++c) {  // the constants batch_norm computes from channel_moments' statistics
          const Moments m = RunPieces::merged(pieces.blocks, [&](idx k) { return pieces.block(x, c, k); });
          const double rstd = batch_rstd(m.m2, count, eps);
          mean[c] = m.mean;
          m2[c] = m.m2;
          affine_consts(m.mean, gamma ? gamma[c] * rstd : rstd, beta ? beta[c] : 0.0, &hi[c], &scale[c], &shift[c]);
        }
        for (idx a = 0; a < A; ++a)  // the block's piece of each row: one stream
          isa_call<ApplyRuns<T, Op>>(x, y, a * C + c0, a * C + c1, C, B, hi.data(), scale.data(), shift.data(), p,
                                     stream);
      }
      if (stream) stream_fence();
    });
  });
  return true;
}

namespace {
std::atomic<int> schedule_setting{static_cast<int>(BnSchedule::fastest)};
}  // namespace

BnSchedule bn_schedule() { return static_cast<BnSchedule>(schedule_setting.load(std::memory_order_relaxed)); }
void set_bn_schedule(BnSchedule schedule) {
  schedule_setting.store(static_cast<int>(schedule), std::memory_order_relaxed);
}

template <class T>
bool bn_forward_train(const T* x, T* y, idx A, idx C, idx B, const double* gamma, const double* beta, double eps,
                      double* mean, double* m2, int num_threads, const PostOp& post) {
  const BnSchedule schedule = bn_schedule();
  if (schedule != BnSchedule::two_pass &&
      bn_forward_by_channel(x, y, A, C, B, gamma, beta, eps, mean, m2, num_threads, post))
    return true;
  if (schedule == BnSchedule::by_channel) return false;
  channel_moments(x, A, C, B, mean, m2, num_threads);
  const double count = static_cast<double>(A * B);
  std::vector<double> scale(static_cast<size_t>(C)), shift(scale);
  for (idx c = 0; c < C; ++c) {
    const double rstd = batch_rstd(m2[c], count, eps);
    scale[c] = gamma ? gamma[c] * rstd : rstd;
    shift[c] = beta ? beta[c] : 0.0;
  }
  bn_apply(x, y, A, C, B, mean, scale.data(), shift.data(), num_threads, post);
  return true;
}

template <class T>
bool bn_backward_train(const T* dy, const T* x, T* dx, idx A, idx C, idx B, const double* mean, const double* rstd,
                       const double* gamma, const double* beta, double* sum_dy, double* sum_dy_xmu, int num_threads,
                       const PostOp& post) {
  const BnSchedule schedule = bn_schedule();
  const idx count = A * B;
  std::vector<double> k_dy(static_cast<size_t>(C)), k_xmu(k_dy), k_one(k_dy), shift(k_dy);
  for (idx c = 0; c < C; ++c) {
    k_dy[c] = gamma ? gamma[c] * rstd[c] : rstd[c];
    shift[c] = beta ? beta[c] : 0.0;
  }
  if (schedule != BnSchedule::two_pass && !post.active() && count > 0 &&
      bn_backward_by_channel(dy, x, dx, A, C, B, mean, rstd, k_dy.data(), sum_dy, sum_dy_xmu, num_threads))
    return true;
  if (schedule == BnSchedule::by_channel) return false;
  // a post-op's input z is recomputed with the forward's scale k_dy and shift beta
  bn_grad_sums(dy, x, A, C, B, mean, sum_dy, sum_dy_xmu, num_threads, post, k_dy.data(), shift.data());
  const double n = static_cast<double>(count);
  for (idx c = 0; c < C && count > 0; ++c) {
    k_xmu[c] = grad_k_xmu(k_dy[c], rstd[c], sum_dy_xmu[c], n);
    k_one[c] = grad_k_one(k_dy[c], sum_dy[c], n);
  }
  bn_input_grad(dy, x, dx, A, C, B, mean, k_dy.data(), k_xmu.data(), k_one.data(), num_threads, post, k_dy.data(),
                shift.data());
  return true;
}

#define FASTNORM_INSTANTIATE(T)                                                                                  \
  template void bn_apply<T>(const T*, T*, idx, idx, idx, const double*, const double*, const double*, int,     \
                            const PostOp&);                                                                      \
  template void bn_grad_sums<T>(const T*, const T*, idx, idx, idx, const double*, double*, double*, int,       \
                                const PostOp&, const double*, const double*);                                   \
  template void bn_input_grad<T>(const T*, const T*, T*, idx, idx, idx, const double*, const double*,           \
                                 const double*, const double*, int, const PostOp&, const double*, const double*); \
  template bool bn_backward_by_channel<T>(const T*, const T*, T*, idx, idx, idx, const double*, const double*,  \
                                          const double*, double*, double*, int);                                  \
  template bool bn_forward_by_channel<T>(const T*, T*, idx, idx, idx, const double*, const double*, double,     \
                                         double*, double*, int, const PostOp&);                                 \
  template bool bn_forward_train<T>(const T*, T*, idx, idx, idx, const double*, const double*, double, double*,    \
                                    double*, int, const PostOp&);                                                \
  template bool bn_backward_train<T>(const T*, const T*, T*, idx, idx, idx, const double*, const double*,          \
                                     const double*, const double*, double*, double*, int, const PostOp&);
FASTNORM_FOR_EACH_STORAGE(FASTNORM_INSTANTIATE)
#undef FASTNORM_INSTANTIATE

}  // namespace fastnorm
