// Rows computed a block of kLanes values at a time and written to their storage from registers.
//
// map_blocks<I>(dst, n, stream, f) has f compute each block of a row into a local block (which GCC keeps in
// registers) and stores it: rounded for narrow storage (NarrowIO), with non-temporal stores when `stream` says
// the output is too large for the cache.  The streamed blocks are placed so that their stores are aligned: a head
// block of fewer values first, up to dst's first aligned address.  Every value, head, body or tail, goes through
// the same vector code (a short block is zero-padded), so results do not depend on where dst is.
//
// This replaces computing a row into an L1 row and streaming or rounding that row out in a second pass, which came
// after the row's arithmetic, so that the row's writes to memory did not overlap it.  Layer norm backward,
// 8192 x 1024 float32, 1 / 2 threads, median of 5 alternating processes: arrays 64-byte aligned 5.99 / 2.78 ->
// 5.31 / 2.40 ms, 16 bytes past (NumPy's) 6.98 / 3.05 -> 6.26 / 2.66 ms; the forward 2-8% faster.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "fastnorm/blocked.h"
#include "fastnorm/narrow.h"

#if FASTNORM_MULTI_ISA
#include <immintrin.h>
#endif

namespace fastnorm {

// Bytes bytes from s to d with non-temporal stores, d aligned to min(Bytes, 64) (Bytes: 32, 64 or 128).
template <Isa I>
struct StreamIO {  // baseline: 16 bytes at a time (SSE2), or plain copies without SSE2
  template <int Bytes>
  static FASTNORM_INLINE void put(const void* s, void* d) {
#if FASTNORM_HAVE_STREAM
    for (int k = 0; k < Bytes; k += 16)
      _mm_stream_si128(reinterpret_cast<__m128i*>(static_cast<char*>(d) + k),
                       _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const char*>(s) + k)));
#else
    for (int k = 0; k < Bytes; ++k) static_cast<char*>(d)[k] = static_cast<const char*>(s)[k];
#endif
  }
};

#if FASTNORM_MULTI_ISA
template <>
struct StreamIO<Isa::v3> {
  template <int Bytes>
  FASTNORM_TARGET_V3 static inline void put(const void* s, void* d) {
    for (int k = 0; k < Bytes; k += 32)
      _mm256_stream_si256(reinterpret_cast<__m256i*>(static_cast<char*>(d) + k),
                          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const char*>(s) + k)));
  }
};
template <>
struct StreamIO<Isa::v4> {
  template <int Bytes>
  FASTNORM_TARGET_V4 static inline void put(const void* s, void* d) {
    if constexpr (Bytes < 64) {
      StreamIO<Isa::v3>::put<Bytes>(s, d);
    } else {
      for (int k = 0; k < Bytes; k += 64)
        _mm512_stream_si512(reinterpret_cast<__m512i*>(static_cast<char*>(d) + k),
                            _mm512_loadu_si512(static_cast<const char*>(s) + k));
    }
  }
};
#endif

// The alignment a streamed block of storage T needs: its size, at most a cache line.
template <class T>
constexpr idx kBlockAlign = std::min<idx>(64, kLanes * static_cast<idx>(sizeof(T)));

// A computed block r (kLanes values in compute_t<T>) to d: rounded for narrow storage; non-temporally with `stream`
// (d aligned to kBlockAlign<T>).
template <Isa I, class T>
FASTNORM_INLINE void store_block(const compute_t<T>* r, T* d, bool stream) {
  constexpr int kBytes = static_cast<int>(kLanes * sizeof(T));
  if constexpr (is_narrow<T>) {
    if (!stream) return NarrowIO<I, T>::store(r, d);
    alignas(64) T rounded[kLanes];
    NarrowIO<I, T>::store(r, rounded);
    StreamIO<I>::template put<kBytes>(rounded, d);
  } else {
    if (stream) return StreamIO<I>::template put<kBytes>(r, d);
#pragma omp simd
    for (idx j = 0; j < kLanes; ++j) d[j] = r[j];
  }
}

// Short blocks (count < kLanes values) at a row's ends: loaded zero-padded into a block of compute_t<T>, and the
// first count values of a computed block stored; value by value, or with AVX-512 masked loads and stores.
template <Isa I, class T>
struct ShortIO {
  using C = compute_t<T>;
  static FASTNORM_INLINE void load(const T* p, idx count, C* block) {
    if constexpr (is_narrow<T>) {
      T pad[kLanes] = {};
      for (idx j = 0; j < count; ++j) pad[j] = p[j];
      NarrowIO<I, T>::load(pad, block);
    } else {
      for (idx j = 0; j < kLanes; ++j) block[j] = j < count ? p[j] : C(0);
    }
  }
  static FASTNORM_INLINE void store(const C* r, T* d, idx count) {
    for (idx j = 0; j < count; ++j) {
      if constexpr (is_narrow<T>)
        d[j] = round_value<T>(r[j]);
      else
        d[j] = r[j];
    }
  }
};

#if FASTNORM_MULTI_ISA
template <class T>
struct ShortIO<Isa::v4, T> {
  using C = compute_t<T>;
  static constexpr int kHalf = 8;  // doubles per register
  static __mmask16 mask(idx count) { return static_cast<__mmask16>((1u << count) - 1u); }
  FASTNORM_TARGET_V4 static inline void load(const T* p, idx count, C* block) {
    if constexpr (std::is_same_v<T, float>) {
      _mm512_storeu_ps(block, _mm512_maskz_loadu_ps(mask(count), p));
    } else if constexpr (std::is_same_v<T, double>) {
      const unsigned m = mask(count);
      _mm512_storeu_pd(block, _mm512_maskz_loadu_pd(static_cast<__mmask8>(m & 0xffu), p));
      _mm512_storeu_pd(block + kHalf, _mm512_maskz_loadu_pd(static_cast<__mmask8>(m >> 8), p + kHalf));
    } else {
      alignas(32) T pad[kLanes];
      _mm256_store_si256(reinterpret_cast<__m256i*>(pad), _mm256_maskz_loadu_epi16(mask(count), p));
      NarrowIO<Isa::v4, T>::load(pad, block);
    }
  }
  FASTNORM_TARGET_V4 static inline void store(const C* r, T* d, idx count) {
    if constexpr (std::is_same_v<T, float>) {
      _mm512_mask_storeu_ps(d, mask(count), _mm512_loadu_ps(r));
    } else if constexpr (std::is_same_v<T, double>) {
      const unsigned m = mask(count);
      _mm512_mask_storeu_pd(d, static_cast<__mmask8>(m & 0xffu), _mm512_loadu_pd(r));
      _mm512_mask_storeu_pd(d + kHalf, static_cast<__mmask8>(m >> 8), _mm512_loadu_pd(r + kHalf));
    } else {
      alignas(32) T rounded[kLanes];
      NarrowIO<Isa::v4, T>::store(r, rounded);
      _mm256_mask_storeu_epi16(d, mask(count), _mm256_load_si256(reinterpret_cast<const __m256i*>(rounded)));
    }
  }
};

// Rows as lanes (AVX-512, float): a tile of up to kLanes rows, `stride` values apart, by up to kLanes columns
// transposed so that cols[k][j] is row j's value k, and back.  Loading, columns past `count` are `fill` and so are
// rows past `rows`; storing writes rows [0, rows) and columns [0, count) only.  16 loads and 64 shuffles a tile.
struct RowTile {
  static __mmask16 mask(idx count) { return static_cast<__mmask16>((1u << count) - 1u); }
  FASTNORM_TARGET_V4 static inline void load(const float* p, idx stride, idx rows, idx count, float fill,
                                             float (*cols)[kLanes]) {
    __m512 r[kLanes];
    const __m512 f = _mm512_set1_ps(fill);
    for (idx j = 0; j < kLanes; ++j) r[j] = j < rows ? _mm512_mask_loadu_ps(f, mask(count), p + j * stride) : f;
    transpose(r);
    for (idx k = 0; k < kLanes; ++k) _mm512_store_ps(cols[k], r[k]);
  }
  FASTNORM_TARGET_V4 static inline void store(const float (*cols)[kLanes], float* p, idx stride, idx rows,
                                              idx count) {
    __m512 r[kLanes];
    for (idx k = 0; k < kLanes; ++k) r[k] = _mm512_load_ps(cols[k]);
    transpose(r);
    for (idx j = 0; j < rows; ++j) _mm512_mask_storeu_ps(p + j * stride, mask(count), r[j]);
  }
  // r[j][k] -> r[k][j]: pairs of rows interleaved (ps, then pd), then 128-bit quarters gathered in two rounds
  FASTNORM_TARGET_V4 static inline void transpose(__m512* r) {
    __m512 t[kLanes];
    for (int i = 0; i < 16; i += 2) {
      t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
      t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    __m512 u[kLanes];  // u[4 g + e], quarter q: element 4 q + e of rows 4 g .. 4 g + 3
    for (int g = 0; g < 4; ++g) {
      const __m512d a = _mm512_castps_pd(t[4 * g]), b = _mm512_castps_pd(t[4 * g + 1]);
      const __m512d c = _mm512_castps_pd(t[4 * g + 2]), d = _mm512_castps_pd(t[4 * g + 3]);
      u[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
      u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
      u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
      u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    for (int e = 0; e < 4; ++e) {
      const __m512 even01 = _mm512_shuffle_f32x4(u[e], u[4 + e], _MM_SHUFFLE(2, 0, 2, 0));
      const __m512 odd01 = _mm512_shuffle_f32x4(u[e], u[4 + e], _MM_SHUFFLE(3, 1, 3, 1));
      const __m512 even23 = _mm512_shuffle_f32x4(u[8 + e], u[12 + e], _MM_SHUFFLE(2, 0, 2, 0));
      const __m512 odd23 = _mm512_shuffle_f32x4(u[8 + e], u[12 + e], _MM_SHUFFLE(3, 1, 3, 1));
      r[e] = _mm512_shuffle_f32x4(even01, even23, _MM_SHUFFLE(2, 0, 2, 0));
      r[8 + e] = _mm512_shuffle_f32x4(even01, even23, _MM_SHUFFLE(3, 1, 3, 1));
      r[4 + e] = _mm512_shuffle_f32x4(odd01, odd23, _MM_SHUFFLE(2, 0, 2, 0));
      r[12 + e] = _mm512_shuffle_f32x4(odd01, odd23, _MM_SHUFFLE(3, 1, 3, 1));
    }
  }
};
#endif

template <Isa I, class T>
FASTNORM_INLINE void store_values(const compute_t<T>* r, T* d, idx count) {
  ShortIO<I, T>::store(r, d, count);
}

// Values d .. d + count of p as a block of compute_t<X> values: p + d itself for a whole block of wide values, else
// widened in registers (narrow X) or loaded into buf, zero-padded.
template <Isa I, class X>
FASTNORM_INLINE const compute_t<X>* load_block(const X* p, idx d, idx count, compute_t<X>* buf) {
  if (count < kLanes) {
    ShortIO<I, X>::load(p + d, count, buf);
    return buf;
  }
  if constexpr (is_narrow<X>) {
    NarrowIO<I, X>::load(p + d, buf);
    return buf;
  } else {
    return p + d;
  }
}

// Blocks of a per-feature parameter's default, for absent (null) parameters: 1 for gamma, 0 for beta.
template <class C>
struct DefaultBlock {
  alignas(64) static constexpr C one[kLanes] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
  alignas(64) static constexpr C zero[kLanes] = {};
};

// A block of a per-feature parameter (gamma, beta) as load_block reads it, or the block `absent` (DefaultBlock)
// where the parameter is null, so that a default is never as large as a row.  (That block is not zero-padded past
// a short block's `count`: the functors that accumulate multiply it by a zero-padded block of dy.)
template <Isa I, class C>
FASTNORM_INLINE const C* load_param(const C* p, idx d, idx count, C* buf, const C* absent) {
  return p != nullptr ? load_block<I>(p, d, count, buf) : absent;
}

// The same, with the default block filled into buf (for functors where the static block was slower).
template <Isa I, class C>
FASTNORM_INLINE const C* load_param_filled(const C* p, idx d, idx count, C* buf, C fill) {
  if (p != nullptr) return load_block<I>(p, d, count, buf);
  for (idx j = 0; j < kLanes; ++j) buf[j] = fill;
  return buf;
}

// p + d, or null for an absent parameter (an offset from null is undefined behaviour).
template <class C>
FASTNORM_INLINE const C* param_at(const C* p, idx d) {
  return p != nullptr ? p + d : nullptr;
}

// The sum of a block of per-lane partial sums, added pairwise (compile-time widths: a loop over a variable width
// ran scalar), in double.
template <idx W, class C>
FASTNORM_INLINE void halve_lanes(C* acc) {
#pragma omp simd
  for (idx j = 0; j < W; ++j) acc[j] += acc[j + W];
}
template <class C>
FASTNORM_INLINE double fold_lanes(C* acc) {
  static_assert(kLanes == 16, "folds 16 lanes");
  halve_lanes<8>(acc);
  halve_lanes<4>(acc);
  halve_lanes<2>(acc);
  return static_cast<double>(acc[0] + acc[1]);
}

// Whether map_blocks takes bfloat16 values two blocks at a time (Bf16Pairs): at v4, for functors that declare
// kPairs and have pair(d, even, odd), computing values d .. d + 2 kLanes as their even and odd halves.
template <class F, class = void>
struct has_pairs : std::false_type {};
template <class F>
struct has_pairs<F, std::void_t<decltype(F::kPairs)>> : std::bool_constant<F::kPairs> {};
template <Isa I, class T, class F>
constexpr bool kBf16Pairs = I == Isa::v4 && std::is_same_v<T, bf16> && has_pairs<F>::value;

#if FASTNORM_MULTI_ISA
// pair(d, even, odd) for an elementwise g of N bfloat16 inputs: values d .. d + 2 kLanes as their even and odd
// halves (Bf16Pairs), g having an always-inline operator() of N floats.
template <std::size_t N, class G>
FASTNORM_INLINE void pair_values(const std::array<const bf16*, N>& in, idx d, float* even, float* odd, const G& g) {
  alignas(64) float v[N][2][kLanes];
  for (std::size_t k = 0; k < N; ++k) Bf16Pairs::load(in[k] + d, v[k][0], v[k][1]);
  float* out[2] = {even, odd};
  for (int h = 0; h < 2; ++h) {
    if constexpr (N == 1) {
#pragma omp simd
      for (idx j = 0; j < kLanes; ++j) out[h][j] = g(v[0][h][j]);
    } else {
#pragma omp simd
      for (idx j = 0; j < kLanes; ++j) out[h][j] = g(v[0][h][j], v[1][h][j]);
    }
  }
}
#endif

// f(d, count, r) computes values d .. d + count of the row into the block r (count is kLanes but at the row's
// ends; f reads blocks through load_block); map_blocks stores them at dst + d.  A functor whose values
// each depend on their own inputs only (F::kElementwise) computes the head as the whole block starting there,
// overlapping the next (the same vector code on the same inputs: the same values), which saves padding its
// inputs; the others (a functor that accumulates) get short blocks, as does the tail.  (The whole block ending at
// the tail would leave its values at the end of the local block, and reading them back from there waited for the
// block's store to leave the store buffer, behind the row's streaming stores: layer norm forward 25% slower; a
// masked store of the whole block, its lanes before the tail masked off, was slower still.)  At v4 short blocks
// are read and written with masked loads and stores, and bfloat16 middles go two blocks at a time (kBf16Pairs).
template <Isa I, class T, class F>
FASTNORM_INLINE void map_blocks(T* dst, idx n, bool stream, const F& f) {
  using C = compute_t<T>;
  const auto addr = reinterpret_cast<std::uintptr_t>(dst);
  stream = stream && FASTNORM_HAVE_STREAM && addr % sizeof(T) == 0;
  constexpr auto kAlign = static_cast<std::uintptr_t>(kBlockAlign<T>);
  const idx head = stream ? std::min(n, static_cast<idx>((kAlign - addr % kAlign) % kAlign / sizeof(T))) : 0;
  const bool overlap = F::kElementwise && n >= kLanes;
  alignas(64) C r[kLanes];
  idx d = 0;
  if (head > 0) {
    f(d, overlap ? kLanes : head, r);
    store_values<I, T>(r, dst, head);
    d = head;
  }
#if FASTNORM_MULTI_ISA
  if constexpr (kBf16Pairs<I, T, F>) {
    if (stream && d + kLanes <= n && (addr + static_cast<std::uintptr_t>(d) * sizeof(T)) % 64 != 0) {
      f(d, kLanes, r);  // one block first: a pair's streaming store takes a whole line
      store_block<I, T>(r, dst + d, stream);
      d += kLanes;
    }
    alignas(64) float even[kLanes], odd[kLanes];
    for (; d + 2 * kLanes <= n; d += 2 * kLanes) {
      f.pair(d, even, odd);
      Bf16Pairs::store(even, odd, dst + d, stream);
    }
  }
#endif
  for (; d + kLanes <= n; d += kLanes) {
    f(d, kLanes, r);
    store_block<I, T>(r, dst + d, stream);
  }
  if (d < n) {
    f(d, n - d, r);
    store_values<I, T>(r, dst + d, n - d);
  }
}

// out[i] = f(in[0][i], ..., in[N - 1][i]) for i < n, N = 1 or 2, through map_blocks (narrow storage widened and
// rounded in registers, every value on the vector path).  f is a functor with an always-inline operator() (a lambda
// that GCC declines to inline would be compiled for the default ISA, not the caller's).
template <Isa I, class T, std::size_t N, class F>
struct ValuesBlock {
  static constexpr bool kElementwise = true;
  static constexpr bool kPairs = std::is_same_v<T, bf16>;
  std::array<const T*, N> in;
  F f;
#if FASTNORM_MULTI_ISA
  FASTNORM_INLINE void pair(idx d, float* even, float* odd) const { pair_values<N>(in, d, even, odd, f); }
#endif
  FASTNORM_INLINE void operator()(idx d, idx count, compute_t<T>* r) const {
    static_assert(N == 1 || N == 2, "map_values takes one or two inputs");
    compute_t<T> buf[N][kLanes];
    const compute_t<T>* v0 = load_block<I>(in[0], d, count, buf[0]);
    if constexpr (N == 1) {
#pragma omp simd
      for (idx j = 0; j < kLanes; ++j) r[j] = f(v0[j]);
    } else {
      const compute_t<T>* v1 = load_block<I>(in[1], d, count, buf[1]);
#pragma omp simd
      for (idx j = 0; j < kLanes; ++j) r[j] = f(v0[j], v1[j]);
    }
  }
};

template <Isa I, class T, std::size_t N, class F>
FASTNORM_INLINE void map_values(const std::array<const T*, N>& in, T* out, idx n, const F& f) {
  map_blocks<I>(out, n, false, ValuesBlock<I, T, N, F>{in, f});
}

}  // namespace fastnorm
