#include "fastnorm/layer_norm.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "fastnorm/blocked.h"
#include "fastnorm/channel_loops.h"
#include "fastnorm/run_moments.h"
#include "fastnorm/channels.h"
#include "fastnorm/parallel.h"
#include "fastnorm/row_blocks.h"

namespace fastnorm {
namespace {

// A row's xhat = (x - mean) * rstd in T, as (x - hi) * rstd - lo: hi the mean rounded to T, lo the rest of the mean
// (loops::mean_rest) times rstd, computed in double: one fused multiply-add after the subtraction, as the channel
// kernels fold it (centering.h).
template <class T>
struct Centering {
  T hi, lo, rstd;
  Centering(double mean, double rstd64)
      : hi(static_cast<T>(mean)),
        lo(static_cast<T>(loops::mean_rest(mean, hi) * rstd64)),
        rstd(static_cast<T>(rstd64)) {}
  FASTNORM_INLINE T xhat(T x) const { return (x - hi) * rstd - lo; }
  // z = xhat * gamma + beta: the normalized row, as the forward and the post-op's backward both compute it
  FASTNORM_INLINE T normalized(T x, T gamma, T beta) const { return xhat(x) * gamma + beta; }
};

// RMS norm's statistic for a float row, the sum of x^2, from sums in float lanes: up to 8 blocks of kW values (8
// terms a lane), the lanes then added into kWide double lanes (the last values, fewer than a block, straight into
// those), folded pairwise at the end.  Squares cannot cancel: within about 10 * 2^-24 of the exact sum (DESIGN.md:
// float32 sums over a local chunk, accumulated in float64), rstd within 1e-8 relative of float64's.  The row's double
// moments (two conversions and four operations per value, one accumulator) cost as much as the normalization.
// No loop over the float lanes with a variable index: that would keep them in memory.  (Layer norm's statistics
// the same way, a pass for the mean and one around it, were no faster on rows of 1024 and 40% slower on rows of
// 128: it keeps the double moments.)
struct SquareSums {
  static constexpr bool takes_isa = true;
  static constexpr idx kW = 64, kBlocks = 8, kWide = 16;
  template <Isa I>
  static FASTNORM_INLINE void run(const float* x, idx n, double* sum) {
    double wide[kWide] = {};
    idx i = 0;
    while (i + kW <= n) {
      float a[kW] = {};
      const idx blocks = std::min<idx>(kBlocks, (n - i) / kW);
      for (idx k = 0; k < blocks; ++k, i += kW) {
#pragma omp simd
        for (idx j = 0; j < kW; ++j) a[j] += x[i + j] * x[i + j];
      }
#pragma omp simd
      for (idx j = 0; j < kWide; ++j)
        wide[j] += (double(a[j]) + double(a[j + kWide])) + (double(a[j + 2 * kWide]) + double(a[j + 3 * kWide]));
    }
    for (; i + kWide <= n; i += kWide) {
#pragma omp simd
      for (idx j = 0; j < kWide; ++j) wide[j] += double(x[i + j]) * x[i + j];
    }
    for (idx j = 0; i < n; ++i, ++j) wide[j] += double(x[i]) * x[i];
    for (idx w = kWide / 2; w > 0; w /= 2) {
#pragma omp simd
      for (idx j = 0; j < w; ++j) wide[j] += wide[j + w];
    }
    *sum = wide[0];
  }
};

// The sum of squares of a row of RMS norm where SquareSums takes it (float rows whose sum is finite and at least
// 2^-100, so that no square was denormal), else -1: the caller takes the double moments.
template <class T>
double square_sum(const T* x, idx n) {
  if constexpr (std::is_same_v<T, float>) {
    double s;
    isa_call<SquareSums>(x, n, &s);
    if (std::isfinite(s) && s >= 0x1p-100) return s;
  }
  return -1;
}

template <Isa I, class T, class Op>
struct ApplyBlock {  // y = post(z) for one block of a row
  static constexpr bool kElementwise = true;
  using C = compute_t<T>;
  const T* x;
  const C *gamma, *beta;
  Centering<C> k;
  act::Params<C> p;
  FASTNORM_INLINE void operator()(idx d, idx count, C* y) const {
    C px[kLanes], pg[kLanes], pb[kLanes];
    const C* xb = load_block<I>(x, d, count, px);
    const C* gb = load_param<I>(gamma, d, count, pg, DefaultBlock<C>::one);
    const C* bb = load_param<I>(beta, d, count, pb, DefaultBlock<C>::zero);
#pragma omp simd
    for (idx j = 0; j < kLanes; ++j) y[j] = Op::forward(k.normalized(xb[j], gb[j], bb[j]), p);
  }
};

template <class T, class Op>
struct ApplyRow {  // a row of y = post(z), stored to T
  static constexpr bool takes_isa = true;
  using C = compute_t<T>;
  template <Isa I>
  static FASTNORM_INLINE void run(const T* x, T* y, idx D, Centering<C> k, const C* gamma, const C* beta,
                                  act::Params<C> p, bool stream) {
    map_blocks<I>(y, D, stream, ApplyBlock<I, T, Op>{x, gamma, beta, k, p});
  }
};

// A row's mean (0 for RMS norm) and the variance its rstd comes from, given the row's moments over its n values.
double row_variance(const Moments& m, double n, bool centered, double* mean) {
  *mean = centered ? m.mean : 0.0;
  return centered ? m.m2 / n : m.m2 / n + m.mean * m.mean;  // RMS: no cancellation
}

// The same from the row's sums around `shift` (ShiftedSums), for NormRows: compiled for the default target and never
// inlined into an ISA-level body, where a multiply-add would fuse and move the last bit.
[[gnu::noinline]] double row_variance(double n, double shift, double s1, double s2, bool centered, double* mean) {
  return row_variance(loops::from_shifted(n, shift, s1, s2), n, centered, mean);
}

// Layer / RMS norm forward of a group of up to kLnMaxGroup wide rows of 1 to kElementwiseGrain values in one call:
// each row's statistics as ln_forward's row-by-row path takes them (SquareSums for a float RMS row whose sum allows,
// else ShiftedSums around the row's first value, which is run_moments of one piece), the rows' rstd side by side in
// double vector lanes, then the rows normalized.  The same arithmetic, so the same bits, without two dispatched calls
// and a chain of scalar square root and division per row, which were most of the time on short rows.
template <class T, class Op>
struct NormRows {
  static constexpr bool takes_isa = true;
  template <Isa I>
  static FASTNORM_INLINE void run(const T* x, T* y, idx rows, idx D, double eps, bool centered, const T* gamma,
                                  const T* beta, act::Params<T> p, bool stream, double* mean, double* rstd) {
    const double n = static_cast<double>(D);
    double var[tuning::kLnMaxGroup];
    for (idx r = 0; r < rows; ++r) {
      const T* xr = x + r * D;
      if constexpr (std::is_same_v<T, float>) {
        if (!centered) {
          double squares;
          SquareSums::run<I>(xr, D, &squares);
          if (std::isfinite(squares) && squares >= 0x1p-100) {
            mean[r] = 0.0;
            var[r] = squares / n;
            continue;
          }
        }
      }
      const double shift = static_cast<double>(xr[0]);
      double s1, s2;
      loops::ShiftedSums<T>::run(xr, D, shift, &s1, &s2);
      var[r] = row_variance(n, shift, s1, s2, centered, &mean[r]);
    }
#pragma omp simd
    for (idx r = 0; r < rows; ++r) rstd[r] = 1.0 / std::sqrt(var[r] + eps);
    for (idx r = 0; r < rows; ++r)
      map_blocks<I>(y + r * D, D, stream,
                    ApplyBlock<I, T, Op>{x + r * D, gamma, beta, Centering<T>(mean[r], rstd[r]), p});
  }
};

template <class T, class Op>
struct PostOpGradRow {  // dz = post'(z) dy over one row (gamma and beta may be null: 1 and 0)
  static FASTNORM_INLINE void run(const T* dy, const T* x, T* dz, idx D, Centering<T> k, const T* gamma,
                                  const T* beta, act::Params<T> p) {
#pragma omp simd
    for (idx d = 0; d < D; ++d) {
      const T z = k.normalized(x[d], gamma ? gamma[d] : T(1), beta ? beta[d] : T(0));
      dz[d] = Op::backward(dy[d], z, p);
    }
  }
};

// The sums of g and of g (x - hi) over a piece of n <= kPiece values of one row, g = dy gamma, hi the row's
// Centering::hi, added (in double) to *s_g and *s_gx; the caller takes the sum of g xhat from them in double,
// rstd (s_gx - (mean - hi) s_g).  dy and x stored as X (the row's own storage, or widened into C), read a block at a
// time, summed per lane in C and folded pairwise: float16 / bfloat16 rows give the bits of the float32 row of their
// values.
// kNullable: gamma may be null (1); only the rows too long for a materialised default take that path (a branch per
// block: up to 10% slower on short rows).
template <class X, bool kNullable = false>
struct RowSums {
  static constexpr bool takes_isa = true;
  static constexpr idx kPiece = 256;  // 16 values per vector lane
  using C = compute_t<X>;
  template <Isa I>
  static FASTNORM_INLINE void add_block(const X* dy, const X* x, idx d, idx count, C hi, const C* gamma, C* pa,
                                        C* pb) {
    C b_dy[kLanes], b_x[kLanes], b_gamma[kLanes];
    const C* dyb = load_block<I>(dy, d, count, b_dy);
    const C* xb = load_block<I>(x, d, count, b_x);
    // dy is zero-padded: short blocks add nothing
    const C* gammab = kNullable ? load_param_filled<I>(gamma, d, count, b_gamma, C(1))
                                : load_block<I>(gamma, d, count, b_gamma);
#pragma omp simd
    for (idx j = 0; j < kLanes; ++j) {
      const C g = dyb[j] * gammab[j];
      pa[j] += g;
      pb[j] += g * (xb[j] - hi);
    }
  }
  template <Isa I>
  static FASTNORM_INLINE void run(const X* dy, const X* x, idx n, C hi, const C* gamma, double* s_g,
                                  double* s_gx) {
    C pa[kLanes] = {}, pb[kLanes] = {};
    idx d = 0;
    for (; d + kLanes <= n; d += kLanes) add_block<I>(dy, x, d, kLanes, hi, gamma, pa, pb);
    if (d < n) add_block<I>(dy, x, d, n - d, hi, gamma, pa, pb);
    *s_g += fold_lanes(pa);
    *s_gx += fold_lanes(pb);
  }
};

// The input gradient of one row: dx = rstd * (g - k_g - xhat * k_gx), with its row's Centering and constants.
template <class X>
struct RowGradInputs {  // g and x stored as X, as RowSums
  using C = compute_t<X>;
  const X *g, *x;
  Centering<C> k;
  C k_g, k_gx;
};

// dx for one block of kRows rows (1 or 2) at the same offsets; the parameter partials pg += g xhat, pb += g
// accumulate across rows, in C, row after row (two rows give the bits of one and then the other, with pg and pb
// loaded and stored once: their loads and stores were a tenth of the half backward), unless pg is null (no
// parameter gradients).  The first row's block goes to map_blocks' block dx, the second's to dx2 (its row aligned
// as the first's).  gamma may be null (1).
template <Isa I, class T, class X, int kRows, bool kNullable>
struct GradBlock {
  static constexpr bool kElementwise = false;  // it accumulates pg, pb
  using C = compute_t<X>;
  RowGradInputs<X> row[kRows];
  const C* gamma;
  C *pg, *pb;
  T* dx2;
  bool stream;
  FASTNORM_INLINE void operator()(idx d, idx count, C* dx) const {
    C p_gamma[kLanes], acc_g[kLanes], acc_b[kLanes];
    const C* gammab = kNullable ? load_param_filled<I>(gamma, d, count, p_gamma, C(1))
                                : load_block<I>(gamma, d, count, p_gamma);
    const C* pgb = kNullable ? load_param_filled<I>(static_cast<const C*>(pg), d, count, acc_g, C(0))
                             : load_block<I>(pg, d, count, acc_g);
    const C* pbb = kNullable ? load_param_filled<I>(static_cast<const C*>(pb), d, count, acc_b, C(0))
                             : load_block<I>(pb, d, count, acc_b);
#pragma omp simd
    for (idx j = 0; j < kLanes; ++j) {
      acc_g[j] = pgb[j];
      acc_b[j] = pbb[j];
    }
    for (int q = 0; q < kRows; ++q) {
      const RowGradInputs<X>& in = row[q];
      C p_g[kLanes], p_x[kLanes];
      alignas(64) C second[kLanes];
      const C* gb = load_block<I>(in.g, d, count, p_g);
      const C* xb = load_block<I>(in.x, d, count, p_x);
      C* out = q == 0 ? dx : second;
#pragma omp simd
      for (idx j = 0; j < kLanes; ++j) {
        const C xhat = in.k.xhat(xb[j]);
        out[j] = in.k.rstd * ((gb[j] * gammab[j] - in.k_g) - xhat * in.k_gx);
        acc_g[j] += gb[j] * xhat;
        acc_b[j] += gb[j];
      }
      if (q > 0) {
        if (count == kLanes)
          store_block<I, T>(second, dx2 + d, stream);
        else
          store_values<I, T>(second, dx2 + d, count);
      }
    }
    if (kNullable && pg == nullptr) return;
    if (count < kLanes) {
      store_values<I, C>(acc_g, pg + d, count);
      store_values<I, C>(acc_b, pb + d, count);
      return;
    }
#pragma omp simd
    for (idx j = 0; j < kLanes; ++j) {
      pg[d + j] = acc_g[j];
      pb[d + j] = acc_b[j];
    }
  }
};

template <class T, class X, int kRows = 1, bool kNullable = false>
struct RowGrad {  // kRows rows of dx, D apart, stored to T; g and x stored as X
  static constexpr bool takes_isa = true;
  using C = compute_t<T>;
  template <Isa I>
  static FASTNORM_INLINE void run(const RowGradInputs<X>* rows, T* dx, idx D, const C* gamma, C* pg, C* pb,
                                  bool stream) {  // rows: kRows of them
    static_assert(kRows == 1 || kRows == 2, "one or two rows");
    if constexpr (kRows == 1)
      map_blocks<I>(dx, D, stream, GradBlock<I, T, X, 1, kNullable>{{rows[0]}, gamma, pg, pb, nullptr, stream});
    else
      map_blocks<I>(dx, D, stream,
                    GradBlock<I, T, X, 2, kNullable>{{rows[0], rows[1]}, gamma, pg, pb, dx + D, stream});
  }
};

// acc[d] += part[d] (in double), part[d] = 0.
template <class T>
struct Flush {
  static FASTNORM_INLINE void run(T* part_g, T* part_b, double* acc_g, double* acc_b, idx D) {
#pragma omp simd
    for (idx d = 0; d < D; ++d) {
      acc_g[d] += static_cast<double>(part_g[d]);
      acc_b[d] += static_cast<double>(part_b[d]);
      part_g[d] = T(0);
      part_b[d] = T(0);
    }
  }
};

template <class T>
void prefetch_row(const T* p, idx n) {
  for (idx i = 0; i < n; i += 64 / static_cast<idx>(sizeof(T))) __builtin_prefetch(p + i);
}


}  // namespace

template <class T>
void ln_forward(const T* x, T* y, idx M, idx D, double eps, bool centered, const compute_t<T>* gamma,
                const compute_t<T>* beta, double* mean, double* rstd, int num_threads, const PostOp& post) {
  using C = compute_t<T>;
  constexpr idx kGroupBytes = tuning::kLnGroupBytes, kMaxGroup = tuning::kLnMaxGroup;
  const double n = static_cast<double>(std::max<idx>(D, 1));
  const act::Params<C> p = post.params<C>();
  visit_post_op(post, [&](auto op) {
    using Op = decltype(op);
    const bool stream =
        loops::stream_runs(y, M * D, D, 3, act::compute_bound<Op>::value, tuning::kStreamRunBytesForward);
    // Rows under kGroupBytes a group at a time, statistics first: the rows' divisions and square roots overlap
    // instead of each waiting in front of its row's normalization (the group stays in L1; tuning.h).
    const idx row_bytes = std::max<idx>(D * static_cast<idx>(sizeof(T)), 1);
    const idx group = std::clamp<idx>(kGroupBytes / row_bytes, 1, kMaxGroup);
    parallel_for(M, rows_per_task(D), num_threads, [&](idx r0, idx r1) {
      for (idx g0 = r0; g0 < r1; g0 += group) {
        const idx g1 = std::min(r1, g0 + group);
        if constexpr (!is_narrow<T>) {
          // (float RMS rows that fill a group alone run as fast row by row, and rows of 256 values faster: 0.85 against
          // 0.78x MLAS's time)
          if (D >= 1 && D <= kElementwiseGrain && (centered || group > 1)) {
            if (g1 + group <= r1) prefetch_row(x + g1 * D, group * D);  // the next group
            if (stream)
              for (idx r = g1; r < std::min(r1, g1 + group); ++r) loops::prefetch_row_start(y + r * D);
            isa_call<NormRows<T, Op>>(x + g0 * D, y + g0 * D, g1 - g0, D, eps, centered, gamma, beta, p, stream,
                                      mean + g0, rstd + g0);
            continue;
          }
        }
        for (idx r = g0; r < g1; ++r) {
          const double squares = centered ? -1 : square_sum(x + r * D, D);
          if (squares >= 0) {
            mean[r] = 0.0;
            rstd[r] = 1.0 / std::sqrt(squares / n + eps);
            continue;
          }
          // rows of no values: mean = m2 = 0
          const double var = row_variance(loops::run_moments<T>(x + r * D, D), n, centered, &mean[r]);
          rstd[r] = 1.0 / std::sqrt(var + eps);
        }
        for (idx r = g0; r < g1; ++r) {
          if (r + group < r1) prefetch_row(x + (r + group) * D, D);  // its row in the next group
          if (stream && r + 2 < r1) loops::prefetch_row_start(y + (r + 2) * D);
          isa_call<ApplyRow<T, Op>>(x + r * D, y + r * D, D, Centering<C>(mean[r], rstd[r]), gamma, beta, p,
                                    stream);
        }
      }
      if (stream) stream_fence();
    });
  });
}

namespace {

// A row's gradient constants from its sums (RowSums): dx = rstd (g - k_g - xhat k_gx) with k_g the mean of g
// (layer norm; 0 for RMS norm) and k_gx the mean of g xhat, s_gx taken around the mean's hi (Centering).
template <class C>
FASTNORM_INLINE std::pair<C, C> row_grad_consts(double s_g, double s_gx, double mean, double rstd, C hi, idx D,
                                                bool centered) {
  s_gx = rstd * (s_gx - loops::mean_rest(mean, hi) * s_g);  // the sum of g xhat
  const C k_g = centered ? static_cast<C>(s_g / static_cast<double>(D)) : C(0);
  return {k_g, static_cast<C>(s_gx / static_cast<double>(D))};
}

// The layer / RMS norm backward over rows: per row, its sums (the first pass, reading the row from memory), its
// gradient constants, then dx and the parameter partials (RowGrad, from L1); rows in tasks whose parameter partials
// are added in task order at the end.  The plan (which rows stream, in pairs or pieces) is fixed per call.
struct RowsPlan {
  idx task_rows = 0;           // rows per task
  bool params = false;         // parameter gradients wanted
  bool partials = false;       // per-row parameter partials kept (the functors that need them)
  bool stream = false;         // dx streamed row by row
  bool stream_pieces = false;  // dx streamed a piece of piece_rows rows at a time through L1
  idx piece_rows = 0;
  bool widen = false;  // narrow storage with a post-op: rows widened into L1 first
  bool pairs = false;  // rows two at a time
};

template <class T, bool kNullable>
class RowsBackward {
 public:
  using C = compute_t<T>;
  using Plan = RowsPlan;
  RowsBackward(const T* dy, const T* x, T* dx, idx M, idx D, const double* mean, const double* rstd, const C* gamma,
               const C* beta, bool centered, const PostOp& post, const Plan& plan, TaskPartials<2>& partials)
      : dy_(dy), x_(x), dx_(dx), M_(M), D_(D), mean_(mean), rstd_(rstd), gamma_(gamma), beta_(beta),
        centered_(centered), post_(post), p_(post.params<C>()), plan_(plan), param_partials_(partials) {}

  // Tasks [t0, t1), on one thread.
  void operator()(idx t0, idx t1) const {
    Scratch s(*this);
    for (idx t = t0; t < t1; ++t) task(t, s);
    if (plan_.stream || s.piece) stream_fence();
  }

 private:
  // A thread's L1 rows: the row's post'(z) dy, widened dy and x (with a post-op only), the parameter partials in C,
  // the piece of dx rows (stream_pieces).
  struct Scratch {
    std::vector<C> fg, fb;
    C *f_g, *f_b, *dz, *dy_row, *x_row;
    T* piece;
    explicit Scratch(const RowsBackward& b)
        : fg(static_cast<size_t>(b.plan_.partials ? b.D_ : 0), C(0)), fb(fg.size(), C(0)),
          f_g(b.plan_.partials ? fg.data() : nullptr), f_b(b.plan_.partials ? fb.data() : nullptr),
          dz(b.post_.active() ? loops::thread_scratch<C>((b.plan_.widen ? 3 : 1) * static_cast<size_t>(b.D_))
                              : nullptr),
          dy_row(b.plan_.widen ? dz + b.D_ : nullptr), x_row(b.plan_.widen ? dz + 2 * b.D_ : nullptr),
          piece(b.plan_.stream_pieces
                    ? loops::thread_scratch<T, loops::Scratch::piece>(static_cast<size_t>(b.plan_.piece_rows * b.D_))
                    : nullptr) {}
  };

  // Each row's first pass goes a piece at a time, prefetching the inputs kAhead values ahead as one stream across
  // rows (the hardware prefetcher stops at each 4 KiB page, and a row of 1024 float32 is one): 8192 x 1024
  // float32, 1 / 2 threads, 6.7-6.9 / 3.6-3.7 -> 5.9-6.1 / 3.0-3.2 ms.  Prefetching the whole next row at once held
  // the fill buffers the current row's loads needed; interleaving the next row's first pass with this row's second
  // did not help.  The pieces are RowSums' own, so the sums have the bits of one call over the row.
  static constexpr idx kPiece = RowSums<T>::kPiece, kAhead = 512;

  // Row r's first pass and constants: its gradient's inputs as stored (first) and, with a post-op, post'(z) dy in
  // dz and x as C values (second).
  std::pair<RowGradInputs<T>, RowGradInputs<C>> row_inputs(idx r, const Scratch& s) const {
    const idx D = D_, total = M_ * D_;
    const Centering<C> k(mean_[r], rstd_[r]);
    const T *dyr = dy_ + r * D, *xr = x_ + r * D;
    const C* xc = plan_.widen ? s.x_row : reinterpret_cast<const C*>(xr);  // (C is T when wide)
    double s_g = 0, s_gx = 0;
    for (idx d = 0; d < D; d += kPiece) {
      const idx n = std::min(kPiece, D - d), ahead = r * D + d + kAhead;
      if (ahead < total) {
        prefetch_row(dy_ + ahead, std::min(n, total - ahead));
        prefetch_row(x_ + ahead, std::min(n, total - ahead));
      }
      if (!post_.active()) {
        isa_call<RowSums<T, kNullable>>(dyr + d, xr + d, n, k.hi, param_at(gamma_, d), &s_g, &s_gx);
        continue;
      }
      if constexpr (is_narrow<T>) {
        to_float(dyr + d, s.dy_row + d, n);
        to_float(xr + d, s.x_row + d, n);
      }
      const C* dyc = plan_.widen ? s.dy_row : reinterpret_cast<const C*>(dyr);
      visit_post_op(post_, [&](auto op) {
        isa_call<PostOpGradRow<C, decltype(op)>>(dyc + d, xc + d, s.dz + d, n, k, param_at(gamma_, d),
                                                  param_at(beta_, d), p_);
      });
      isa_call<RowSums<C, kNullable>>(static_cast<const C*>(s.dz + d), xc + d, n, k.hi, param_at(gamma_, d), &s_g,
                                      &s_gx);
    }
    const auto [k_g, k_gx] = row_grad_consts(s_g, s_gx, mean_[r], rstd_[r], k.hi, D, centered_);
    return {RowGradInputs<T>{dyr, xr, k, k_g, k_gx}, RowGradInputs<C>{s.dz, xc, k, k_g, k_gx}};
  }

  // Task t's rows: dx row by row (or two at a time), the parameter partials flushed every kFlushRows rows.
  void task(idx t, Scratch& s) const {
    // The parameter partials add up kFlushRows rows in C, then go into the task's double sums: C's rounding over a
    // few rows, double's over the many (a double add per element and row made the backward compute-bound).
    constexpr idx kFlushRows = tuning::kLnFlushRows;
    const idx D = D_, r0 = t * plan_.task_rows, r_end = std::min(M_, r0 + plan_.task_rows);
    double* g_part = plan_.params ? param_partials_.row(0, t) : nullptr;
    double* b_part = plan_.params ? param_partials_.row(1, t) : nullptr;
    idx piece_r0 = r0;  // the first row in the piece (stream_pieces)
    const auto dx_row = [&](idx r) { return s.piece ? s.piece + (r - piece_r0) * D : dx_ + r * D; };
    for (idx r = r0; r < r_end;) {
      if (plan_.stream && r + 3 < r_end) {
        loops::prefetch_row_start(dx_ + (r + 2) * D);
        loops::prefetch_row_start(dx_ + (r + 3) * D);
      }
      // Two rows at a time without a post-op (pairs start at even rows of the task: kFlushRows is even)
      if (plan_.pairs && r + 1 < r_end) {
        const RowGradInputs<T> two[2] = {row_inputs(r, s).first, row_inputs(r + 1, s).first};
        isa_call<RowGrad<T, T, 2, kNullable>>(static_cast<const RowGradInputs<T>*>(two), dx_row(r), D, gamma_,
                                              s.f_g, s.f_b, plan_.stream);
        r += 2;
      } else {
        const auto in = row_inputs(r, s);
        if (post_.active())
          isa_call<RowGrad<T, C, 1, kNullable>>(&in.second, dx_row(r), D, gamma_, s.f_g, s.f_b, plan_.stream);
        else
          isa_call<RowGrad<T, T, 1, kNullable>>(&in.first, dx_row(r), D, gamma_, s.f_g, s.f_b, plan_.stream);
        r += 1;
      }
      if (s.piece && (r - piece_r0 == plan_.piece_rows || r == r_end)) {
        stream_store(static_cast<const T*>(s.piece), dx_ + piece_r0 * D, (r - piece_r0) * D);
        piece_r0 = r;
      }
      if (plan_.params && ((r - r0) % kFlushRows == 0 || r == r_end))
        isa_call<Flush<C>>(s.f_g, s.f_b, g_part, b_part, D);
    }
  }

  const T *dy_, *x_;
  T* dx_;
  idx M_, D_;
  const double *mean_, *rstd_;
  const C *gamma_, *beta_;
  bool centered_;
  const PostOp& post_;
  act::Params<C> p_;
  Plan plan_;
  TaskPartials<2>& param_partials_;
};

}  // namespace

template <class T>
void ln_backward(const T* dy, const T* x, T* dx, idx M, idx D, const double* mean, const double* rstd,
                 const compute_t<T>* gamma, bool centered, double* dgamma, double* dbeta, int num_threads,
                 const PostOp& post, const compute_t<T>* beta) {
  using C = compute_t<T>;
  // Tasks of 16 grains: each keeps a partial sum of the parameter gradients, 2 D doubles; one per grain made
  // these partials (8 MB at 8192 x 1024) cost more than the gradient itself, in page faults.
  const idx task_rows = 16 * rows_per_task(D);
  const idx tasks = M == 0 ? 0 : (M + task_rows - 1) / task_rows;
  const bool params = dgamma != nullptr || dbeta != nullptr;
  // Rows of up to kLnMaterialize values take the functors that need gamma and the per-thread parameter partials: a
  // missing gamma is materialised (ones) and the partials kept without parameter gradients too, scratch of at most
  // a few MB.  Longer rows take the nullable functors (RowSums), which keep nothing as large as a row.
  const bool nullable = D > tuning::kLnMaterialize;
  std::vector<C> ones;
  if (gamma == nullptr && !nullable) {
    ones.assign(static_cast<size_t>(D), C(1));
    gamma = ones.data();
  }
  const bool stream = loops::stream_runs(dx, M * D, D, 5, false, tuning::kStreamRunBytesBackward);
  // Short rows that do not stream one by one (mid-line in an out= array NumPy placed, where each row's partial end
  // lines cost more than streaming saves) are computed a piece of rows at a time into L1 and streamed out as one
  // contiguous block, partial lines only at the piece's ends.  Float32, 1 thread, out= 16 to 2064 bytes into a page,
  // time over the page-aligned result's (streamed row by row): rows of 64 values 1.41 -> 1.03, of 128 1.22 -> 1.10.
  // (Rows from kStreamRunBytesBackward on stream row by row: streamed in pieces they were slower, 1.2-1.3 against
  // 1.1-1.2.)  An even count of rows, so that row pairs stay in a piece.
  const bool stream_pieces = !stream && loops::stream_out<T>(M * D, 5, false);
  RowsPlan plan;
  plan.task_rows = task_rows;
  plan.params = params;
  plan.partials = params || !nullable;
  plan.stream = stream;
  plan.stream_pieces = stream_pieces;
  plan.piece_rows = std::max<idx>(2, loops::piece_rows(D) / 2 * 2);
  // dy and x are read where they are, in their storage; narrow storage with a post-op is widened a piece at a time
  // into L1 rows first (post'(z) dy is computed from float rows).
  plan.widen = is_narrow<T> && post.active();
  // Rows two at a time (RowGrad) where both rows' dx have the same alignment
  plan.pairs = !post.active() && (!stream || (D * static_cast<idx>(sizeof(T))) % 64 == 0);
  // Per-task partial sums of the parameter gradients, added in task order afterwards (column by column); none
  // without parameter gradients.
  TaskPartials<2> param_partials(params ? tasks : 0, D);
  const auto run = [&](auto nullable_functors) {
    constexpr bool kNullable = decltype(nullable_functors)::value;
    parallel_for(tasks, 1, num_threads, RowsBackward<T, kNullable>(dy, x, dx, M, D, mean, rstd, gamma, beta, centered,
                                                                    post, plan, param_partials));
  };
  if (nullable)
    run(std::true_type{});
  else
    run(std::false_type{});
  if (params) param_partials.total({dgamma, dbeta}, num_threads);
}

#define FASTNORM_INSTANTIATE(T)                                                                                 \
  template void ln_forward<T>(const T*, T*, idx, idx, double, bool, const compute_t<T>*, const compute_t<T>*,   \
                              double*, double*, int, const PostOp&);                                          \
  template void ln_backward<T>(const T*, const T*, T*, idx, idx, const double*, const double*,                 \
                               const compute_t<T>*, bool, double*, double*, int, const PostOp&,                \
                               const compute_t<T>*);
FASTNORM_FOR_EACH_STORAGE(FASTNORM_INSTANTIATE)
#undef FASTNORM_INSTANTIATE

}  // namespace fastnorm
