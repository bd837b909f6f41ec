#include "fastnorm/softmax.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "fastnorm/parallel.h"
#include "fastnorm/row_blocks.h"
#include "fastnorm/scratch.h"
#include "fastnorm/simd_math.h"

namespace fastnorm {
namespace {

template <class T>
FASTNORM_INLINE T exp_le0(T v) {  // exp of v <= 0 (or NaN; a v rounded just above 0 counts as 0); -inf gives 0
  return math::exp_nonpositive(v > T(0) ? T(0) : v).value();
}

// exp(v) * 2^K for v = x - max (<= 0 exactly, or NaN), without the final scaling by 2^-K: softmax divides by a sum
// of the same scaled terms, and the sums scale back exactly (ExpParts).  One multiply less per value.
template <class T>
FASTNORM_INLINE T exp_scaled(T v) {
  const math::ExpParts<T> e = math::exp_nonpositive(v);
  return e.m * e.s1;
}

template <class T>
constexpr double kExpUnscale = static_cast<double>(math::ExpParts<T>::s2);

// |k| from which k 2^-K is a normal number (no precision lost folding the unscaling into a constant)
template <class T>
constexpr T kFoldable = std::numeric_limits<T>::min() / static_cast<T>(kExpUnscale<T>);

// A row's reductions run in kLanes lanes of T, folded as a tree at the end (row_blocks.h's fold_lanes): GCC's own
// `omp simd reduction` folds its lanes one after another, a chain of 16 dependent adds per sum that cost more
// than a short row's vector work.  The fold is the same at every ISA level.
template <class T>
constexpr T kMinusInf = -std::numeric_limits<T>::infinity();

// f(i, a + i, b + i, kLanes) for each whole block of kLanes values of rows a and b in [i0, i1), then f(i, pa, pb,
// count) for a last, short block, copied into blocks padded with `fill` (-inf neither raises a maximum nor adds to
// a sum of exponentials; 0 adds nothing to a sum).  The short block stays out of the loop over whole blocks: the
// copies' stores may alias anything, and the loop's accumulators were then kept in memory, not registers.
template <Isa I, class T, class F>
FASTNORM_INLINE void over_blocks(const T* a, const T* b, idx i0, idx i1, T fill, const F& f) {
  idx i = i0;
  for (; i + kLanes <= i1; i += kLanes) f(i, a + i, b + i, kLanes);
  if (i == i1) return;
  const idx count = i1 - i;
  T pa[kLanes], pb[kLanes];
  ShortIO<I, T>::load(a + i, count, pa);
  ShortIO<I, T>::load(b + i, count, pb);
#pragma omp simd
  for (idx j = 0; j < kLanes; ++j) {
    pa[j] = j < count ? pa[j] : fill;
    pb[j] = j < count ? pb[j] : fill;
  }
  f(i, static_cast<const T*>(pa), static_cast<const T*>(pb), count);
}

template <idx W, class T>
FASTNORM_INLINE void halve_max(T* m) {  // as halve_lanes
#pragma omp simd
  for (idx j = 0; j < W; ++j) m[j] = m[j + W] > m[j] ? m[j + W] : m[j];
}

template <Isa I, class T>
FASTNORM_INLINE T row_max(const T* x, idx n) {
  T m[kLanes];
  for (idx j = 0; j < kLanes; ++j) m[j] = kMinusInf<T>;
  over_blocks<I>(x, x, 0, n, kMinusInf<T>, [&](idx, const T* b, const T*, idx) {
#pragma omp simd
    for (idx j = 0; j < kLanes; ++j) m[j] = b[j] > m[j] ? b[j] : m[j];  // NaN is skipped; it makes the sum NaN
  });
  halve_max<8>(m);
  halve_max<4>(m);
  halve_max<2>(m);
  return m[1] > m[0] ? m[1] : m[0];
}

// sum exp(x - max) as ties + rest: ties the count of values equal to the maximum (each exp(0) = 1), rest the sum over
// the others.  log(sum) = log1p((ties - 1) + rest) keeps a rest far below 1 (the largest value's log-probability
// -log(1 + rest) = -1e-13 when the next value is 30 below), which log(1 + rest) would round to a few digits.
// `scaled` is the whole sum times 2^K (softmax's divisor, ExpParts).
struct ExpSum {
  double ties = 0, rest = 0, scaled = 0;
  template <class T>
  T log_total() const {
    return static_cast<T>(math::log1p_((ties - 1.0) + rest));  // in double: float's log1p cost 1-2 ulps more
  }
};

// Blocks of kSumBlock values are summed in T lanes (16 terms per float lane), the blocks in double: as accurate as
// double throughout, at the speed of float vectors.
constexpr idx kSumBlock = tuning::kSoftmaxSumBlock;

// A row of n values to prefetch while the exponentials of the row a group before it are summed (exp_sum's `ahead`;
// a group, not a row, ahead: rows of 1024 float32 5% faster): the first pass over a row, its maximum, otherwise
// waits on memory while the exponentials' arithmetic leaves it idle.  Rows shorter
// than kSoftmaxPrefetchRowBytes are not: the hardware prefetcher keeps up with them, and the prefetches cost (rows of
// 128 float32 values 8% slower).  Log-softmax, 8192 x 1024 float32, 1 thread: 2.96 -> 2.61 ms with y 16 bytes into
// its page (as NumPy places it), 2.52 -> 2.15 page-aligned.  (Softmax, which writes each row's exponentials to y
// on the same pass, measured no faster.)
template <class T>
FASTNORM_INLINE const T* prefetched(const T* row, idx n) {
  return n * static_cast<idx>(sizeof(T)) >= tuning::kSoftmaxPrefetchRowBytes ? row : nullptr;
}

// The ExpSum of a row of n values given its maximum m; with Write, exp(x - m) * 2^K is stored to e on the way
// (softmax, and cross-entropy's gradient scales it in place).  Without Ties only `scaled` (softmax's divisor).
// The row at `ahead` (when not null) is prefetched line for line along the way.
template <Isa I, bool Write, bool Ties, class T>
FASTNORM_INLINE ExpSum exp_sum(const T* x, idx n, T m, T* e, const T* ahead = nullptr) {
  ExpSum s;
  for (idx b0 = 0; b0 < n; b0 += kSumBlock) {
    T ties[kLanes] = {}, rest[kLanes] = {};
    over_blocks<I>(x, x, b0, std::min(n, b0 + kSumBlock), kMinusInf<T>, [&](idx i, const T* b, const T*, idx count) {
      if (ahead != nullptr)
        for (idx k = 0; k < kLanes; k += 64 / static_cast<idx>(sizeof(T))) __builtin_prefetch(ahead + i + k);
      T out[kLanes];
      T* o = out;
      if constexpr (Write) o = count == kLanes ? e + i : out;
#pragma omp simd
      for (idx j = 0; j < kLanes; ++j) {
        const T v = exp_scaled(b[j] - m);
        if constexpr (Write) o[j] = v;
        if constexpr (Ties) {
          const T tie = b[j] == m ? T(1) : T(0);  // (two selects on one condition became a branch: no vectors)
          ties[j] += tie;
          rest[j] += (T(1) - tie) * v;
        } else {
          rest[j] += v;
        }
      }
      if constexpr (Write)
        if (count < kLanes) ShortIO<I, T>::store(out, e + i, count);
    });
    const double t = Ties ? fold_lanes(ties) : 0.0, r = fold_lanes(rest);
    s.ties += t;
    s.rest += r * kExpUnscale<T>;
    s.scaled += r + t / kExpUnscale<T>;
  }
  return s;
}

// A row's sum of term(a[i], b[i]) in T lanes per block of kSumBlock, the blocks in double (as exp_sum).  The last
// short block is zero-padded: term(0, 0) must be 0.
template <Isa I, class T, class Term>
FASTNORM_INLINE double row_sum(const T* a, const T* b, idx n, const Term& term) {
  double s = 0;
  for (idx b0 = 0; b0 < n; b0 += kSumBlock) {
    T acc[kLanes] = {};
    over_blocks<I>(a, b, b0, std::min(n, b0 + kSumBlock), T(0), [&](idx, const T* ab, const T* bb, idx) {
#pragma omp simd
      for (idx j = 0; j < kLanes; ++j) acc[j] += term(ab[j], bb[j]);
    });
    s += fold_lanes(acc);
  }
  return s;
}

// Label smoothing's sum over a row of (w[c]) x[c], w the class weights as T (nullptr: all 1).
template <Isa I, class T>
FASTNORM_INLINE double smoothing_sum(const T* x, const T* w, idx n) {
  if (w == nullptr) return row_sum<I>(x, x, n, [](T v, T) { return v; });
  return row_sum<I>(x, w, n, [](T v, T wv) { return wv * v; });
}

// Rows of at most kGroupBytes together: each row's maximum and sums, then (log-softmax) the group's log1p side by
// side in vector lanes (one row at a time, a chain of dependent divisions as long as a short row's vector work),
// then the outputs; the group stays in L1 between the steps.
constexpr idx kGroupRows = tuning::kSoftmaxGroupRows, kGroupBytes = tuning::kSoftmaxGroupBytes;

template <class T>
idx group_rows(idx n) {
  return std::clamp<idx>(kGroupBytes / std::max<idx>(n * static_cast<idx>(sizeof(T)), 1), 1, kGroupRows);
}

// Rows [r0, r1) of n values a group at a time: each row's maximum and ExpSum (rows where counted_row(r) is false
// are skipped), the group's log(sum)s side by side in vector lanes, then out(r, max, log(sum)) for every row.
template <Isa I, class T, class Counted, class Out>
FASTNORM_INLINE void over_row_groups(const T* x, idx r0, idx r1, idx n, const Counted& counted_row,
                                     const Out& out) {
  const idx group = group_rows<T>(n);
  T m[kGroupRows];
  double beyond[kGroupRows], log_sum[kGroupRows];
  for (idx g0 = r0; g0 < r1; g0 += group) {
    const idx count = std::min(group, r1 - g0);
    for (idx j = 0; j < count; ++j) {
      m[j] = 0, beyond[j] = 0;
      if (!counted_row(g0 + j)) continue;
      const T* xr = x + (g0 + j) * n;
      m[j] = row_max<I>(xr, n);
      const T* ahead = g0 + j + group < r1 ? prefetched(xr + group * n, n) : nullptr;  // the next group's row j
      const ExpSum s = exp_sum<I, false, true>(xr, n, m[j], static_cast<T*>(nullptr), ahead);
      beyond[j] = (s.ties - 1.0) + s.rest;
    }
#pragma omp simd
    for (idx j = 0; j < count; ++j) log_sum[j] = math::log1p_(beyond[j]);  // ExpSum::log_total, side by side
    for (idx j = 0; j < count; ++j) out(g0 + j, m[j], log_sum[j]);
  }
}

// A block of a log-softmax row's output through map_blocks: (x - max) - log(sum).
template <Isa I, class T>
struct LogSoftmaxBlock {
  static constexpr bool kElementwise = true;
  const T* x;
  T m, l;
  FASTNORM_INLINE void operator()(idx d, idx count, T* y) const {
    T buf[kLanes];
    const T* xb = load_block<I>(x, d, count, buf);
#pragma omp simd
    for (idx j = 0; j < kLanes; ++j) y[j] = (xb[j] - m) - l;
  }
};

// log-softmax's output of row r, for over_row_groups (a functor, not a lambda: a lambda's body may be compiled
// for the default ISA level, and the streamed stores it calls are then not inlined)
template <Isa I, class T>
struct LogSoftmaxOut {
  const T* x;
  T* y;
  idx n;
  bool stream;
  FASTNORM_INLINE void operator()(idx r, T m, double log_sum) const {
    if (stream) loops::prefetch_row_start(y + (r + 1) * n);
    map_blocks<I>(y + r * n, n, stream, LogSoftmaxBlock<I, T>{x + r * n, m, static_cast<T>(log_sum)});
  }
};

// Rows [r0, r1) of n values each.  Separate loops per variant: a store under a condition inside the exp loop kept
// GCC from vectorising it.  Log-softmax rows go out through map_blocks, streamed when `stream` (8192 x 1024 float32,
// 1 thread, page-aligned y: 3.3 -> 2.7 ms); softmax rows, written as exponentials and scaled in place, measured no
// faster streamed from an L1 row of exponentials (and rows of 128 values 15% slower), so they are stored plainly.
template <class T>
struct SoftmaxRows {
  static constexpr bool takes_isa = true;
  template <Isa I>
  static FASTNORM_INLINE void run(const T* x, T* y, idx r0, idx r1, idx n, bool log, bool stream) {
    if (!log) {
      for (idx r = r0; r < r1; ++r) {
        const T* xr = x + r * n;
        T* yr = y + r * n;
        const T m = row_max<I>(xr, n);
        const T k = static_cast<T>(1.0 / exp_sum<I, true, false>(xr, n, m, yr).scaled);
#pragma omp simd
        for (idx i = 0; i < n; ++i) yr[i] *= k;
      }
      return;
    }
    over_row_groups<I>(x, r0, r1, n, [](idx) { return true; }, LogSoftmaxOut<I, T>{x, y, n, stream});
  }
};

constexpr idx kTile = tuning::kSoftmaxTile;  // positions of a (C, B) slab reduced side by side when B > 1

// Positions [b0, b0 + w) of one (C, B) slab, w <= kTile: the same steps, vectorised over the positions.
template <class T>
struct SoftmaxTile {
  static FASTNORM_INLINE void run(const T* x, T* y, idx C, idx B, idx w, bool log) {
    T m[kTile];
    double ties[kTile], rest[kTile];
    for (idx j = 0; j < w; ++j) {
      m[j] = -std::numeric_limits<T>::infinity();
      ties[j] = rest[j] = 0;
    }
    for (idx c = 0; c < C; ++c) {
      const T* xc = x + c * B;
#pragma omp simd
      for (idx j = 0; j < w; ++j) m[j] = xc[j] > m[j] ? xc[j] : m[j];
    }
    for (idx c = 0; c < C; ++c) {
      const T* xc = x + c * B;
      T* yc = y + c * B;
      if (log) {
#pragma omp simd
        for (idx j = 0; j < w; ++j) {
          const T e = exp_scaled(xc[j] - m[j]);
          ties[j] += xc[j] == m[j] ? 1.0 : 0.0;
          rest[j] += xc[j] == m[j] ? T(0) : e;
        }
      } else {
#pragma omp simd
        for (idx j = 0; j < w; ++j) {
          const T e = exp_scaled(xc[j] - m[j]);
          yc[j] = e;
          rest[j] += e;
        }
      }
    }
    T k[kTile];
    for (idx j = 0; j < w; ++j) {
      const ExpSum sum{ties[j], rest[j] * kExpUnscale<T>};
      k[j] = log ? sum.log_total<T>() : static_cast<T>(1.0 / rest[j]);  // softmax: rest is the scaled total
    }
    for (idx c = 0; c < C; ++c) {
      const T* xc = x + c * B;
      T* yc = y + c * B;
      if (log) {
#pragma omp simd
        for (idx j = 0; j < w; ++j) yc[j] = (xc[j] - m[j]) - k[j];
      } else {
#pragma omp simd
        for (idx j = 0; j < w; ++j) yc[j] *= k[j];
      }
    }
  }
};

template <class T>
struct SoftmaxGradRows {  // softmax: dx = y (dy - sum dy y); log-softmax: dx = dy - exp(y) sum dy
  static constexpr bool takes_isa = true;
  template <Isa I>
  static FASTNORM_INLINE void run(const T* dy, const T* y, T* dx, idx r0, idx r1, idx n, bool log) {
    for (idx r = r0; r < r1; ++r) {
      const T *dyr = dy + r * n, *yr = y + r * n;
      T* dxr = dx + r * n;
      if (log) {
        const T k = static_cast<T>(row_sum<I>(dyr, dyr, n, [](T g, T) { return g; }));
        if (std::abs(k) >= kFoldable<T>) {  // exp(y) k as (m 2^(n+K)) (k 2^-K): one multiply less
          const T ks = k * static_cast<T>(kExpUnscale<T>);
#pragma omp simd
          for (idx i = 0; i < n; ++i) dxr[i] = dyr[i] - exp_scaled(yr[i] > T(0) ? T(0) : yr[i]) * ks;
        } else {
#pragma omp simd
          for (idx i = 0; i < n; ++i) dxr[i] = dyr[i] - exp_le0(yr[i]) * k;
        }
      } else {
        const T k = static_cast<T>(row_sum<I>(dyr, yr, n, [](T g, T v) { return g * v; }));
#pragma omp simd
        for (idx i = 0; i < n; ++i) dxr[i] = yr[i] * (dyr[i] - k);
      }
    }
  }
};

template <class T>
struct SoftmaxGradTile {
  static FASTNORM_INLINE void run(const T* dy, const T* y, T* dx, idx C, idx B, idx w, bool log) {
    double s[kTile] = {};
    for (idx c = 0; c < C; ++c) {
      const T *dyc = dy + c * B, *yc = y + c * B;
      if (log) {
#pragma omp simd
        for (idx j = 0; j < w; ++j) s[j] += dyc[j];
      } else {
#pragma omp simd
        for (idx j = 0; j < w; ++j) s[j] += static_cast<double>(dyc[j] * yc[j]);
      }
    }
    T k[kTile];
    for (idx j = 0; j < w; ++j) k[j] = static_cast<T>(s[j]);
    for (idx c = 0; c < C; ++c) {
      const T *dyc = dy + c * B, *yc = y + c * B;
      T* dxc = dx + c * B;
      if (log) {
#pragma omp simd
        for (idx j = 0; j < w; ++j) dxc[j] = dyc[j] - exp_le0(yc[j]) * k[j];
      } else {
#pragma omp simd
        for (idx j = 0; j < w; ++j) dxc[j] = yc[j] * (dyc[j] - k[j]);
      }
    }
  }
};

idx rows_per_task(idx C) { return std::max<idx>(1, kElementwiseGrain / std::max<idx>(C, 1)); }

// Runs `rows(a0, a1)` over ranges of rows (B == 1) or `tile(a, b0, w)` for every tile of every slab, in parallel:
// tasks hold whole rows or tiles, so each result is computed by one thread whatever their number.
template <class Rows, class Tile>
void over_slabs(idx A, idx C, idx B, int num_threads, const Rows& rows, const Tile& tile) {
  if (B == 1) {
    parallel_for(A, rows_per_task(C), num_threads, rows);
    return;
  }
  const idx tiles = (B + kTile - 1) / kTile;
  const idx grain = std::max<idx>(1, kElementwiseGrain / std::max<idx>(C * kTile, 1));
  parallel_for(A * tiles, grain, num_threads, [&](idx t0, idx t1) {
    for (idx t = t0; t < t1; ++t) {
      const idx a = t / tiles, b0 = (t % tiles) * kTile;
      tile(a, b0, std::min(kTile, B - b0));
    }
  });
}

FASTNORM_INLINE bool counted(std::int64_t t, idx C, std::int64_t ignore_index) {
  return t != ignore_index && t >= 0 && t < C;
}

}  // namespace

template <class T>
void softmax_forward(const T* x, T* y, idx A, idx C, idx B, bool log, int num_threads) {
  if (A == 0 || C == 0 || B == 0) return;
  const bool stream = log && B == 1 && C * static_cast<idx>(sizeof(T)) >= tuning::kStreamRunBytesForward &&
                      loops::stream_out<T>(A * C, 3, false);
  over_slabs(
      A, C, B, num_threads,
      [&](idx a0, idx a1) {
        isa_call<SoftmaxRows<T>>(x, y, a0, a1, C, log, stream);
        if (stream) stream_fence();
      },
      [&](idx a, idx b0, idx w) {
        isa_call<SoftmaxTile<T>>(x + a * C * B + b0, y + a * C * B + b0, C, B, w, log);
      });
}

template <class T>
void softmax_backward(const T* dy, const T* y, T* dx, idx A, idx C, idx B, bool log, int num_threads) {
  if (A == 0 || C == 0 || B == 0) return;
  over_slabs(
      A, C, B, num_threads, [&](idx a0, idx a1) { isa_call<SoftmaxGradRows<T>>(dy, y, dx, a0, a1, C, log); },
      [&](idx a, idx b0, idx w) {
        const idx at = a * C * B + b0;
        isa_call<SoftmaxGradTile<T>>(dy + at, y + at, dx + at, C, B, w, log);
      });
}

namespace {

// What cross-entropy needs of the class weights: w (nullptr: all 1), the same rounded to T (label smoothing's sum
// runs in T lanes) and W = their sum.
template <class T>
struct ClassWeights {
  const double* w;
  const T* w_t;
  double sum;
  double at(std::int64_t c) const { return w ? w[c] : 1.0; }
  // A counted row's loss from x[t] - max (x_t - m), log(sum) rounded to T (ls) and, with label smoothing, the row's
  // sum of w x (swx): -(1 - eps) w[t] ((x[t] - max) - ls) - eps / C (swx - W lse).  x[t] - lse taken as
  // (x[t] - max) - log(sum) is exact for the largest logit, whose loss may be far below its size.
  // A counted row's share of its gradient g: what multiplies its softmax in dx.
  FASTNORM_INLINE double share(std::int64_t t, double g, double eps, idx C) const {
    return g * ((1.0 - eps) * at(t) + eps * sum / static_cast<double>(C));
  }
  FASTNORM_INLINE double loss(std::int64_t t, double x_t, double m, double ls, double eps, double swx, idx C) const {
    double out = -(1.0 - eps) * at(t) * ((x_t - m) - ls);
    if (eps != 0) out -= eps / static_cast<double>(C) * (swx - sum * (m + ls));
    return out;
  }
};

#if FASTNORM_MULTI_ISA
// Rows of at most 3 kLanes classes with rows as lanes (AVX-512, float32): a tile of kLanes rows transposed
// (RowTile) so that each class is one vector across the rows.  The row-wise code's per-row lanes (row_max's maxima,
// exp_sum's ties and rest, smoothing_sum's sums, folded by halves) become kLanes vectors combined in the same order,
// so each row gets the same bits as the row path, without a step across lanes per row: rows of 32 classes spent
// more in those steps than in their exponentials.  Cross-entropy forward + backward, C++ harness, 1 thread, ns per
// row, rows / tiles: 8 classes 21.7 / 11.1, 17 26.5 / 15.6, 32 22.8 / 16.3, 40 30.7 / 22.5, 48 25.6 / 24.9; 64
// equal (29), so not taken there.
template <idx Blocks>  // rows of (Blocks - 1) kLanes < C <= Blocks kLanes classes
struct ClassTile {
  static constexpr idx kCols = Blocks * kLanes;
  alignas(64) float v[kCols][kLanes];  // v[k][j]: row j's logit k, then exp(x - max) 2^K (then dx, for the caller)
  alignas(64) float m[kLanes];         // each row's maximum
  double beyond[kLanes], total[kLanes], swx[kLanes];  // ExpSum's sum beyond 1 and scaled sum; smoothing's sum

  // The n rows from row g0 of x: loaded, their maxima, label smoothing's sums (eps != 0) and exp(x - max) 2^K in
  // v with ExpSum's sums.  The lines of the tile after it (x, and dst when given) are prefetched first: a tile's
  // work is longer than the out-of-order window, which otherwise reaches the next loads only once they are due.
  FASTNORM_INLINE void sums(const float* x, float* dst, idx g0, idx n, idx r1, idx C, double eps,
                            const ClassWeights<float>& cw) {
    const idx next = std::min(r1, g0 + kLanes) * C, end = std::min(r1, g0 + 2 * kLanes) * C;
    for (idx i = next; i < end; i += 64 / static_cast<idx>(sizeof(float))) {
      __builtin_prefetch(x + i);
      if (dst != nullptr) __builtin_prefetch(dst + i, 1);
    }
    for (idx b = 0; b < Blocks; ++b)
      RowTile::load(x + g0 * C + b * kLanes, C, n, std::min(kLanes, C - b * kLanes), kMinusInf<float>,
                    v + b * kLanes);
    alignas(64) float lanes[kLanes][kLanes], ties[kLanes][kLanes];
    // maxima: lane s of row_max is lanes[s], over classes s, s + kLanes, ... (each lane's in registers)
    for (idx s = 0; s < kLanes; ++s) {
      float acc[kLanes];
      for (idx j = 0; j < kLanes; ++j) acc[j] = kMinusInf<float>;
      for (idx b = 0; b < Blocks; ++b) {
        const float* col = v[b * kLanes + s];
#pragma omp simd
        for (idx j = 0; j < kLanes; ++j) acc[j] = col[j] > acc[j] ? col[j] : acc[j];
      }
      for (idx j = 0; j < kLanes; ++j) lanes[s][j] = acc[j];
    }
    for (idx w = kLanes / 2; w >= 2; w /= 2)  // halve_max
      for (idx s = 0; s < w; ++s)
#pragma omp simd
        for (idx j = 0; j < kLanes; ++j)
          lanes[s][j] = lanes[s + w][j] > lanes[s][j] ? lanes[s + w][j] : lanes[s][j];
#pragma omp simd
    for (idx j = 0; j < kLanes; ++j) m[j] = lanes[1][j] > lanes[0][j] ? lanes[1][j] : lanes[0][j];
    // label smoothing's sums of (w) x, before v holds exponentials (smoothing_sum: padding adds nothing)
    for (idx j = 0; j < kLanes; ++j) swx[j] = 0;
    if (eps != 0) {
      for (idx s = 0; s < kLanes; ++s)
        for (idx j = 0; j < kLanes; ++j) lanes[s][j] = 0;
      for (idx k = 0; k < C; ++k) {
        float* acc = lanes[k % kLanes];
        if (cw.w_t == nullptr) {
#pragma omp simd
          for (idx j = 0; j < kLanes; ++j) acc[j] += v[k][j];
        } else {
          const float wk = cw.w_t[k];
#pragma omp simd
          for (idx j = 0; j < kLanes; ++j) acc[j] += wk * v[k][j];
        }
      }
      fold_rows(lanes, swx);
    }
    // exp(x - max) 2^K in place, and the sums of exp_sum: ties (values equal to the maximum) and the rest
    for (idx s = 0; s < kLanes; ++s) {
      float tie_count[kLanes] = {}, rest[kLanes] = {};
      for (idx b = 0; b < Blocks; ++b) {
        float* col = v[b * kLanes + s];
#pragma omp simd
        for (idx j = 0; j < kLanes; ++j) {
          const float e = exp_scaled(col[j] - m[j]);
          const float tie = col[j] == m[j] ? 1.0f : 0.0f;
          tie_count[j] += tie;
          rest[j] += (1.0f - tie) * e;
          col[j] = e;
        }
      }
      for (idx j = 0; j < kLanes; ++j) ties[s][j] = tie_count[j], lanes[s][j] = rest[j];
    }
    double t[kLanes], r[kLanes];
    fold_rows(ties, t);
    fold_rows(lanes, r);
#pragma omp simd
    for (idx j = 0; j < kLanes; ++j) {  // ExpSum's ties, rest and scaled, from one block
      beyond[j] = (t[j] - 1.0) + r[j] * kExpUnscale<float>;
      total[j] = r[j] + t[j] / kExpUnscale<float>;
    }
  }

  // fold_lanes for each row: lanes[s][j] is row j's lane s
  static FASTNORM_INLINE void fold_rows(float (*lanes)[kLanes], double* out) {
    for (idx w = kLanes / 2; w >= 2; w /= 2)
      for (idx s = 0; s < w; ++s)
#pragma omp simd
        for (idx j = 0; j < kLanes; ++j) lanes[s][j] += lanes[s + w][j];
#pragma omp simd
    for (idx j = 0; j < kLanes; ++j) out[j] = static_cast<double>(lanes[0][j] + lanes[1][j]);
  }
};

#endif

template <class T>
struct CrossEntropyRows {  // loss and lse of rows [r0, r1), grouped as SoftmaxRows' log-softmax
  static constexpr bool takes_isa = true;
  template <Isa I>
  static FASTNORM_INLINE void run(const T* x, const std::int64_t* target, idx r0, idx r1, idx C, double eps,
                                  ClassWeights<T> cw, std::int64_t ignore_index, double* loss, double* lse) {
    for (idx r = r0; r < r1; ++r) {  // rows with no loss
      if (!counted(target[r], C, ignore_index)) {
        loss[r] = 0;
        lse[r] = std::numeric_limits<double>::quiet_NaN();
      }
    }
#if FASTNORM_MULTI_ISA
    // (not with label smoothing: there GCC fuses the loss's multiply-adds differently in the two loops, and a last
    // bit of the loss would move)
    if constexpr (I == Isa::v4 && std::is_same_v<T, float>) {
      const bool tiled = eps == 0;
      if (tiled && C <= kLanes) return tiles<1>(x, target, r0, r1, C, eps, cw, ignore_index, loss, lse);
      if (tiled && C <= 2 * kLanes) return tiles<2>(x, target, r0, r1, C, eps, cw, ignore_index, loss, lse);
      if (tiled && C <= 3 * kLanes) return tiles<3>(x, target, r0, r1, C, eps, cw, ignore_index, loss, lse);
    }
#endif
    over_row_groups<I>(
        x, r0, r1, C, [&](idx r) { return counted(target[r], C, ignore_index); },
        [&](idx r, T m, double log_sum_exact) {
          const std::int64_t t = target[r];
          if (!counted(t, C, ignore_index)) return;
          const T* xr = x + r * C;
          const double ls = static_cast<double>(static_cast<T>(log_sum_exact)), mj = static_cast<double>(m);
          lse[r] = mj + ls;
          const double swx = eps != 0 ? smoothing_sum<I>(xr, cw.w_t, C) : 0.0;
          loss[r] = cw.loss(t, static_cast<double>(xr[t]), mj, ls, eps, swx, C);
        });
  }

#if FASTNORM_MULTI_ISA
  template <idx Blocks>  // rows as lanes (ClassTile): each counted row's loss and lse as above
  static FASTNORM_INLINE void tiles(const float* x, const std::int64_t* target, idx r0, idx r1, idx C, double eps,
                                    ClassWeights<float> cw, std::int64_t ignore_index, double* loss, double* lse) {
    ClassTile<Blocks> tile;
    double log_sum[kLanes];
    for (idx g0 = r0; g0 < r1; g0 += kLanes) {
      const idx n = std::min(kLanes, r1 - g0);
      tile.sums(x, nullptr, g0, n, r1, C, eps, cw);
#pragma omp simd
      for (idx j = 0; j < n; ++j) log_sum[j] = math::log1p_(tile.beyond[j]);  // ExpSum::log_total, side by side
      for (idx j = 0; j < n; ++j) {
        const idx row = g0 + j;
        const std::int64_t t = target[row];
        if (!counted(t, C, ignore_index)) continue;
        const double ls = static_cast<double>(static_cast<float>(log_sum[j])), mj = static_cast<double>(tile.m[j]);
        lse[row] = mj + ls;
        loss[row] = cw.loss(t, static_cast<double>(x[row * C + t]), mj, ls, eps, tile.swx[j], C);
      }
    }
  }
#endif
};

template <class T>
struct CrossEntropyGradRows {
  static FASTNORM_INLINE void run(const T* x, const std::int64_t* target, const double* lse, const double* g, T* dx,
                                  idx r0, idx r1, idx C, double eps, ClassWeights<T> cw, std::int64_t ignore_index) {
    for (idx r = r0; r < r1; ++r) {
      const std::int64_t t = target[r];
      T* dxr = dx + r * C;
      if (!counted(t, C, ignore_index)) {
        std::fill(dxr, dxr + C, T(0));
        continue;
      }
      const T* xr = x + r * C;
      const double wt = cw.at(t);
      const T a = static_cast<T>(cw.share(t, g[r], eps, C));
      const T l = static_cast<T>(lse[r]);
      const T lo = static_cast<T>(lse[r] - static_cast<double>(l));  // x - lse without losing lse's low part
      const double c = g[r] * eps / static_cast<double>(C);
      if (cw.w == nullptr || eps == 0) {
        const T ct = static_cast<T>(c);
#pragma omp simd
        for (idx i = 0; i < C; ++i) dxr[i] = a * exp_le0((xr[i] - l) - lo) - ct;
      } else {
#pragma omp simd
        for (idx i = 0; i < C; ++i) dxr[i] = a * exp_le0((xr[i] - l) - lo) - static_cast<T>(c * cw.w[i]);
      }
      dxr[t] -= static_cast<T>(g[r] * (1.0 - eps) * wt);
    }
  }
};

// A group of n rows' scalars side by side in vector lanes: log(sum of exponentials) from the sum beyond 1
// (ExpSum), and each row's share of its gradient over its sum of scaled exponentials (0 for rows that count nothing).
template <class T>
FASTNORM_INLINE void group_scalars(idx n, const double* beyond, const double* total, const std::int64_t* target,
                                   const double* g, idx C, double eps, const ClassWeights<T>& cw,
                                   std::int64_t ignore_index, double* log_sum, double* coef) {
#pragma omp simd
  for (idx j = 0; j < n; ++j) log_sum[j] = math::log1p_(beyond[j]);
  for (idx j = 0; j < n; ++j) coef[j] = counted(target[j], C, ignore_index) ? cw.share(target[j], g[j], eps, C) : 0.0;
#pragma omp simd
  for (idx j = 0; j < n; ++j) coef[j] /= total[j];
}

// Loss and dlogits of rows [r0, r1), a group of rows at a time: each row's maximum and sums (exp(x - max) * 2^K
// written to dx on the way), then the group's log1p and divisions side by side in vector lanes (one row at a time
// they were a chain of dependent divisions as long as the row's vector work when rows are short), then each row's
// dx scaled into softmax's share of the gradient, the target's and the smoothing's terms subtracted.  The group
// stays in L1 between the steps.  The loss as CrossEntropyRows computes it.
template <class T>
struct CrossEntropyGradFusedRows {
  static constexpr bool takes_isa = true;
  template <Isa I>
  static FASTNORM_INLINE void run(const T* x, const std::int64_t* target, const double* g, T* dx, idx r0, idx r1,
                                  idx C, double eps, ClassWeights<T> cw, std::int64_t ignore_index, double* loss) {
#if FASTNORM_MULTI_ISA
    if constexpr (I == Isa::v4 && std::is_same_v<T, float>) {
      if (C <= kLanes) return tiles<I, 1>(x, target, g, dx, r0, r1, C, eps, cw, ignore_index, loss);
      if (C <= 2 * kLanes) return tiles<I, 2>(x, target, g, dx, r0, r1, C, eps, cw, ignore_index, loss);
      if (C <= 3 * kLanes) return tiles<I, 3>(x, target, g, dx, r0, r1, C, eps, cw, ignore_index, loss);
    }
#endif
    const idx group = group_rows<T>(C);
    T m[kGroupRows];
    double log_sum[kGroupRows], beyond[kGroupRows];
    double total[kGroupRows], coef[kGroupRows], swx[kGroupRows];
    for (idx g0 = r0; g0 < r1; g0 += group) {
      const idx n = std::min(group, r1 - g0);
      for (idx j = 0; j < n; ++j) {
        const idx r = g0 + j;
        const T* xr = x + r * C;
        T* dxr = dx + r * C;
        beyond[j] = 0, total[j] = 1, swx[j] = 0;
        if (!counted(target[r], C, ignore_index)) {
          m[j] = 0;
          continue;
        }
        m[j] = row_max<I>(xr, C);
        const ExpSum s = exp_sum<I, true, true>(xr, C, m[j], dxr);
        beyond[j] = (s.ties - 1.0) + s.rest;
        total[j] = s.scaled;
        if (eps != 0) swx[j] = smoothing_sum<I>(xr, cw.w_t, C);
      }
      group_scalars(n, beyond, total, target + g0, g + g0, C, eps, cw, ignore_index, log_sum, coef);
      for (idx j = 0; j < n; ++j) {
        const idx r = g0 + j;
        const std::int64_t t = target[r];
        T* dxr = dx + r * C;
        if (!counted(t, C, ignore_index)) {
          loss[r] = 0;
          std::fill(dxr, dxr + C, T(0));
          continue;
        }
        // log(sum) rounded to T, as CrossEntropyRows has it
        const double ls = static_cast<double>(static_cast<T>(log_sum[j]));
        const double wt = cw.at(t), mj = static_cast<double>(m[j]);
        loss[r] = cw.loss(t, static_cast<double>(x[r * C + t]), mj, ls, eps, swx[j], C);
        // dx = a softmax - c w - b [i == t]
        const T a = static_cast<T>(coef[j]);
        const double c = g[r] * eps / static_cast<double>(C);
        if (cw.w == nullptr || eps == 0) {
          const T ct = static_cast<T>(c);
#pragma omp simd
          for (idx i = 0; i < C; ++i) dxr[i] = dxr[i] * a - ct;
        } else {
#pragma omp simd
          for (idx i = 0; i < C; ++i) dxr[i] = dxr[i] * a - static_cast<T>(c * cw.w[i]);
        }
        dxr[t] -= static_cast<T>(g[r] * (1.0 - eps) * wt);
      }
    }
  }


#if FASTNORM_MULTI_ISA
  template <Isa I, idx Blocks>  // rows as lanes (ClassTile)
  static FASTNORM_INLINE void tiles(const float* x, const std::int64_t* target, const double* g, float* dx, idx r0,
                                    idx r1, idx C, double eps, ClassWeights<float> cw, std::int64_t ignore_index,
                                    double* loss) {
    ClassTile<Blocks> tile;
    double log_sum[kLanes], coef[kLanes];
    for (idx g0 = r0; g0 < r1; g0 += kLanes) {
      const idx n = std::min(kLanes, r1 - g0);
      tile.sums(x, dx, g0, n, r1, C, eps, cw);
      group_scalars(n, tile.beyond, tile.total, target + g0, g + g0, C, eps, cw, ignore_index, log_sum, coef);
      alignas(64) float a[kLanes], ct[kLanes];
      double c[kLanes];
      for (idx j = 0; j < kLanes; ++j) {
        a[j] = j < n ? static_cast<float>(coef[j]) : 0.0f;
        c[j] = j < n ? g[g0 + j] * eps / static_cast<double>(C) : 0.0;
        ct[j] = static_cast<float>(c[j]);
      }
      // dx = a softmax - c w, stored; then the target's term, and ignored rows zeroed
      for (idx k = 0; k < ClassTile<Blocks>::kCols; ++k) {
        float* col = tile.v[k];
        if (cw.w == nullptr || eps == 0) {
#pragma omp simd
          for (idx j = 0; j < kLanes; ++j) col[j] = col[j] * a[j] - ct[j];
        } else {
          const double wk = k < C ? cw.w[k] : 0.0;
#pragma omp simd
          for (idx j = 0; j < kLanes; ++j) col[j] = col[j] * a[j] - static_cast<float>(c[j] * wk);
        }
      }
      for (idx b = 0; b < Blocks; ++b)
        RowTile::store(tile.v + b * kLanes, dx + g0 * C + b * kLanes, C, n, std::min(kLanes, C - b * kLanes));
      for (idx j = 0; j < n; ++j) {
        const idx row = g0 + j;
        const std::int64_t tj = target[row];
        float* dxr = dx + row * C;
        if (!counted(tj, C, ignore_index)) {
          loss[row] = 0;
          std::fill(dxr, dxr + C, 0.0f);
          continue;
        }
        const double ls = static_cast<double>(static_cast<float>(log_sum[j]));
        loss[row] = cw.loss(tj, static_cast<double>(x[row * C + tj]), static_cast<double>(tile.m[j]), ls, eps,
                            tile.swx[j], C);
        dxr[tj] -= static_cast<float>(g[row] * (1.0 - eps) * cw.at(tj));
      }
    }
  }
#endif
};

// The class weights of a call; w_t (rounded to T) lives in `storage`.
template <class T>
ClassWeights<T> class_weights(const double* w, idx C, std::vector<T>& storage) {
  if (w == nullptr) return {nullptr, nullptr, static_cast<double>(C)};
  storage.assign(w, w + C);
  double sum = 0;
  for (idx i = 0; i < C; ++i) sum += w[i];
  return {w, storage.data(), sum};
}

}  // namespace

template <class T>
void cross_entropy_forward(const T* x, const std::int64_t* target, idx N, idx C, double eps, const double* w,
                           std::int64_t ignore_index, double* loss, double* lse, int num_threads) {
  std::vector<T> w_t;
  const ClassWeights<T> cw = class_weights(w, C, w_t);
  parallel_for(N, rows_per_task(C), num_threads, [&](idx r0, idx r1) {
    isa_call<CrossEntropyRows<T>>(x, target, r0, r1, C, eps, cw, ignore_index, loss, lse);
  });
}

template <class T>
void cross_entropy_backward(const T* x, const std::int64_t* target, const double* lse, const double* g, T* dx, idx N,
                            idx C, double eps, const double* w, std::int64_t ignore_index, int num_threads) {
  std::vector<T> w_t;
  const ClassWeights<T> cw = class_weights(w, C, w_t);
  parallel_for(N, rows_per_task(C), num_threads, [&](idx r0, idx r1) {
    isa_call<CrossEntropyGradRows<T>>(x, target, lse, g, dx, r0, r1, C, eps, cw, ignore_index);
  });
}

template <class T>
void cross_entropy_with_grad(const T* x, const std::int64_t* target, const double* g, T* dx, idx N, idx C, double eps,
                             const double* w, std::int64_t ignore_index, double* loss, int num_threads) {
  std::vector<T> w_t;
  const ClassWeights<T> cw = class_weights(w, C, w_t);
  parallel_for(N, rows_per_task(C), num_threads, [&](idx r0, idx r1) {
    isa_call<CrossEntropyGradFusedRows<T>>(x, target, g, dx, r0, r1, C, eps, cw, ignore_index, loss);
  });
}

#define FASTNORM_SOFTMAX(T)                                                                                          \
  template void softmax_forward<T>(const T*, T*, idx, idx, idx, bool, int);                                        \
  template void softmax_backward<T>(const T*, const T*, T*, idx, idx, idx, bool, int);                             \
  template void cross_entropy_forward<T>(const T*, const std::int64_t*, idx, idx, double, const double*,             \
                                         std::int64_t, double*, double*, int);                                      \
  template void cross_entropy_backward<T>(const T*, const std::int64_t*, const double*, const double*, T*, idx, idx, \
                                          double, const double*, std::int64_t, int);                                \
  template void cross_entropy_with_grad<T>(const T*, const std::int64_t*, const double*, T*, idx, idx, double,       \
                                           const double*, std::int64_t, double*, int);
FASTNORM_SOFTMAX(float)
FASTNORM_SOFTMAX(double)

}  // namespace fastnorm
