// The loop bodies of the per-channel normalization kernels (batch, group and instance norm, moments): each an
// always-inline static run() holding one `#pragma omp simd` loop, to be run through isa_call (isa.h).  "Run": the
// contiguous values of one channel; "row": one value of each of C channels (channels-last).
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "fastnorm/activation_ops.h"
#include "fastnorm/blocked.h"
#include "fastnorm/centering.h"
#include "fastnorm/isa.h"
#include "fastnorm/moments.h"
#include "fastnorm/narrow.h"
#include "fastnorm/parallel.h"
#include "fastnorm/row_blocks.h"
#include "fastnorm/scratch.h"

namespace fastnorm {
namespace loops {

// v's first C values extended periodically to C + kLanes (v[C + j] = v[j % C]): the constants of channels-last
// bodies, which read kLanes consecutive channels from any channel on.
template <class V>
void extend_periodic(std::vector<V>& v, idx C) {
  v.resize(static_cast<std::size_t>(C + kLanes));
  for (idx j = 0, c = 0; j < kLanes; ++j, c = c + 1 == C ? 0 : c + 1)  // counted: no division per value
    v[C + j] = C > 0 ? v[c] : V(0);
}

// Per-channel constants in T: the mean's hi (centering.h) and the coefficients of one of the two maps of centered
// values, the constant folded: affine, y = (x - hi) a + b; gradient, dx = a dy + ((x - hi) b + c).
template <class T>
struct ChannelConsts {
  std::vector<T> mean_hi, a, b, c;
  // a = scale, b = shift (0 where shift is null)
  static ChannelConsts affine(idx C, const double* mean, const double* scale, const double* shift) {
    ChannelConsts k(C);
    for (idx i = 0; i < C; ++i)
      affine_consts(mean[i], scale[i], shift ? shift[i] : 0.0, &k.mean_hi[i], &k.a[i], &k.b[i]);
    k.extend(C);
    return k;
  }
  // a = k_dy, b = k_xmu, c = k_one
  static ChannelConsts gradient(idx C, const double* mean, const double* k_dy, const double* k_xmu,
                                const double* k_one) {
    ChannelConsts k(C);
    for (idx i = 0; i < C; ++i) {
      k.mean_hi[i] = static_cast<T>(mean[i]);
      k.a[i] = static_cast<T>(k_dy[i]);
      k.b[i] = static_cast<T>(k_xmu[i]);
      k.c[i] = folded(k_one[i], mean[i], k.mean_hi[i], k_xmu[i]);
    }
    k.extend(C);
    return k;
  }

 private:
  explicit ChannelConsts(idx C) : mean_hi(C), a(C), b(C), c(C, T(0)) {}
  void extend(idx C) {
    for (auto* v : {&mean_hi, &a, &b, &c}) extend_periodic(*v, C);  // for the channels-last bodies
  }
};

// Forward bodies: y = Op((x - mean) * scale + shift), Op an activation of activation_ops.h (Identity: none).
// T is the storage type: narrow storage is widened and rounded in registers (narrow.h).
template <class V, class Op>
struct Affine {
  V hi, scale, shift;  // shift folded (centering.h: affine_consts)
  act::Params<V> p;
  FASTNORM_INLINE V operator()(V x) const { return Op::forward(centred_affine(x, hi, scale, shift), p); }
};

template <Isa I, class T, class Op>
struct AffineBlock {  // one block of a run (row_blocks.h)
  static constexpr bool kElementwise = true;
  static constexpr bool kPairs = std::is_same_v<T, bf16>;  // the same constants for every value
  const T* x;
  Affine<compute_t<T>, Op> f;
  FASTNORM_INLINE void operator()(idx d, idx count, compute_t<T>* y) const {
    compute_t<T> buf[kLanes];
    const compute_t<T>* xb = load_block<I>(x, d, count, buf);
#pragma omp simd
    for (idx j = 0; j < kLanes; ++j) y[j] = f(xb[j]);
  }
#if FASTNORM_MULTI_ISA
  FASTNORM_INLINE void pair(idx d, float* even, float* odd) const { pair_values<1>({x}, d, even, odd, f); }
#endif
};

template <class T, class Op = act::Identity>
struct ApplyRun {  // one channel, written out from registers: rounded for narrow T, streamed with `stream`
  static constexpr bool takes_isa = true;
  using V = compute_t<T>;
  template <Isa I>
  static FASTNORM_INLINE void run(const T* x, T* y, idx n, V hi, V scale, V shift, act::Params<V> p = {},
                                  bool stream = false) {
    map_blocks<I>(y, n, stream, AffineBlock<I, T, Op>{x, {hi, scale, shift, p}});
  }
};

// The channel of the run after run r's channel c in an (A, C, B) array: counted, not divided (r % C per run, a 64-bit
// division per run of 196 values, cost 15% of group norm's backward on 14x14 maps).  Plain loops call it: a lambda
// handed to a helper may be compiled for the default ISA level, not the caller's.
FASTNORM_INLINE idx next_channel(idx c, idx C) { return c + 1 == C ? 0 : c + 1; }

template <class T, class Op = act::Identity>
struct ApplyRuns {  // runs [r0, r1) of an (A, C, B) array, run r being channel r % C: one dispatch for many runs
  static constexpr bool takes_isa = true;
  using V = compute_t<T>;
  template <Isa I>
  static FASTNORM_INLINE void run(const T* x, T* y, idx r0, idx r1, idx C, idx B, const V* hi, const V* scale,
                                  const V* shift, act::Params<V> p, bool stream) {
    for (idx r = r0, c = r0 % C; r < r1; ++r, c = next_channel(c, C))
      ApplyRun<T, Op>::template run<I>(x + r * B, y + r * B, B, hi[c], scale[c], shift[c], p, stream);
  }
};

// Channels-last rows as one flat run of n values, value i being channel i % C (the run starts at a row), written
// out from registers as ApplyRun.  A block reads its channels' constants as kLanes consecutive values of arrays
// extended periodically past C (extend_periodic).
// The channel of value d of a flat run, for the increasing d that map_blocks visits.
struct ChannelOf {
  idx C, at = 0, c = 0;
  FASTNORM_INLINE idx operator()(idx d) {
    for (c += d - at, at = d; c >= C;) c -= C;
    return c;
  }
};

template <class T, class Op = act::Identity>
struct ApplyChannelsLast {
  static constexpr bool takes_isa = true;
  using V = compute_t<T>;
  template <Isa I>
  struct Block {
    static constexpr bool kElementwise = true;
    const T* x;
    const V *hi, *scale, *shift;
    act::Params<V> p;
    mutable ChannelOf channel;
    FASTNORM_INLINE void operator()(idx d, idx count, V* y) const {
      const idx c = channel(d);
      V bx[kLanes];
      const V* xb = load_block<I>(x, d, count, bx);
#pragma omp simd
      for (idx j = 0; j < kLanes; ++j)
        y[j] = Op::forward(centred_affine(xb[j], hi[c + j], scale[c + j], shift[c + j]), p);
    }
  };
  template <Isa I>
  static FASTNORM_INLINE void run(const T* x, T* y, idx n, idx C, const V* hi, const V* scale, const V* shift,
                                  act::Params<V> p, bool stream) {
    map_blocks<I>(y, n, stream, Block<I>{x, hi, scale, shift, p, ChannelOf{C}});
  }
};

// The post-op's backward: dz = Op'(z) dy with z = (x - mean) * scale + shift recomputed as the forward did, into
// a scratch block that the normalization's backward then reads in place of dy.
template <class T, class Op>
struct PostOpGradRun {  // one channel's run of n values
  static FASTNORM_INLINE void run(const T* dy, const T* x, T* dz, idx n, T hi, T scale, T shift, act::Params<T> p) {
#pragma omp simd
    for (idx i = 0; i < n; ++i) dz[i] = Op::backward(dy[i], centred_affine(x[i], hi, scale, shift), p);
  }
};

template <class T, class Op>
struct PostOpGradRuns {  // runs [r0, r1) of an (A, C, B) array; dz holds (r1 - r0) * B values
  static FASTNORM_INLINE void run(const T* dy, const T* x, T* dz, idx r0, idx r1, idx C, idx B, const T* hi,
                                  const T* scale, const T* shift, act::Params<T> p) {
    for (idx r = r0, c = r0 % C; r < r1; ++r, c = next_channel(c, C))
      PostOpGradRun<T, Op>::run(dy + r * B, x + r * B, dz + (r - r0) * B, B, hi[c], scale[c], shift[c], p);
  }
};

template <class T, class Op>
struct PostOpGradRows {  // rows of C channels, in tiles of kW channels (a compile-time width vectorises fully)
  static constexpr idx kW = 16, kAheadRows = 16;
  static FASTNORM_INLINE T value(const T* dy, const T* x, idx c, const T* hi, const T* scale, const T* shift,
                                 act::Params<T> p) {
    return Op::backward(dy[c], centred_affine(x[c], hi[c], scale[c], shift[c]), p);
  }
  static FASTNORM_INLINE void run(const T* dy, const T* x, T* dz, idx rows, idx C, const T* hi, const T* scale,
                                  const T* shift, act::Params<T> p) {
    const idx tiled = C - C % kW;
    for (idx r = 0; r < rows; ++r) {
      const T *dyr = dy + r * C, *xr = x + r * C;
      T* dzr = dz + r * C;
      // the row kAheadRows ahead, every line: this is the pass that reads dy and x from memory, rows of a few
      // lines each, and the hardware prefetcher stops at each page (as in column_sums)
      for (idx c = 0; c < C; c += 64 / static_cast<idx>(sizeof(T))) {
        __builtin_prefetch(dyr + kAheadRows * C + c);
        __builtin_prefetch(xr + kAheadRows * C + c);
      }
      for (idx c0 = 0; c0 < tiled; c0 += kW) {
#pragma omp simd
        for (idx j = 0; j < kW; ++j) dzr[c0 + j] = value(dyr, xr, c0 + j, hi, scale, shift, p);
      }
#pragma omp simd
      for (idx c = tiled; c < C; ++c) dzr[c] = value(dyr, xr, c, hi, scale, shift, p);
    }
  }
};

// dy and x stored as X: T, or already widened into V
template <class T, class X = T>
struct GradRun {  // one channel: dx = k_dy dy + k_xmu (x - mean) + k_one; T the storage type, as ApplyRun
  static constexpr bool takes_isa = true;
  using V = compute_t<T>;
  struct Value {
    V hi, k_dy, k_xmu, k_one;  // k_one folded
    FASTNORM_INLINE V operator()(V g, V x) const { return centred_grad(g, x, hi, k_dy, k_xmu, k_one); }
  };
  template <Isa I>
  struct Block {  // row_blocks.h
    static constexpr bool kElementwise = true;
    static constexpr bool kPairs = std::is_same_v<T, bf16> && std::is_same_v<X, bf16>;
    const X *dy, *x;
    Value v;
    FASTNORM_INLINE void operator()(idx d, idx count, V* dx) const {
      V b_dy[kLanes], b_x[kLanes];
      const V* g = load_block<I>(dy, d, count, b_dy);
      const V* xb = load_block<I>(x, d, count, b_x);
#pragma omp simd
      for (idx j = 0; j < kLanes; ++j) dx[j] = v(g[j], xb[j]);
    }
#if FASTNORM_MULTI_ISA
    FASTNORM_INLINE void pair(idx d, float* even, float* odd) const { pair_values<2>({dy, x}, d, even, odd, v); }
#endif
  };
  template <Isa I>
  static FASTNORM_INLINE void run(const X* dy, const X* x, T* dx, idx n, V hi, V k_dy, V k_xmu, V k_one,
                                  bool stream = false) {
    map_blocks<I>(dx, n, stream, Block<I>{dy, x, {hi, k_dy, k_xmu, k_one}});
  }
};

template <class T, class X = T>
struct GradRuns {  // runs [r0, r1), as ApplyRuns (dy and x stored as X, as GradRun)
  static constexpr bool takes_isa = true;
  using V = compute_t<T>;
  template <Isa I>
  static FASTNORM_INLINE void run(const X* dy, const X* x, T* dx, idx r0, idx r1, idx C, idx B, const V* hi,
                                  const V* k_dy, const V* k_xmu, const V* k_one, bool stream) {
    for (idx r = r0, c = r0 % C; r < r1; ++r, c = next_channel(c, C)) {
      const idx at = r * B;
      GradRun<T, X>::template run<I>(dy + at, x + at, dx + at, B, hi[c], k_dy[c], k_xmu[c], k_one[c], stream);
    }
  }
};

template <class T>
struct GradChannelsLast {  // dx as GradRun, over channels-last rows as ApplyChannelsLast
  static constexpr bool takes_isa = true;
  using V = compute_t<T>;
  template <Isa I>
  struct Block {
    static constexpr bool kElementwise = true;
    const T *dy, *x;
    const V *hi, *k_dy, *k_xmu, *k_one;
    mutable ChannelOf channel;
    FASTNORM_INLINE void operator()(idx d, idx count, V* dx) const {
      const idx c = channel(d);
      V b_dy[kLanes], b_x[kLanes];
      const V* g = load_block<I>(dy, d, count, b_dy);
      const V* xb = load_block<I>(x, d, count, b_x);
#pragma omp simd
      for (idx j = 0; j < kLanes; ++j)
        dx[j] = centred_grad(g[j], xb[j], hi[c + j], k_dy[c + j], k_xmu[c + j], k_one[c + j]);
    }
  };
  template <Isa I>
  static FASTNORM_INLINE void run(const T* dy, const T* x, T* dx, idx n, idx C, const V* hi, const V* k_dy,
                                  const V* k_xmu, const V* k_one, bool stream) {
    map_blocks<I>(dx, n, stream, Block<I>{dy, x, hi, k_dy, k_xmu, k_one, ChannelOf{C}});
  }
};

template <class T>
struct GradRows {
  static FASTNORM_INLINE void run(const T* dy, const T* x, T* dx, idx rows, idx C, const T* hi, const T* k_dy,
                                  const T* k_xmu, const T* k_one) {
    for (idx r = 0; r < rows; ++r) {
      const T *dyr = dy + r * C, *xr = x + r * C;
      T* dxr = dx + r * C;
#pragma omp simd
      for (idx c = 0; c < C; ++c) dxr[c] = centred_grad(dyr[c], xr[c], hi[c], k_dy[c], k_xmu[c], k_one[c]);
    }
  }
};

// Sums of dy and dy (x - mean) over one channel's run, added to *s_dy and *s_dyx.  double is summed in double;
// float in pieces of kPiece values (16 per vector lane), per lane in float and folded pairwise, the pieces added in
// double: the pieces' rounding is float's over 16 terms, the run's double's (all in double made the backward
// compute-bound).  dy and x stored as X: float16 / bfloat16 read in registers, with the bits of their float32 values.
template <class X>
struct SumsRun {
  static constexpr bool takes_isa = true;
  static constexpr idx kPiece = 256;
  using C = compute_t<X>;
  template <Isa I>
  static FASTNORM_INLINE void add_block(const X* dy, const X* x, idx i, idx count, C hi, C* pa, C* pb) {
    C b_dy[kLanes], b_x[kLanes];
    const C* dyb = load_block<I>(dy, i, count, b_dy);  // zero-padded: short blocks add nothing
    const C* xb = load_block<I>(x, i, count, b_x);
#pragma omp simd
    for (idx j = 0; j < kLanes; ++j) {
      pa[j] += dyb[j];
      pb[j] += dyb[j] * (xb[j] - hi);
    }
  }
  template <Isa I>
  static FASTNORM_INLINE void run(const X* dy, const X* x, idx n, double mean, double* s_dy, double* s_dyx) {
    double a = 0, b = 0;
    if constexpr (std::is_same_v<X, double>) {
#pragma omp simd reduction(+ : a, b)
      for (idx i = 0; i < n; ++i) {
        a += dy[i];
        b += dy[i] * (x[i] - mean);
      }
    } else {
      const C hi = static_cast<C>(mean);  // sums of dy (x - hi), the rest of the mean taken off at the end
      for (idx i0 = 0; i0 < n; i0 += kPiece) {
        const idx i1 = std::min(n, i0 + kPiece);
        C pa[kLanes] = {}, pb[kLanes] = {};
        idx i = i0;
        for (; i + kLanes <= i1; i += kLanes) add_block<I>(dy, x, i, kLanes, hi, pa, pb);
        if (i < i1) add_block<I>(dy, x, i, i1 - i, hi, pa, pb);
        a += fold_lanes(pa);
        b += fold_lanes(pb);
      }
      b -= mean_rest(mean, hi) * a;
    }
    *s_dy += a;
    *s_dyx += b;
  }
};

// Per-column sums of two terms over rows of C values: s1[c] += first, s2[c] += second of each row's element c.
// Tiles of kTile columns keep their accumulators in registers over kRowBlock rows (a row-by-row sweep of all
// columns loads and stores them at every row); each column is still summed row after row, in order.
template <idx kTile, class Term, class T>
FASTNORM_INLINE void column_sums_tiled(const T* a, const T* b, idx rows, idx C, const double* k, double* s1,
                                       double* s2) {
  constexpr idx kRowBlock = 64;
  const idx tiled = C - C % kTile;
  for (idx r0 = 0; r0 < rows; r0 += kRowBlock) {
    const idx r1 = std::min(rows, r0 + kRowBlock);
    for (idx c0 = 0; c0 < tiled; c0 += kTile) {
      double acc1[kTile], acc2[kTile], kk[kTile];
      for (idx j = 0; j < kTile; ++j) {
        acc1[j] = s1[c0 + j];
        acc2[j] = s2[c0 + j];
        kk[j] = k[c0 + j];
      }
      for (idx r = r0; r < r1; ++r) {
        const T *ar = a + r * C + c0, *br = b + r * C + c0;
        // this tile's line one row block ahead: the tiles walk rows C values apart, and without it kept too few
        // loads in flight (group norm channels-last, 32x64x56x56: 4.0 -> 3.3 ms).  A hint, never a fault, past the
        // array's end.
        __builtin_prefetch(ar + kRowBlock * C);
        if (a != b) __builtin_prefetch(br + kRowBlock * C);
#pragma omp simd
        for (idx j = 0; j < kTile; ++j) {
          acc1[j] += Term::first(ar[j], br[j], kk[j]);
          acc2[j] += Term::second(ar[j], br[j], kk[j]);
        }
      }
      for (idx j = 0; j < kTile; ++j) {
        s1[c0 + j] = acc1[j];
        s2[c0 + j] = acc2[j];
      }
    }
    for (idx r = r0; r < r1; ++r) {
      const T *ar = a + r * C, *br = b + r * C;
#pragma omp simd
      for (idx c = tiled; c < C; ++c) {
        s1[c] += Term::first(ar[c], br[c], k[c]);
        s2[c] += Term::second(ar[c], br[c], k[c]);
      }
    }
  }
}
// Tiles of 64 columns where C allows: a channels-last row of 64 channels read in one sweep, its 2 x 64 double
// accumulators still in registers (16 of AVX-512's 32).  Same sums, same order.
template <class Term, class T>
FASTNORM_INLINE void column_sums(const T* a, const T* b, idx rows, idx C, const double* k, double* s1, double* s2) {
  if (C % 64 == 0)
    column_sums_tiled<64, Term>(a, b, rows, C, k, s1, s2);
  else
    column_sums_tiled<16, Term>(a, b, rows, C, k, s1, s2);
}

// (x - shift) and (x - shift)^2, in double (a = x; b unused).
struct ShiftedTerms {
  template <class T>
  static FASTNORM_INLINE double first(T x, T, double shift) {
    return static_cast<double>(x) - shift;
  }
  template <class T>
  static FASTNORM_INLINE double second(T x, T, double shift) {
    const double d = static_cast<double>(x) - shift;
    return d * d;
  }
};

// dy and dy (x - mean), in double (a = dy, b = x).
struct GradTerms {
  template <class T>
  static FASTNORM_INLINE double first(T dy, T, double) {
    return static_cast<double>(dy);
  }
  template <class T>
  static FASTNORM_INLINE double second(T dy, T x, double mean) {
    return static_cast<double>(dy) * (static_cast<double>(x) - mean);
  }
};

template <class T>
struct SumsRuns {  // runs [r0, r1), as ApplyRuns: s_dy[c] and s_dyx[c] += the run's sums
  static constexpr bool takes_isa = true;
  template <Isa I>
  static FASTNORM_INLINE void run(const T* dy, const T* x, idx r0, idx r1, idx C, idx B, const double* mean,
                                  double* s_dy, double* s_dyx) {
    for (idx r = r0, c = r0 % C; r < r1; ++r, c = next_channel(c, C)) {
      const idx at = r * B;
      SumsRun<T>::template run<I>(dy + at, x + at, B, mean[c], s_dy + c, s_dyx + c);
    }
  }
};

// Per-channel sums of dy and dy (x - mean[c]) over rows of C channels, added to s_dy, s_dyx.  double: summed in
// double.  float: as SumsRun, in float over kRowBlock rows (a tile of columns in registers: 64 where C allows, as
// column_sums, else 16, of compile-time width), those partial sums added in double.  Same sums for any tiling.
template <class T>
struct SumsRows {
  static constexpr idx kRowBlock = 16;
  template <idx W>  // columns [c0, c0 + w), w <= W
  static FASTNORM_INLINE void tile(const T* dy, const T* x, idx r0, idx r1, idx C, idx c0, idx w,
                                   const double* mean, double* s_dy, double* s_dyx) {
    T hi[W] = {}, a[W] = {}, b[W] = {};  // sums of dy (x - hi), the rest of the mean taken off at the end
    for (idx j = 0; j < w; ++j) hi[j] = static_cast<T>(mean[c0 + j]);
    for (idx r = r0; r < r1; ++r) {
      const T *dr = dy + r * C + c0, *xr = x + r * C + c0;
      __builtin_prefetch(dr + kRowBlock * C);  // as in column_sums
      __builtin_prefetch(xr + kRowBlock * C);
      if (w == W) {
#pragma omp simd
        for (idx j = 0; j < W; ++j) {
          a[j] += dr[j];
          b[j] += dr[j] * (xr[j] - hi[j]);
        }
      } else {
        for (idx j = 0; j < w; ++j) {
          a[j] += dr[j];
          b[j] += dr[j] * (xr[j] - hi[j]);
        }
      }
    }
    for (idx j = 0; j < w; ++j) {
      s_dy[c0 + j] += static_cast<double>(a[j]);
      s_dyx[c0 + j] += static_cast<double>(b[j]) - mean_rest(mean[c0 + j], hi[j]) * static_cast<double>(a[j]);
    }
  }
  template <idx W>
  static FASTNORM_INLINE void tiled(const T* dy, const T* x, idx rows, idx C, const double* mean, double* s_dy,
                                    double* s_dyx) {
    for (idx r0 = 0; r0 < rows; r0 += kRowBlock) {
      const idx r1 = std::min(rows, r0 + kRowBlock);
      for (idx c0 = 0; c0 < C; c0 += W) tile<W>(dy, x, r0, r1, C, c0, std::min(W, C - c0), mean, s_dy, s_dyx);
    }
  }
  static FASTNORM_INLINE void run(const T* dy, const T* x, idx rows, idx C, const double* mean, double* s_dy,
                                  double* s_dyx) {
    if constexpr (sizeof(T) == sizeof(double)) {
      column_sums<GradTerms>(dy, x, rows, C, mean, s_dy, s_dyx);
    } else if (C % 64 == 0) {
      tiled<64>(dy, x, rows, C, mean, s_dy, s_dyx);
    } else {
      tiled<16>(dy, x, rows, C, mean, s_dy, s_dyx);
    }
  }
};

// Per-channel shifted sums over rows of `channels` values (channels-last): s1[c] += x[r, c] - shift[c], etc.
template <class T>
struct ShiftedRowSums {  // per-column sums of x - shift[c] and its square over rows of C values, added to s1, s2
  static FASTNORM_INLINE void run(const T* x, idx rows, idx C, const double* shift, double* s1, double* s2) {
    column_sums<ShiftedTerms>(x, x, rows, C, shift, s1, s2);
  }
};

}  // namespace loops
}  // namespace fastnorm
