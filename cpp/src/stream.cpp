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
namespace {
// 16-bit values move as pairs: n is a multiple of kBlock, so n / 2 floats' worth of bytes.
template <class S>
void stream_pairs(const S* src, S* dst, idx n) {
  static_assert(sizeof(S) == 2, "pairs of 16-bit values");
  stream_any(reinterpret_cast<const float*>(src), reinterpret_cast<float*>(dst), n / 2);
}
}  // namespace

#if FASTNORM_HAVE_HALF
void to_float(const half* src, float* dst, idx n) { isa_call<WidenValues<half>>(src, dst, n); }
void from_float(const float* src, half* dst, idx n) { isa_call<RoundValues<half>>(src, dst, n); }
void stream_store(const half* src, half* dst, idx n) { stream_lines(src, dst, n); }

void stream_copy(const half* src, half* dst, idx n) { stream_pairs(src, dst, n); }
#endif

void stream_store(const bf16* src, bf16* dst, idx n) { stream_lines(src, dst, n); }
void stream_copy(const bf16* src, bf16* dst, idx n) { stream_pairs(src, dst, n); }
void to_float(const bf16* src, float* dst, idx n) { isa_call<WidenValues<bf16>>(src, dst, n); }
void from_float(const float* src, bf16* dst, idx n) { isa_call<RoundValues<bf16>>(src, dst, n); }

}  // namespace fastnorm
