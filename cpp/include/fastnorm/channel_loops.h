// The loop bodies of the per-channel normalization kernels (batch, group and instance norm, moments): each an
// always-inline static run() holding one `#pragma omp simd` loop, to be run through isa_call (isa.h).  "Run": the
// contiguous values of one channel; "row": one value of each of C channels (channels-last).
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "fastnorm/activation_ops.h"
#include "fastnorm/blocked.h"
#include "fastnorm/isa.h"
#include "fastnorm/moments.h"
#include "fastnorm/narrow.h"
#include "fastnorm/parallel.h"
#include "fastnorm/row_blocks.h"

namespace fastnorm {
namespace loops {

// Per-thread scratch blocks of at least n values, one per use (so that a kernel can hold several at once), kept
// between calls: allocating one per task (hundreds of KB) cost page faults on every call.
enum class Scratch { work, piece, x, dy, out };

template <class T, Scratch S = Scratch::work>
T* thread_scratch(std::size_t n) {
  thread_local std::vector<T> buf;
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}

// Narrow storage (float16, bfloat16) is computed in float.  Bodies templated on the storage type (ApplyRun,
// GradRun, NarrowPieceSums) widen and round in registers (narrow.h); the others go piece by piece through L1:
// widened<S>(p, n) is p itself for wide types, else its n values widened into the thread's scratch S; a result
// computed at compute_target(dst, n) (dst itself, or scratch) is rounded into dst by narrow_into.  Either way the
// float arithmetic sees the values of the float32 array, so results are float32's, rounded once.
template <Scratch S, class T>
const compute_t<T>* widened(const T* p, idx n) {
  if constexpr (is_narrow<T>) {
    compute_t<T>* w = thread_scratch<compute_t<T>, S>(static_cast<std::size_t>(n));
    to_float(p, w, n);
    return w;
  } else {
    return p;
  }
}

template <class T>
compute_t<T>* compute_target(T* dst, idx n) {
  if constexpr (is_narrow<T>)
    return thread_scratch<compute_t<T>, Scratch::out>(static_cast<std::size_t>(n));
  else
    return dst;
}

template <class T>
void narrow_into(const compute_t<T>* v, T* dst, idx n) {
  if constexpr (is_narrow<T>) from_float(v, dst, n);
}

// v's first C values extended periodically to C + kLanes (v[C + j] = v[j % C]): the constants of channels-last
// bodies, which read kLanes consecutive channels from any channel on.
template <class V>
void extend_periodic(std::vector<V>& v, idx C) {
  v.resize(static_cast<std::size_t>(C + kLanes));
  for (idx j = 0, c = 0; j < kLanes; ++j, c = c + 1 == C ? 0 : c + 1)  // counted: no division per value
    v[C + j] = C > 0 ? v[c] : V(0);
}

// (x - mean) * k + c in T, computed as (x - hi) * k + c' (one fused multiply-add after the subtraction): hi is the
// mean rounded to T, so that x - hi is exact near the mean (Sterbenz) however far the mean is from zero, and the
// rest of the mean goes into the constant, c' = c - (mean - hi) k, computed in double and rounded once (a
// separate lo subtracted from every x was a rounding and an instruction more per value).  mean_rest(mean, hi) is
// that rest, exact in double; sums of dy (x - mean) take it off in double after summing dy (x - hi).
template <class T>
FASTNORM_INLINE double mean_rest(double mean, T hi) {
  return mean - static_cast<double>(hi);
}
template <class T>
FASTNORM_INLINE T folded(double c, double mean, T hi, double k) {
  return static_cast<T>(c - mean_rest(mean, hi) * k);
}
// The constants of y = (x - mean) * scale + shift in T: the mean's hi, the scale, the shift folded.
template <class T>
FASTNORM_INLINE void affine_consts(double mean, double scale, double shift, T* hi, T* k, T* c) {
  *hi = static_cast<T>(mean);
  *k = static_cast<T>(scale);
  *c = folded(shift, mean, *hi, scale);
}

// Per-channel constants in T: the mean's hi (above) and the coefficients of one of the two maps of centered
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
  V hi, scale, shift;  // shift folded (above)
  act::Params<V> p;
  FASTNORM_INLINE V operator()(V x) const { return Op::forward((x - hi) * scale + shift, p); }
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
        y[j] = Op::forward((xb[j] - hi[c + j]) * scale[c + j] + shift[c + j], p);
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
    for (idx i = 0; i < n; ++i) dz[i] = Op::backward(dy[i], (x[i] - hi) * scale + shift, p);
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
    return Op::backward(dy[c], (x[c] - hi[c]) * scale[c] + shift[c], p);
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
    FASTNORM_INLINE V operator()(V g, V x) const { return k_dy * g + ((x - hi) * k_xmu + k_one); }
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
        dx[j] = k_dy[c + j] * g[j] + ((xb[j] - hi[c + j]) * k_xmu[c + j] + k_one[c + j]);
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
      for (idx c = 0; c < C; ++c)
        dxr[c] = k_dy[c] * dyr[c] + ((xr[c] - hi[c]) * k_xmu[c] + k_one[c]);
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

// Sums of (x - shift) and (x - shift)^2 over a contiguous run, in double.
template <class T>
struct ShiftedSums {
  static FASTNORM_INLINE void run(const T* x, idx n, double shift, double* s1, double* s2) {
    double a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
    for (idx i = 0; i < n; ++i) {
      const double d = static_cast<double>(x[i]) - shift;
      a += d;
      b += d * d;
    }
    *s1 = a;
    *s2 = b;
  }
};

// The same over `runs` runs of n values, run k at x + k * stride, all around one shift (short runs of a channel:
// one call, no per-run merge): kW partial sums carried across the runs, folded once.
template <class T>
struct ShiftedSumsRuns {
  static constexpr idx kW = 16, kAhead = 1024;
  static FASTNORM_INLINE void run(const T* x, idx runs, idx n, idx stride, double shift, double* s1, double* s2) {
    double a[kW] = {}, b[kW] = {};
    for (idx k = 0; k < runs; ++k) {
      const T* r = x + k * stride;
      // the next run's first kAhead bytes: runs lie C * B apart, a new page each, where the hardware prefetcher
      // starts over (64x256x14x14 float32, 1 thread: 0.83 -> 0.52 ms; all of a long run's lines at once was slower)
      if (k + 1 < runs)
        for (idx i = 0; i < std::min(n, kAhead / idx(sizeof(T))); i += 64 / idx(sizeof(T)))
          __builtin_prefetch(r + stride + i);
      idx i = 0;
      for (; i + kW <= n; i += kW) {
#pragma omp simd
        for (idx j = 0; j < kW; ++j) {
          const double d = static_cast<double>(r[i + j]) - shift;
          a[j] += d;
          b[j] += d * d;
        }
      }
      for (idx j = 0; i < n; ++i, ++j) {
        const double d = static_cast<double>(r[i]) - shift;
        a[j] += d;
        b[j] += d * d;
      }
    }
    double sa = 0, sb = 0;
    for (idx j = 0; j < kW; ++j) {
      sa += a[j];
      sb += b[j];
    }
    *s1 = sa;
    *s2 = sb;
  }
};

// Per-channel shifted sums over rows of `channels` values (channels-last): s1[c] += x[r, c] - shift[c], etc.
template <class T>
struct ShiftedRowSums {  // per-column sums of x - shift[c] and its square over rows of C values, added to s1, s2
  static FASTNORM_INLINE void run(const T* x, idx rows, idx C, const double* shift, double* s1, double* s2) {
    column_sums<ShiftedTerms>(x, x, rows, C, shift, s1, s2);
  }
};

inline Moments from_shifted(double n, double shift, double s1, double s2) {
  const double mean_shifted = s1 / n;
  const double m2 = s2 - s1 * mean_shifted;
  return {n, shift + mean_shifted, m2 < 0 ? 0.0 : m2};  // rounding can leave m2 just below 0; NaN stays NaN
}

// Moments of n contiguous values summed in double around the first (ShiftedSums).
template <class T>
Moments shifted_moments(const T* x, idx n) {
  const double shift = static_cast<double>(x[0]);
  double s1, s2;
  isa_call<ShiftedSums<T>>(x, n, shift, &s1, &s2);
  return from_shifted(static_cast<double>(n), shift, s1, s2);
}

// Statistics of values stored narrow (float16: 11 significant bits, bfloat16: 8) are summed in float32 around a
// piece-local shift (DESIGN.md, Numerics), the float64 sums above being the slow part once the bytes halve: a piece
// of at most kNarrowPiece values (4 KiB of float16, widened in registers) is summed in one pass for x - m and
// (x - m)^2, m the mean of its first kWidth values.  That shift is near the piece's mean: the first block's own
// squares bound it, k (m - mean)^2 <= n var, so with k = 64 and n <= 2048 the sums cancel by at most a factor of
// 33 (m2 = b - a^2 / n, a^2 / n <= 32 m2), and float32's rounding over 32 terms per partial sum (kWidth of them,
// added pairwise) stays near 2^-19 times that, far below the storage's 2^-11: measured within 4e-7 of float64, a
// first block 100 away from the rest included.  (A first pass for the piece's own mean cost 15-23% of the half
// forward norms: 32x64x56x56 float16 group norm, 1 thread, 1.42 -> 1.10 ms.)  Pieces whose sums overflow, see NaN,
// or whose spread is so small that squares may underflow (b < 2^-100) are summed again as float32 data are
// (ShiftedSums, in double).
constexpr idx kNarrowPiece = tuning::kNarrowPiece;

template <class S>
struct NarrowPieceSums {  // S: the narrow storage type, or float for values already widened
  static constexpr bool takes_isa = true;
  static constexpr idx kWidth = 64;  // partial sums: four AVX-512 vectors, independent chains
  template <idx W>
  static FASTNORM_INLINE void halve(float* acc) {  // compile-time widths: a loop over a variable one ran scalar
#pragma omp simd
    for (idx j = 0; j < W; ++j) acc[j] += acc[j + W];
  }
  static FASTNORM_INLINE float fold(float* acc) {
    halve<32>(acc);
    halve<16>(acc);
    halve<8>(acc);
    halve<4>(acc);
    halve<2>(acc);
    return acc[0] + acc[1];
  }
  // kWidth values from x as float: x itself, or widened into v (in registers, narrow.h)
  template <Isa I>
  static FASTNORM_INLINE const float* values(const S* x, float* v) {
    if constexpr (is_narrow<S>) {
      for (idx q = 0; q < kWidth; q += kLanes) NarrowIO<I, S>::load(x + q, v + q);
      return v;
    } else {
      return x;
    }
  }
  // m = a shift near the mean of x[0, n): the mean of its first kWidth values (all n when fewer); a = sum of
  // (x - m), b = sum of (x - m)^2, in one pass; n <= kNarrowPiece.  The pass prefetches the next piece (`next`,
  // when there is one) a line or two per step, so that memory keeps streaming.
  template <Isa I>
  static FASTNORM_INLINE void run(const S* x, idx n, const S* next, float* m, float* a, float* b) {
    const idx whole = n - n % kWidth;
    float s1[kWidth] = {}, s2[kWidth] = {}, v[kWidth], head[kWidth];
    float rest[kWidth];  // the last n % kWidth values, when there are any (short rows pay for converting them)
    const float* r = rest;
    if (whole < n) {
      S padded[kWidth] = {};
      for (idx j = 0; whole + j < n; ++j) padded[j] = x[whole + j];
      r = values<I>(padded, rest);
    }
    // the shift: the first block's mean (the zero padding of a short piece left out)
    const float* first = whole > 0 ? values<I>(x, v) : r;
    const idx k = std::min(n, kWidth);
    for (idx j = 0; j < kWidth; ++j) head[j] = j < k ? first[j] : 0.0f;
    const float shift = fold(head) / static_cast<float>(k);
    constexpr idx kLine = 64 / static_cast<idx>(sizeof(S));
    for (idx i = 0; i < whole; i += kWidth) {
      if (next)
        for (idx q = 0; q < kWidth; q += kLine) __builtin_prefetch(next + i + q);
      const float* w = values<I>(x + i, v);
#pragma omp simd
      for (idx j = 0; j < kWidth; ++j) {
        const float d = w[j] - shift;
        s1[j] += d;
        s2[j] += d * d;
      }
    }
    for (idx j = 0; whole + j < n; ++j) {
      const float d = r[j] - shift;
      s1[j] += d;
      s2[j] += d * d;
    }
    *m = shift;
    *a = fold(s1);
    *b = fold(s2);
  }
};

// Moments of one piece of n <= kNarrowPiece narrow values (S narrow, or float for values already widened), as
// described above.
template <class S>
Moments narrow_piece_moments(const S* x, idx n, const S* next = nullptr) {
  float m, a, b;
  isa_call<NarrowPieceSums<S>>(x, n, next, &m, &a, &b);
  const double count = static_cast<double>(n);
  if (std::isfinite(a) && std::isfinite(b) && b >= 0x1p-100f)
    return from_shifted(count, static_cast<double>(m), static_cast<double>(a), static_cast<double>(b));
  if constexpr (is_narrow<S>) {
    float w[kNarrowPiece];
    to_float(x, w, n);
    return shifted_moments(static_cast<const float*>(w), n);
  } else {
    return shifted_moments(x, n);
  }
}

// Moments of one contiguous run of values stored as S, in pieces merged in order: at most one grain (parallel.h)
// each summed around its first value, the pieces channel_moments uses for a run, so that the statistics equal
// moments() of it; kNarrowPiece values for narrow S, as above (widened in registers).
template <class S>
Moments run_moments(const S* x, idx n) {
  Moments acc;
  for (idx b = 0; b < n; b += is_narrow<S> ? kNarrowPiece : kElementwiseGrain) {
    if constexpr (is_narrow<S>) {
      acc = merge(acc, narrow_piece_moments<S>(x + b, std::min(kNarrowPiece, n - b)));
    } else {
      acc = merge(acc, shifted_moments(x + b, std::min(kElementwiseGrain, n - b)));
    }
  }
  return acc;
}

// How channel_moments sums the runs of B >= kMinRunMoments values of an (A, C, B) array: each run cut into pieces
// of at most one grain (so that a few long runs still use every thread), units (run a, piece k) in order, grouped
// in blocks of units_per_task, about a grain of values each; a channel's blocks are merged in order (Chan).  A
// block is one piece of a long run, or whole runs of a short one, summed in double around the block's first value
// (a merge per run of 196 values cost more than its sums: 64x256x14x14 float32, 1 thread, 1.25 -> 0.55 ms); narrow
// storage merges pieces of at most kNarrowPiece values in order within the block.  Whoever computes a channel's
// moments this way (moments.cpp's tasks, one per channel and block; batch_norm.cpp's fused forward, one per
// channel) gets the same bits.
constexpr idx kMinRunMoments = tuning::kMinRunMoments;  // shorter runs are summed across the row (moments.cpp)

struct RunPieces {
  idx A, C, B, piece, pieces_per_run, units, units_per_task, blocks;
  RunPieces(idx A_, idx C_, idx B_)
      : A(A_), C(C_), B(B_), piece(std::min(B_, kElementwiseGrain)), pieces_per_run((B_ + piece - 1) / piece),
        units(A_ * pieces_per_run), units_per_task(std::max<idx>(1, kElementwiseGrain / piece)),
        blocks((units + units_per_task - 1) / units_per_task) {}

  template <class T>
  Moments block(const T* x, idx c, idx blk) const {
    const idx u0 = blk * units_per_task, u_end = std::min(units, u0 + units_per_task);
    const auto start = [&](idx u) { return x + ((u / pieces_per_run) * C + c) * B + (u % pieces_per_run) * piece; };
    if constexpr (is_narrow<T>) {  // summed a kNarrowPiece at a time, widened in registers
      Moments acc;
      for (idx u = u0; u < u_end; ++u) {
        const idx b0 = (u % pieces_per_run) * piece, len = std::min(B, b0 + piece) - b0;
        const T* run = start(u);
        for (idx i = 0; i < len; i += kNarrowPiece) {
          const T* next = i + kNarrowPiece < len ? run + i + kNarrowPiece : u + 1 < u_end ? start(u + 1) : nullptr;
          acc = merge(acc, narrow_piece_moments(run + i, std::min(kNarrowPiece, len - i), next));
        }
      }
      return acc;
    } else {
      // whole runs (pieces_per_run 1), C * B apart; or a single piece of a long run (units_per_task 1)
      const idx runs = u_end - u0, len = pieces_per_run == 1 ? B : std::min(B, (u0 % pieces_per_run + 1) * piece) -
                                                                      (u0 % pieces_per_run) * piece;
      const T* first = start(u0);
      if (runs == 1) return shifted_moments(first, len);
      const double shift = static_cast<double>(first[0]);
      double s1, s2;
      isa_call<ShiftedSumsRuns<T>>(first, runs, len, C * B, shift, &s1, &s2);
      return from_shifted(static_cast<double>(runs * len), shift, s1, s2);
    }
  }

  // The merge of a channel's blocks, given each block's moments.
  template <class BlockMoments>
  static Moments merged(idx blocks, BlockMoments&& block_moments) {
    Moments acc;
    for (idx blk = 0; blk < blocks; ++blk) acc = merge(acc, block_moments(blk));
    return acc;
  }
};

// Whether an output of n values of T goes out with streaming stores (blocked.h), piece by piece through L1: past
// the streaming threshold for a kernel of that many passes (parallel.h), and not behind a compute-bound activation
// (the extra copy then costs more than it saves).  32x64x56x56 float32 forward: 25-30% faster.
template <class T>
bool stream_out(idx n, int passes, bool compute_bound) {
  return FASTNORM_HAVE_STREAM && !compute_bound && stream_output(n * static_cast<idx>(sizeof(T)), passes);
}

// The same for an output written as runs (rows) of `run` values, each through its own map_blocks: only where the
// runs are whole cache lines, or at least min_bytes long, so that the partial lines at their ends (stored plainly,
// each waiting for its line while the streamed stores queue behind it) do not outweigh what streaming saves
// (tuning.h: kStreamRunBytes*).
template <class T>
bool stream_runs(const T* out, idx n, idx run, int passes, bool compute_bound, idx min_bytes) {
  const idx bytes = run * static_cast<idx>(sizeof(T));
  const bool whole_lines = can_stream(out) && bytes % 64 == 0;
  return stream_out<T>(n, passes, compute_bound) && (whole_lines || bytes >= min_bytes);
}

// Rows of C values per piece of the elementwise passes: kStreamPiece values (an L1 block), at least one row.
inline idx piece_rows(idx C) { return std::max<idx>(1, kStreamPiece / std::max<idx>(C, 1)); }

// Rows of L values per piece of the per-column sums (column_sums, SumsRows): about 4096 values, in whole row
// blocks of both (64 rows), so that summing piece by piece gives the bits of one call over all the rows.
inline idx sum_rows(idx L) { return std::max<idx>(64, 4096 / std::max<idx>(L, 1) / 64 * 64); }

// Rows [r0, r1) of C values computed by rows_to(r, rows, dst) (rows r.. r + rows into dst, compute_t<T> values),
// piece_rows(C) at a time: in place, or for narrow storage into L1 scratch rounded into place; with `stream` into
// an L1 piece that is then streamed out.
template <class T, class F>
void write_rows(T* out, idx r0, idx r1, idx C, bool stream, const F& rows_to) {
  const idx step = piece_rows(C);
  T* piece = stream ? thread_scratch<T, Scratch::piece>(static_cast<size_t>(step * C)) : nullptr;
  for (idx r = r0; r < r1; r += step) {
    const idx rows = std::min(step, r1 - r), n = rows * C;
    T* dst = piece ? piece : out + r * C;
    compute_t<T>* target = compute_target(dst, n);
    rows_to(r, rows, target);
    narrow_into(static_cast<const compute_t<T>*>(target), dst, n);
    if (piece) stream_store(static_cast<const T*>(piece), out + r * C, n);
  }
  if (stream) stream_fence();
}

}  // namespace loops
}  // namespace fastnorm
