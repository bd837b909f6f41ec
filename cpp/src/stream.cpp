// Streaming (non-temporal) stores for blocked.h, as wide as the active ISA level allows.  A store that misses the
// cache otherwise first reads the line it writes (write-allocate); these write whole lines and skip that read.
#include "fastnorm/blocked.h"

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

}  // namespace

void stream_copy(const float* src, float* dst, idx n) { stream_any(src, dst, n); }
void stream_copy(const double* src, double* dst, idx n) { stream_any(src, dst, n); }

}  // namespace fastnorm
