#include "fastnorm/buffers.h"

#include <cstdlib>
#include <deque>
#include <mutex>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace fastnorm {
namespace buffers {
namespace {

constexpr std::size_t kAlign = std::size_t(2) << 20;  // a huge page

struct Cached {
  void* p;
  std::size_t capacity;
};

struct Cache {
  std::mutex mutex;
  std::deque<Cached> free;  // oldest first
  std::size_t limit = std::size_t(256) << 20;
  std::size_t bytes = 0, hits = 0, misses = 0;

  // Frees the oldest buffers until the cache holds at most `keep` bytes (mutex held).
  void trim(std::size_t keep) {
    while (bytes > keep && !free.empty()) {
      bytes -= free.front().capacity;
      std::free(free.front().p);
      free.pop_front();
    }
  }
};

Cache& cache() {
  static Cache* c = new Cache;  // never destroyed: arrays may outlive static destruction at exit
  return *c;
}

}  // namespace

void* acquire(std::size_t bytes, std::size_t* capacity, bool* reused) {
  Cache& c = cache();
  {
    std::lock_guard<std::mutex> lock(c.mutex);
    // The smallest cached buffer that holds `bytes` without wasting more than half of it.
    auto best = c.free.end();
    for (auto it = c.free.begin(); it != c.free.end(); ++it) {
      if (it->capacity >= bytes && it->capacity / 2 <= bytes && (best == c.free.end() || it->capacity < best->capacity))
        best = it;
    }
    if (best != c.free.end()) {
      const Cached hit = *best;
      c.free.erase(best);
      c.bytes -= hit.capacity;
      ++c.hits;
      *capacity = hit.capacity;
      *reused = true;
      return hit.p;
    }
    ++c.misses;
  }
  const std::size_t cap = (bytes + kAlign - 1) / kAlign * kAlign;
  void* p = std::aligned_alloc(kAlign, cap);
  if (p == nullptr) return nullptr;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  madvise(p, cap, MADV_HUGEPAGE);  // advice only: ignored where transparent huge pages are off
#endif
  *capacity = cap;
  *reused = false;
  return p;
}

void release(void* p, std::size_t capacity) noexcept {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  if (capacity > c.limit) {
    std::free(p);
    return;
  }
  c.trim(c.limit - capacity);
  c.free.push_back({p, capacity});
  c.bytes += capacity;
}

void set_limit(std::size_t bytes) {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  c.limit = bytes;
  c.trim(bytes);
}

Info info() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  return {c.limit, c.bytes, c.free.size(), c.hits, c.misses};
}

}  // namespace buffers
}  // namespace fastnorm
