#include "fastnorm/copy.h"

#include <array>

#include "fastnorm/blocked.h"
#include "fastnorm/parallel.h"

namespace fastnorm {
namespace {

struct CopyBody {
  static FASTNORM_INLINE void loop(const std::array<const float*, 1>& in, float* dst, idx n, int) {
    const float* src = in[0];
#pragma omp simd
    for (idx i = 0; i < n; ++i) dst[i] = src[i];
  }
  static FASTNORM_INLINE void run(const float* src, float* dst, idx n, bool stream) {
    run_blocked<CopyBody>(std::array<const float*, 1>{src}, dst, n, 0, stream);
  }
};

}  // namespace

void copy_bytes(const void* src, void* dst, idx nbytes, int num_threads) {
  const idx n = nbytes / static_cast<idx>(sizeof(float));
  const auto* s = static_cast<const float*>(src);
  auto* d = static_cast<float*>(dst);
  const bool stream = stream_output(nbytes, 2);
  parallel_for_aligned(d, n, num_threads, [&](idx b, idx e) { isa_call<CopyBody>(s + b, d + b, e - b, stream); });
  const auto* sb = static_cast<const unsigned char*>(src);
  auto* db = static_cast<unsigned char*>(dst);
  for (idx i = n * static_cast<idx>(sizeof(float)); i < nbytes; ++i) db[i] = sb[i];
}

}  // namespace fastnorm
