// Narrow storage (float16, bfloat16) converted inside the vector loop, in registers.
//
// A body that takes its ISA level (isa.h: takes_isa) reads and writes narrow values through NarrowIO<I, S>,
// kLanes at a time: load widens 16 values into a float block, store rounds a float block to nearest even.  The
// blocks are local arrays that GCC keeps in registers once everything is inlined, so a loop such as
//   for (i; i += kLanes) { load(x + i, v); <omp simd over v>; store(r, y + i); }
// compiles to vcvtph2ps, the arithmetic, vcvtps2ph: one pass over memory, where widening into an L1 row, computing
// and rounding back was three (1.33 -> 0.88 ms for a 6.4M-value float16 affine map, the time of a memcpy).
//
// float16 needs F16C (levels v3 and v4) for that; baseline converts value by value, as before.  The v3 / v4
// conversions carry their target attribute and are plain `inline`, not always-inline: GCC refuses to force a
// target-specific function into a body compiled for the default target, but its inliner takes them in once the
// body has been inlined into isa_variants' v3 / v4 function.  bfloat16 is integer arithmetic that every level
// vectorises.
#pragma once

#include <cstddef>
#include <cstdint>

#include "fastnorm/isa.h"
#include "fastnorm/simd_math.h"

#if FASTNORM_MULTI_ISA
#include <immintrin.h>
#endif

namespace fastnorm {

constexpr idx kLanes = 16;  // values per NarrowIO block: one AVX-512 register of float

// bfloat16 <-> float32 for one value: widening is exact; rounding is to nearest even, NaN becomes the quiet NaN
// of its sign (0x7fc0 / 0xffc0), as ml_dtypes does.
FASTNORM_INLINE float bf16_to_float(std::uint16_t bits) {
  return math::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16);
}
FASTNORM_INLINE std::uint16_t float_to_bf16(float v) {
  const std::uint32_t b = math::bit_cast<std::uint32_t>(v), high = b >> 16;
  const std::uint32_t rounded = (b + (0x7fffu + (high & 1u))) >> 16;  // to nearest, ties to even
  const std::uint32_t quiet_nan = (high & 0x8000u) | 0x7fc0u;
  return static_cast<std::uint16_t>(v != v ? quiet_nan : rounded);  // an unordered compare: one instruction
}

// One value of narrow storage to float and back, for any S (the baseline level and ragged ends).
FASTNORM_INLINE float widen_value(bf16 v) { return bf16_to_float(v.bits); }
template <class S>
FASTNORM_INLINE S round_value(float v);
template <>
FASTNORM_INLINE bf16 round_value<bf16>(float v) {
  return bf16{float_to_bf16(v)};
}
#if FASTNORM_HAVE_HALF
FASTNORM_INLINE float widen_value(half v) { return static_cast<float>(v); }
template <>
FASTNORM_INLINE half round_value<half>(float v) {
  return static_cast<half>(v);  // to nearest even
}
#endif

template <Isa I, class S>
struct NarrowIO {  // baseline: value by value (float16 converted in software; bfloat16 vectorises)
  static FASTNORM_INLINE void load(const S* s, float* d) {
#pragma omp simd
    for (idx j = 0; j < kLanes; ++j) d[j] = widen_value(s[j]);
  }
  static FASTNORM_INLINE void store(const float* s, S* d) {
#pragma omp simd
    for (idx j = 0; j < kLanes; ++j) d[j] = round_value<S>(s[j]);
  }
};

#if FASTNORM_MULTI_ISA
// bfloat16 at v3 / v4: float_to_bf16 in intrinsics (GCC vectorised the plain loops above at half width, through
// the stack, which stalled store forwarding: 4x slower than float32).
template <>
struct NarrowIO<Isa::v3, bf16> {
  FASTNORM_TARGET_V3 static inline __m256i round8(__m256 v) {  // 8 values, rounded, in the low half of each lane
    const __m256i b = _mm256_castps_si256(v), high = _mm256_srli_epi32(b, 16);
    const __m256i bias = _mm256_add_epi32(_mm256_set1_epi32(0x7fff), _mm256_and_si256(high, _mm256_set1_epi32(1)));
    const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(b, bias), 16);
    const __m256i quiet = _mm256_or_si256(_mm256_and_si256(high, _mm256_set1_epi32(0x8000)), _mm256_set1_epi32(0x7fc0));
    return _mm256_blendv_epi8(rounded, quiet, _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
  }
  FASTNORM_TARGET_V3 static inline void load(const bf16* s, float* d) {
    for (idx j = 0; j < kLanes; j += 8) {
      const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + j)));
      _mm256_storeu_ps(d + j, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
    }
  }
  FASTNORM_TARGET_V3 static inline void store(const float* s, bf16* d) {
    const __m256i packed = _mm256_packus_epi32(round8(_mm256_loadu_ps(s)), round8(_mm256_loadu_ps(s + 8)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(d), _mm256_permute4x64_epi64(packed, 0xd8));  // lane order
  }
};
template <>
struct NarrowIO<Isa::v4, bf16> {
  FASTNORM_TARGET_V4 static inline void load(const bf16* s, float* d) {
    const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s)));
    _mm512_storeu_ps(d, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
  }
  // 16 values rounded (float_to_bf16), each in the low half of its 32-bit lane.
  FASTNORM_TARGET_V4 static inline __m512i round16(__m512 v) {
    const __m512i b = _mm512_castps_si512(v), high = _mm512_srli_epi32(b, 16);
    const __m512i bias = _mm512_add_epi32(_mm512_set1_epi32(0x7fff), _mm512_and_si512(high, _mm512_set1_epi32(1)));
    const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(b, bias), 16);
    const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    if (__builtin_expect(nan == 0, 1)) return rounded;
    const __m512i quiet = _mm512_or_si512(_mm512_and_si512(high, _mm512_set1_epi32(0x8000)), _mm512_set1_epi32(0x7fc0));
    return _mm512_mask_blend_epi32(nan, rounded, quiet);
  }
  FASTNORM_TARGET_V4 static inline void store(const float* s, bf16* d) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(d), _mm512_cvtepi32_epi16(round16(_mm512_loadu_ps(s))));
  }
};

// bfloat16 at v4, two blocks at a time as the block of even values and the block of odd ones: a 32-bit lane holds
// one (even, odd) pair, so widening is a shift and a mask, and rounding ends in a shift and an or; the block path
// above moves words across lanes (vpmovzxwd, vpmovdw), three port-5 operations per 16 values, which bounded
// bfloat16's elementwise loops.  Elementwise operations with the same parameters for every value give the same
// bits either way.
struct Bf16Pairs {
  FASTNORM_TARGET_V4 static inline void load(const bf16* s, float* even, float* odd) {
    const __m512i w = _mm512_loadu_si512(s);
    _mm512_store_ps(even, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
    _mm512_store_ps(odd, _mm512_castsi512_ps(_mm512_and_si512(w, _mm512_set1_epi32(static_cast<int>(0xffff0000u)))));
  }
  // The 2 kLanes rounded values to d, non-temporally with `stream` (d then 64-byte aligned).
  FASTNORM_TARGET_V4 static inline void store(const float* even, const float* odd, bf16* d, bool stream) {
    using IO = NarrowIO<Isa::v4, bf16>;
    const __m512i w = _mm512_or_si512(IO::round16(_mm512_load_ps(even)),
                                      _mm512_slli_epi32(IO::round16(_mm512_load_ps(odd)), 16));
    if (stream)
      _mm512_stream_si512(reinterpret_cast<__m512i*>(d), w);
    else
      _mm512_storeu_si512(d, w);
  }
};
#endif

#if FASTNORM_HAVE_HALF
#if FASTNORM_MULTI_ISA
template <>
struct NarrowIO<Isa::v3, half> {
  FASTNORM_TARGET_V3 static inline void load(const half* s, float* d) {
    for (idx j = 0; j < kLanes; j += 8)
      _mm256_storeu_ps(d + j, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + j))));
  }
  FASTNORM_TARGET_V3 static inline void store(const float* s, half* d) {
    for (idx j = 0; j < kLanes; j += 8)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(d + j),
                       _mm256_cvtps_ph(_mm256_loadu_ps(s + j), _MM_FROUND_TO_NEAREST_INT));
  }
};
template <>
struct NarrowIO<Isa::v4, half> {
  FASTNORM_TARGET_V4 static inline void load(const half* s, float* d) {
    _mm512_storeu_ps(d, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s))));
  }
  FASTNORM_TARGET_V4 static inline void store(const float* s, half* d) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(d), _mm512_cvtps_ph(_mm512_loadu_ps(s), _MM_FROUND_TO_NEAREST_INT));
  }
};
#endif
#endif

// n values widened / rounded: whole blocks through NarrowIO, the rest value by value (to_float / from_float,
// blocked.h, run these through isa_call).
template <class S>
struct WidenValues {
  static constexpr bool takes_isa = true;
  template <Isa I>
  static FASTNORM_INLINE void run(const S* s, float* d, idx n) {
    idx i = 0;
    for (; i + kLanes <= n; i += kLanes) NarrowIO<I, S>::load(s + i, d + i);
    for (; i < n; ++i) d[i] = widen_value(s[i]);
  }
};
template <class S>
struct RoundValues {
  static constexpr bool takes_isa = true;
  template <Isa I>
  static FASTNORM_INLINE void run(const float* s, S* d, idx n) {
    idx i = 0;
    for (; i + kLanes <= n; i += kLanes) NarrowIO<I, S>::store(s + i, d + i);
    for (; i < n; ++i) d[i] = round_value<S>(s[i]);
  }
};

}  // namespace fastnorm
