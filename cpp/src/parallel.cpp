#include "fastnorm/parallel.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace fastnorm {

bool have_openmp() {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

int thread_limit() {
  static const int limit = std::max(64, 4 * static_cast<int>(std::thread::hardware_concurrency()));
  return limit;
}

int resolve_threads(int requested) { return std::min(requested > 0 ? requested : max_threads(), thread_limit()); }

namespace {

idx threshold_from_environment() {
  const char* env = std::getenv("FASTNORM_STREAM_BYTES");
  if (env == nullptr || *env == '\0') return tuning::kStreamBytes;
  try {
    std::size_t used = 0;
    const long long v = std::stoll(env, &used);
    if (env[used] != '\0') throw std::invalid_argument(env);
    return static_cast<idx>(v);
  } catch (const std::exception&) {
    throw std::invalid_argument(std::string("FASTNORM_STREAM_BYTES must be an integer number of bytes, got '") +
                                env + "'");
  }
}

std::atomic<idx>& threshold() {
  static std::atomic<idx> value{threshold_from_environment()};
  return value;
}

}  // namespace

idx stream_threshold() { return threshold().load(std::memory_order_relaxed); }
void set_stream_threshold(idx nbytes) { threshold().store(nbytes, std::memory_order_relaxed); }

}  // namespace fastnorm
