// Threads: the one place where work is split across OpenMP threads.
//
// Work over [0, n) is cut into chunks of a fixed `grain`, so chunk boundaries never depend on the thread count;
// threads take contiguous runs of chunks (static schedule).  Elementwise kernels are then trivially the same for
// any thread count, and reductions write one partial result per chunk that the caller merges in chunk order,
// which makes them bitwise reproducible too.  Inputs of a single chunk run on the calling thread.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

#include "fastnorm/isa.h"
#include "fastnorm/tuning.h"

namespace fastnorm {

// Chunk size for elementwise work (tuning.h).
constexpr idx kElementwiseGrain = tuning::kElementwiseGrain;

bool have_openmp();
// omp_get_max_threads() (OMP_NUM_THREADS, threadpoolctl, torch.set_num_threads all set it), 1 without OpenMP.
int max_threads();
// The most threads any call starts: 4 per CPU of this machine, at least 64.  Larger requests (num_threads=, or an
// OMP_NUM_THREADS of millions) would only fail in the OpenMP runtime, which ends the process.
int thread_limit();
// `requested` if positive, else max_threads(); at most thread_limit().
int resolve_threads(int requested);

// Whether a kernel writes an output of `nbytes` with streaming (non-temporal) stores, see blocked.h: when its
// traffic, `passes` output-sized arrays read or written (a re-read from cache counting too), is at least
// stream_threshold() bytes, 32 MiB unless FASTNORM_STREAM_BYTES says otherwise (read at first use; 0 streams
// everything, a negative value nothing).  Below it the output is likely still in cache when it is next read.
idx stream_threshold();
void set_stream_threshold(idx nbytes);
inline bool stream_output(idx nbytes, int passes) {
  const idx t = stream_threshold();
  return t >= 0 && nbytes * passes >= t;
}

// Calls f(begin, end) for every chunk [c * grain, min(n, (c + 1) * grain)).
template <class F>
void parallel_for(idx n, idx grain, int num_threads, const F& f) {
  if (n <= 0) return;
  const idx chunks = (n + grain - 1) / grain;
  const int threads = static_cast<int>(std::min<idx>(resolve_threads(num_threads), chunks));
  if (threads <= 1) {
    for (idx c = 0; c < chunks; ++c) f(c * grain, std::min(n, (c + 1) * grain));
    return;
  }
#pragma omp parallel for num_threads(threads) schedule(static)
  for (idx c = 0; c < chunks; ++c) f(c * grain, std::min(n, (c + 1) * grain));
}

// Elementwise work over [0, n) with `out` as the output: a head up to where `out` is 64-byte aligned, then chunks
// as in parallel_for from there, so that every chunk starts and ends on whole cache lines of `out` (but the last).
// NumPy's large buffers are 16-byte aligned: an AVX-512 access from there straddles two cache lines every time,
// and streamed outputs would have partial lines at every chunk's ends (stored plainly: float16 relu 5.9 -> 3.9 ms
// at 16M values, 1 thread, once the chunks ended on whole lines too).  f(begin, end) is called for each piece.
template <class T, class F>
void parallel_for_aligned(const T* out, idx n, int num_threads, const F& f) {
  const auto misalign = static_cast<idx>(reinterpret_cast<std::uintptr_t>(out) % 64);
  const idx size = static_cast<idx>(sizeof(T));
  const idx head = std::min(n, misalign % size ? 0 : (64 - misalign) % 64 / size);
  if (head > 0) f(0, head);
  parallel_for(n - head, kElementwiseGrain, num_threads, [&](idx b, idx e) { f(head + b, head + e); });
}

// Per-task partial sums of a reduction split into tasks: K arrays of `width` doubles per task, zeroed.  Task t adds
// into row(k, t); total() then adds the rows up in task order, column by column (columns split across threads),
// the fixed order that makes the result the same for any thread count.
template <int K>
class TaskPartials {
 public:
  TaskPartials(idx tasks, idx width) : tasks_(tasks), width_(width) {
    for (auto& p : parts_) p.assign(static_cast<size_t>(tasks * width), 0.0);
  }
  double* row(int k, idx t) { return parts_[static_cast<size_t>(k)].data() + t * width_; }
  // out[k][j] = 0 + row(k, 0)[j] + row(k, 1)[j] + ... for each non-null out[k].
  void total(const std::array<double*, K>& out, int num_threads) const {
    parallel_for(width_, kTotalGrain, num_threads, [&](idx j0, idx j1) {
      for (int k = 0; k < K; ++k) {
        double* o = out[static_cast<size_t>(k)];
        if (o == nullptr) continue;
        for (idx j = j0; j < j1; ++j) o[j] = 0;
        for (idx t = 0; t < tasks_; ++t) {
          const double* p = parts_[static_cast<size_t>(k)].data() + t * width_;
          for (idx j = j0; j < j1; ++j) o[j] += p[j];
        }
      }
    });
  }

 private:
  static constexpr idx kTotalGrain = 256;  // columns per chunk: blocks of columns walk the rows contiguously
  idx tasks_, width_;
  std::array<std::vector<double>, K> parts_;
};

}  // namespace fastnorm
