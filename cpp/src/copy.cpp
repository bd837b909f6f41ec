#include "fastnorm/copy.h"

#include "fastnorm/parallel.h"

namespace fastnorm {
namespace {

struct CopyBody {
  static FASTNORM_INLINE void run(const float* src, float* dst, idx n) {
#pragma omp simd
    for (idx i = 0; i < n; ++i) dst[i] = src[i];
  }
};

}  // namespace

void copy_bytes(const void* src, void* dst, idx nbytes, int num_threads) {
  const idx n = nbytes / static_cast<idx>(sizeof(float));
  const auto* s = static_cast<const float*>(src);
  auto* d = static_cast<float*>(dst);
  parallel_for_aligned(d, n, num_threads, [&](idx b, idx e) { isa_call<CopyBody>(s + b, d + b, e - b); });
  const auto* sb = static_cast<const unsigned char*>(src);
  auto* db = static_cast<unsigned char*>(dst);
  for (idx i = n * static_cast<idx>(sizeof(float)); i < nbytes; ++i) db[i] = sb[i];
}

}  // namespace fastnorm
