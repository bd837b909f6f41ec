#pragma once

#include <cstddef>

namespace fastnorm {
namespace buffers {

// A cache of freed output buffers, so that an allocating call whose previous result has been freed writes into
// memory that is already mapped instead of paying a page fault per 4 KiB (the kernel zeroes every fresh page:
// a 64 MiB relu costs about twice its out= time in faults alone).  Buffers are 2 MiB-aligned, advised as huge
// pages where the OS has them, and kept while their total stays within the limit; the oldest go first.

// A buffer of at least `bytes` (its real size in *capacity), from the cache when one fits (*reused true), else
// fresh, its pages untouched; nullptr when the allocation fails.
void* acquire(std::size_t bytes, std::size_t* capacity, bool* reused);

// Gives a buffer from acquire() back: cached while the limit allows, else freed.
void release(void* p, std::size_t capacity) noexcept;

// Bytes the cache may hold (0: cache nothing); buffers beyond a new, lower limit are freed at once.
void set_limit(std::size_t bytes);

struct Info {
  std::size_t limit, cached_bytes, cached_buffers, hits, misses;
};
Info info();

}  // namespace buffers
}  // namespace fastnorm
