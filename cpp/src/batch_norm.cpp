#include "fastnorm/batch_norm.h"

#include <algorithm>
#include <vector>

#include "fastnorm/blocked.h"
#include "fastnorm/channel_loops.h"
#include "fastnorm/channels.h"
#include "fastnorm/parallel.h"

namespace fastnorm {

using namespace loops;

template <class T>
void bn_apply(const T* x, T* y, idx A, idx C, idx B, const double* mean, const double* scale, const double* shift,
              int num_threads, const PostOp& post) {
  const ChannelConsts<T> k(C, mean, scale, shift, nullptr);
  const act::Params<T> p = post.params<T>();
  visit_post_op(post, [&](auto op) {
    using Op = decltype(op);
    const bool stream = stream_out<T>(A * C * B, act::compute_bound<Op>::value);
    if (B == 1) {
      parallel_for(A, rows_per_task(C), num_threads, [&](idx r0, idx r1) {
        write_rows(y, r0, r1, C, stream, [&](idx r, idx rows, T* dst) {
          isa_call<ApplyRows<T, Op>>(x + r * C, dst, rows, C, k.mean_hi.data(), k.mean_lo.data(), k.a.data(),
                                     k.b.data(), p);
        });
      });
      return;
    }
    parallel_for(A * C, rows_per_task(B), num_threads, [&](idx r0, idx r1) {
      if (!stream) {  // one dispatch for all the task's runs
        isa_call<ApplyRuns<T, Op>>(x, y, r0, r1, C, B, k.mean_hi.data(), k.mean_lo.data(), k.a.data(),
                                   k.b.data(), p);
        return;
      }
      T* piece = stream_piece<T>(stream, B);
      for (idx r = r0; r < r1; ++r) {
        const idx c = r % C;
        write_run(y, r, B, piece, [&](idx i, idx n, T* dst) {
          isa_call<ApplyRun<T, Op>>(x + r * B + i, dst, n, k.mean_hi[c], k.mean_lo[c], k.a[c], k.b[c], p);
        });
      }
      stream_fence();
    });
  });
}

namespace {

// With a post-op, the backward works on dz = post'(z) dy, z as the forward had it, computed piece by piece into
// an L1 scratch block just before use: one run of B values (B > 1), or a few rows of C (B == 1).
template <class T>
struct PostOpPieces {
  const PostOp& post;
  const ChannelConsts<T>& z;
  idx C, B;
  idx rows_per_piece() const { return std::max<idx>(1, 4096 / std::max<idx>(C, 1)); }
  // dz for rows [a0, a1) (B == 1) into dz
  void rows(const T* dy, const T* x, T* dz, idx a0, idx a1) const {
    const act::Params<T> p = post.params<T>();
    visit_post_op(post, [&](auto op) {
      isa_call<PostOpGradRows<T, decltype(op)>>(dy + a0 * C, x + a0 * C, dz, a1 - a0, C, z.mean_hi.data(),
                                                 z.mean_lo.data(), z.a.data(), z.b.data(), p);
    });
  }
  // dz for run r (B > 1) into dz
  void run(const T* dy, const T* x, T* dz, idx r) const {
    const act::Params<T> p = post.params<T>();
    visit_post_op(post, [&](auto op) {
      isa_call<PostOpGradRuns<T, decltype(op)>>(dy, x, dz, r, r + 1, C, B, z.mean_hi.data(), z.mean_lo.data(),
                                                 z.a.data(), z.b.data(), p);
    });
  }
};

}  // namespace

template <class T>
void bn_input_grad(const T* dy, const T* x, T* dx, idx A, idx C, idx B, const double* mean, const double* k_dy,
                   const double* k_xmu, const double* k_one, int num_threads, const PostOp& post,
                   const double* scale, const double* shift) {
  const ChannelConsts<T> k(C, mean, k_dy, k_xmu, k_one);
  if (post.active()) {
    const ChannelConsts<T> z(C, mean, scale, shift, nullptr);
    const PostOpPieces<T> pieces{post, z, C, B};
    if (B == 1) {
      const idx step = pieces.rows_per_piece();
      parallel_for(A, rows_per_task(C), num_threads, [&](idx r0, idx r1) {
        T* dz = thread_scratch<T>(static_cast<size_t>(step * C));
        for (idx a = r0; a < r1; a += step) {
          const idx e = std::min(r1, a + step);
          pieces.rows(dy, x, dz, a, e);
          isa_call<GradRows<T>>(static_cast<const T*>(dz), x + a * C, dx + a * C, e - a, C, k.mean_hi.data(),
                                k.mean_lo.data(), k.a.data(), k.b.data(), k.c.data());
        }
      });
      return;
    }
    parallel_for(A * C, rows_per_task(B), num_threads, [&](idx r0, idx r1) {
      T* dz = thread_scratch<T>(static_cast<size_t>(B));
      for (idx r = r0; r < r1; ++r) {
        const idx c = r % C;
        pieces.run(dy, x, dz, r);
        isa_call<GradRun<T>>(static_cast<const T*>(dz), x + r * B, dx + r * B, B, k.mean_hi[c], k.mean_lo[c],
                             k.a[c], k.b[c], k.c[c]);
      }
    });
    return;
  }
  const bool stream = stream_out<T>(A * C * B, false);
  if (B == 1) {
    parallel_for(A, rows_per_task(C), num_threads, [&](idx r0, idx r1) {
      write_rows(dx, r0, r1, C, stream, [&](idx r, idx rows, T* dst) {
        isa_call<GradRows<T>>(dy + r * C, x + r * C, dst, rows, C, k.mean_hi.data(), k.mean_lo.data(), k.a.data(),
                              k.b.data(), k.c.data());
      });
    });
    return;
  }
  parallel_for(A * C, rows_per_task(B), num_threads, [&](idx r0, idx r1) {
    if (!stream) {  // one dispatch for all the task's runs
      isa_call<GradRuns<T>>(dy, x, dx, r0, r1, C, B, k.mean_hi.data(), k.mean_lo.data(), k.a.data(), k.b.data(),
                            k.c.data());
      return;
    }
    T* piece = stream_piece<T>(stream, B);
    for (idx r = r0; r < r1; ++r) {
      const idx c = r % C;
      write_run(dx, r, B, piece, [&](idx i, idx n, T* dst) {
        isa_call<GradRun<T>>(dy + r * B + i, x + r * B + i, dst, n, k.mean_hi[c], k.mean_lo[c], k.a[c], k.b[c],
                             k.c[c]);
      });
    }
    stream_fence();
  });
}

template <class T>
void bn_grad_sums(const T* dy, const T* x, idx A, idx C, idx B, const double* mean, double* sum_dy,
                  double* sum_dy_xmu, int num_threads, const PostOp& post, const double* scale,
                  const double* shift) {
  // Tasks of about one grain each keep per-channel partial sums; they are added in task order afterwards.  With
  // a post-op, the sums are of dz, piece by piece, instead of dy (same order).
  const idx row = C * B;
  const idx task_rows = rows_per_task(B == 1 ? C : B * C);
  const idx tasks = A == 0 ? 0 : (A + task_rows - 1) / task_rows;
  std::vector<double> part_dy(static_cast<size_t>(tasks * C), 0.0), part_dyx(static_cast<size_t>(tasks * C), 0.0);
  const ChannelConsts<T> z(post.active() ? C : 0, mean, scale, shift, nullptr);
  const PostOpPieces<T> pieces{post, z, C, B};
  parallel_for(tasks, 1, num_threads, [&](idx t0, idx t1) {
    const idx step = pieces.rows_per_piece();
    T* dz = post.active() ? thread_scratch<T>(static_cast<size_t>(B == 1 ? step * C : B)) : nullptr;
    for (idx t = t0; t < t1; ++t) {
      double* pd = part_dy.data() + t * C;
      double* px = part_dyx.data() + t * C;
      const idx r0 = t * task_rows, r1 = std::min(A, (t + 1) * task_rows);
      if (!post.active()) {
        if (B == 1)
          isa_call<SumsRows<T>>(dy + r0 * row, x + r0 * row, r1 - r0, C, mean, pd, px);
        else
          isa_call<SumsRuns<T>>(dy, x, r0 * C, r1 * C, C, B, mean, pd, px);
      } else if (B == 1) {
        for (idx a = r0; a < r1; a += step) {
          const idx e = std::min(r1, a + step);
          pieces.rows(dy, x, dz, a, e);
          isa_call<SumsRows<T>>(static_cast<const T*>(dz), x + a * C, e - a, C, mean, pd, px);
        }
      } else {
        for (idx r = r0 * C; r < r1 * C; ++r) {
          const idx c = r % C;
          pieces.run(dy, x, dz, r);
          isa_call<SumsRun<T>>(static_cast<const T*>(dz), x + r * B, B, mean[c], pd + c, px + c);
        }
      }
    }
  });
  for (idx c = 0; c < C; ++c) sum_dy[c] = sum_dy_xmu[c] = 0;
  for (idx t = 0; t < tasks; ++t)
    for (idx c = 0; c < C; ++c) {
      sum_dy[c] += part_dy[t * C + c];
      sum_dy_xmu[c] += part_dyx[t * C + c];
    }
}

namespace {

// Channels [c0, c1) of the training backward, their runs strided by C * B: the sums of dy and dy (x - mean) first,
// added as bn_grad_sums adds them (runs into a partial per task of task_rows rows, the partials in task order:
// the same bits), then dx = k_dy dy + k_xmu (x - mean) + k_one with the constants batch_norm_backward computes.
// A few neighbouring channels at a time make each row's piece a longer contiguous stream.
template <class T>
struct ChannelsBackward {
  static FASTNORM_INLINE void run(const T* dy, const T* x, T* dx, idx A, idx C, idx B, idx c0, idx c1,
                                  idx task_rows, const double* mean, const double* rstd, const double* k_dy,
                                  double* sum_dy, double* sum_dy_xmu, T* piece) {
    const idx stride = C * B;
    for (idx c = c0; c < c1; ++c) sum_dy[c] = sum_dy_xmu[c] = 0;
    double part_dy[kMaxBlock], part_dyx[kMaxBlock];
    for (idx a0 = 0; a0 < A; a0 += task_rows) {
      for (idx c = c0; c < c1; ++c) part_dy[c - c0] = part_dyx[c - c0] = 0;
      for (idx a = a0; a < std::min(A, a0 + task_rows); ++a) {
        for (idx c = c0; c < c1; ++c) {
          const idx at = a * stride + c * B;
          SumsRun<T>::run(dy + at, x + at, B, mean[c], part_dy + (c - c0), part_dyx + (c - c0));
        }
      }
      for (idx c = c0; c < c1; ++c) {
        sum_dy[c] += part_dy[c - c0];
        sum_dy_xmu[c] += part_dyx[c - c0];
      }
    }
    const double count = static_cast<double>(A * B);
    T hi[kMaxBlock], lo[kMaxBlock], kd[kMaxBlock], kx[kMaxBlock], k1[kMaxBlock];
    for (idx c = c0; c < c1; ++c) {
      const idx j = c - c0;
      hi[j] = static_cast<T>(mean[c]);
      lo[j] = static_cast<T>(mean[c] - static_cast<double>(hi[j]));
      kd[j] = static_cast<T>(k_dy[c]);
      kx[j] = static_cast<T>(-k_dy[c] * rstd[c] * rstd[c] * sum_dy_xmu[c] / count);
      k1[j] = static_cast<T>(-k_dy[c] * sum_dy[c] / count);
    }
    for (idx a = 0; a < A; ++a) {
      for (idx c = c0; c < c1; ++c) {
        const idx at = a * stride + c * B, j = c - c0;
        if (piece == nullptr) {
          GradRun<T>::run(dy + at, x + at, dx + at, B, hi[j], lo[j], kd[j], kx[j], k1[j]);
          continue;
        }
        for (idx i = 0; i < B; i += kStreamPiece) {  // streamed out through an L1 piece (write_run)
          const idx n = std::min(kStreamPiece, B - i);
          GradRun<T>::run(dy + at + i, x + at + i, piece, n, hi[j], lo[j], kd[j], kx[j], k1[j]);
          stream_store(static_cast<const T*>(piece), dx + at + i, n);
        }
      }
    }
  }
  static constexpr idx kMaxBlock = 8;
};

}  // namespace

template <class T>
bool bn_backward_by_channel(const T* dy, const T* x, T* dx, idx A, idx C, idx B, const double* mean,
                            const double* rstd, const double* k_dy, double* sum_dy, double* sum_dy_xmu,
                            int num_threads) {
  // The channels a task works on must stay in L2 (1 MiB of dy and x: any current x86 server core's L2) between
  // its two loops, and every thread needs a channel.
  constexpr idx kL2Bytes = idx(1) << 20;
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
  const bool stream = stream_out<T>(A * C * B, false);
  parallel_for(blocks, grain, num_threads, [&](idx b0, idx b1) {
    T* piece = stream_piece<T>(stream, B);
    for (idx b = b0; b < b1; ++b) {
      isa_call<ChannelsBackward<T>>(dy, x, dx, A, C, B, b * block, std::min(C, (b + 1) * block), task_rows,
                                    mean, rstd, k_dy, sum_dy, sum_dy_xmu, piece);
    }
    if (stream) stream_fence();
  });
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
                                          const double*, double*, double*, int);
FASTNORM_INSTANTIATE(float)
FASTNORM_INSTANTIATE(double)
#undef FASTNORM_INSTANTIATE

}  // namespace fastnorm
