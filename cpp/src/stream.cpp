// Streaming (non-temporal) stores for blocked.h, as wide as the active ISA level allows.  A store that misses the
// cache otherwise first reads the line it writes (write-allocate); these write whole lines and skip that read.
#include "fastnorm/blocked.h"
#include "fastnorm/narrow.h"
#include "fastnorm/simd_math.h"

#if FASTNORM_HAVE_STREAM
#include <immintrin.h>
#endif

namespace fastnorm {
namespace {

#if FASTNORM_HAVE_STREAM
void stream_sse2(const float* s, float* d, idx n) {
  for (idx i = 0; i < n; i += 4) _mm_stream_ps(d + i, _mm_loadu_ps(s + i));
}
void stream_sse2(const double* s, double* d, idx n) {
  for (idx i = 0; i < n; i += 2) _mm_stream_pd(d + i, _mm_loadu_pd(s + i));
}
#endif

#if FASTNORM_MULTI_ISA
FASTNORM_TARGET_V3 void stream_v3(const float* s, float* d, idx n) {
  for (idx i = 0; i < n; i += 8) _mm256_stream_ps(d + i, _mm256_loadu_ps(s + i));
}
FASTNORM_TARGET_V3 void stream_v3(const double* s, double* d, idx n) {
  for (idx i = 0; i < n; i += 4) _mm256_stream_pd(d + i, _mm256_loadu_pd(s + i));
}
FASTNORM_TARGET_V4 void stream_v4(const float* s, float* d, idx n) {
  for (idx i = 0; i < n; i += 16) _mm512_stream_ps(d + i, _mm512_loadu_ps(s + i));
}
FASTNORM_TARGET_V4 void stream_v4(const double* s, double* d, idx n) {
  for (idx i = 0; i < n; i += 8) _mm512_stream_pd(d + i, _mm512_loadu_pd(s + i));
}
#endif

template <class T>
void stream_any(const T* s, T* d, idx n) {
#if FASTNORM_MULTI_ISA
  switch (active_isa()) {
    case Isa::v4: return stream_v4(s, d, n);
    case Isa::v3: return stream_v3(s, d, n);
    case Isa::baseline: break;
  }
#endif
#if FASTNORM_HAVE_STREAM
  stream_sse2(s, d, n);
#else
  for (idx i = 0; i < n; ++i) d[i] = s[i];
#endif
}

// Any n and alignment: dst's whole 64-byte lines streamed, the partial lines at either end stored plainly.
template <class T>
void stream_lines(const T* s, T* d, idx n) {
  constexpr idx kLine = 64 / static_cast<idx>(sizeof(T));
  const auto addr = reinterpret_cast<std::uintptr_t>(d);
  const idx head = addr % sizeof(T) ? n : std::min(n, static_cast<idx>((64 - addr % 64) % 64 / sizeof(T)));
  const idx body = (n - head) / kLine * kLine;
  for (idx i = 0; i < head; ++i) d[i] = s[i];
  if constexpr (sizeof(T) == 2) {  // half and bfloat16 move as pairs: whole lines are whole floats
    stream_any(reinterpret_cast<const float*>(s + head), reinterpret_cast<float*>(d + head), body / 2);
  } else {
    stream_any(s + head, d + head, body);
  }
  for (idx i = head + body; i < n; ++i) d[i] = s[i];
}

}  // namespace

void stream_copy(const float* src, float* dst, idx n) { stream_any(src, dst, n); }
void stream_copy(const double* src, double* dst, idx n) { stream_any(src, dst, n); }
void stream_store(const float* src, float* dst, idx n) { stream_lines(src, dst, n); }
void stream_store(const double* src, double* dst, idx n) { stream_lines(src, dst, n); }
#if FASTNORM_HAVE_HALF
namespace {

// float16 <-> float32 conversions, vectorised with F16C at the v3 and v4 levels (compilers leave a loop of
// _Float16 casts scalar); rounding to nearest even, as NumPy's astype.  One overload per direction and level,
// one dispatch for both directions.
template <class S, class D>
void convert_scalar(const S* s, D* d, idx n) {
  for (idx i = 0; i < n; ++i) d[i] = static_cast<D>(s[i]);
}
#if FASTNORM_MULTI_ISA
FASTNORM_TARGET_V3 void convert_v3(const half* s, float* d, idx n) {
  idx i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i))));
  convert_scalar(s + i, d + i, n - i);
}
FASTNORM_TARGET_V3 void convert_v3(const float* s, half* d, idx n) {
  idx i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT));
  convert_scalar(s + i, d + i, n - i);
}
FASTNORM_TARGET_V4 void convert_v4(const half* s, float* d, idx n) {
  idx i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(d + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i))));
  convert_scalar(s + i, d + i, n - i);
}
FASTNORM_TARGET_V4 void convert_v4(const float* s, half* d, idx n) {
  idx i = 0;
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + i),
                        _mm512_cvtps_ph(_mm512_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT));
  convert_scalar(s + i, d + i, n - i);
}
#endif

template <class S, class D>
void convert_any(const S* s, D* d, idx n) {
#if FASTNORM_MULTI_ISA
  switch (active_isa()) {
    case Isa::v4: return convert_v4(s, d, n);
    case Isa::v3: return convert_v3(s, d, n);
    case Isa::baseline: break;
  }
#endif
  convert_scalar(s, d, n);
}

}  // namespace

void to_float(const half* src, float* dst, idx n) { convert_any(src, dst, n); }
void from_float(const float* src, half* dst, idx n) { convert_any(src, dst, n); }
void stream_store(const half* src, half* dst, idx n) { stream_lines(src, dst, n); }

// Half-precision values move as pairs: n is a multiple of kBlock, so n / 2 floats' worth of bytes.
void stream_copy(const half* src, half* dst, idx n) {
  stream_any(reinterpret_cast<const float*>(src), reinterpret_cast<float*>(dst), n / 2);
}
#endif

namespace {

// bfloat16: integer operations that every ISA level vectorises; compiled per level through isa_call.
struct WidenBf16 {
  static FASTNORM_INLINE void run(const std::uint16_t* s, float* d, idx n) {
#pragma omp simd
    for (idx i = 0; i < n; ++i) d[i] = bf16_to_float(s[i]);
  }
};

struct NarrowBf16 {
  static FASTNORM_INLINE void run(const float* s, std::uint16_t* d, idx n) {
#pragma omp simd
    for (idx i = 0; i < n; ++i) d[i] = float_to_bf16(s[i]);
  }
};

}  // namespace

void stream_store(const bf16* src, bf16* dst, idx n) { stream_lines(src, dst, n); }
void stream_copy(const bf16* src, bf16* dst, idx n) {
  stream_any(reinterpret_cast<const float*>(src), reinterpret_cast<float*>(dst), n / 2);
}
void to_float(const bf16* src, float* dst, idx n) {
  isa_call<WidenBf16>(reinterpret_cast<const std::uint16_t*>(src), dst, n);
}
void from_float(const float* src, bf16* dst, idx n) {
  isa_call<NarrowBf16>(src, reinterpret_cast<std::uint16_t*>(dst), n);
}

}  // namespace fastnorm
