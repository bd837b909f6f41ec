// Output policy and scratch memory of the normalization kernels: per-thread scratch blocks, the float16 / bfloat16
// values that go through L1 pieces (widened into scratch, rounded into place; the bodies templated on the storage
// type convert in registers instead, narrow.h), whether an output is streamed (stream_out, stream_runs), and the
// piece sizes of the elementwise passes.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "fastnorm/blocked.h"
#include "fastnorm/isa.h"
#include "fastnorm/narrow.h"
#include "fastnorm/parallel.h"

namespace fastnorm {
namespace loops {

// Per-thread scratch blocks of at least n values, one per use (so that a kernel can hold several at once), kept
// between calls: allocating one per task (hundreds of KB) cost page faults on every call.
enum class Scratch { work, piece, x, dy, out };

template <class T, Scratch S = Scratch::work>
T* thread_scratch(std::size_t n) {
  thread_local std::vector<T> buf;
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}

// Narrow storage (float16, bfloat16) is computed in float.  Bodies templated on the storage type (ApplyRun,
// GradRun, NarrowPieceSums) widen and round in registers (narrow.h); the others go piece by piece through L1:
// widened<S>(p, n) is p itself for wide types, else its n values widened into the thread's scratch S; a result
// computed at compute_target(dst, n) (dst itself, or scratch) is rounded into dst by narrow_into.  Either way the
// float arithmetic sees the values of the float32 array, so results are float32's, rounded once.  The rule: a body
// that reads each stored value once, in one vectorised pass over a contiguous run, converts in registers; a body
// whose values are read by several passes (a fused activation's gradient and then its sums, channels-last rows
// whose column sums and outputs are separate loops) widens them once into scratch, which the later passes read.
template <Scratch S, class T>
const compute_t<T>* widened(const T* p, idx n) {
  if constexpr (is_narrow<T>) {
    compute_t<T>* w = thread_scratch<compute_t<T>, S>(static_cast<std::size_t>(n));
    to_float(p, w, n);
    return w;
  } else {
    return p;
  }
}

template <class T>
compute_t<T>* compute_target(T* dst, idx n) {
  if constexpr (is_narrow<T>)
    return thread_scratch<compute_t<T>, Scratch::out>(static_cast<std::size_t>(n));
  else
    return dst;
}

template <class T>
void narrow_into(const compute_t<T>* v, T* dst, idx n) {
  if constexpr (is_narrow<T>) from_float(v, dst, n);
}

// Whether an output of n values of T goes out with streaming stores (blocked.h), piece by piece through L1: past
// the streaming threshold for a kernel of that many passes (parallel.h), and not behind a compute-bound activation
// (the extra copy then costs more than it saves).  32x64x56x56 float32 forward: 25-30% faster.
template <class T>
bool stream_out(idx n, int passes, bool compute_bound) {
  return FASTNORM_HAVE_STREAM && !compute_bound && stream_output(n * static_cast<idx>(sizeof(T)), passes);
}

// The same for an output written as runs (rows) of `run` values, each through its own map_blocks: only where the
// runs are whole cache lines, or at least min_bytes long, so that the partial lines at their ends (stored plainly,
// each waiting for its line while the streamed stores queue behind it) do not outweigh what streaming saves
// (tuning.h: kStreamRunBytes*).
template <class T>
bool stream_runs(const T* out, idx n, idx run, int passes, bool compute_bound, idx min_bytes) {
  const idx bytes = run * static_cast<idx>(sizeof(T));
  const bool whole_lines = can_stream(out) && bytes % 64 == 0;
  return stream_out<T>(n, passes, compute_bound) && (whole_lines || bytes >= min_bytes);
}

// Brings the cache line where a streamed row of out begins, when that is mid-line, into the cache ahead of time: the
// partial lines between rows are stored plainly (the rest streams), and without this each row's first store waits
// for its line to come from memory while the stores behind it fill the store buffer.  It matters most where NumPy
// put both arrays, 16 bytes into a page: RMS norm 8192 x 1024 float32, 1 thread, out= at x's page offset
// 2.2-2.3 -> 1.7-1.9 ms (page-aligned out= 1.6-1.8 ms).  Layer / RMS norm and log-softmax rows call it.
template <class T>
FASTNORM_INLINE void prefetch_row_start(T* out) {
  if (reinterpret_cast<std::uintptr_t>(out) % 64 != 0) __builtin_prefetch(out, 1);
}

// Rows of C values per piece of the elementwise passes: kStreamPiece values (an L1 block), at least one row.
inline idx piece_rows(idx C) { return std::max<idx>(1, kStreamPiece / std::max<idx>(C, 1)); }

// Rows of L values per piece of the per-column sums (column_sums, SumsRows): about 4096 values, in whole row
// blocks of both (64 rows), so that summing piece by piece gives the bits of one call over all the rows.
inline idx sum_rows(idx L) { return std::max<idx>(64, 4096 / std::max<idx>(L, 1) / 64 * 64); }

// Rows [r0, r1) of C values computed by rows_to(r, rows, dst) (rows r.. r + rows into dst, compute_t<T> values),
// piece_rows(C) at a time: in place, or for narrow storage into L1 scratch rounded into place; with `stream` into
// an L1 piece that is then streamed out.
template <class T, class F>
void write_rows(T* out, idx r0, idx r1, idx C, bool stream, const F& rows_to) {
  const idx step = piece_rows(C);
  T* piece = stream ? thread_scratch<T, Scratch::piece>(static_cast<size_t>(step * C)) : nullptr;
  for (idx r = r0; r < r1; r += step) {
    const idx rows = std::min(step, r1 - r), n = rows * C;
    T* dst = piece ? piece : out + r * C;
    compute_t<T>* target = compute_target(dst, n);
    rows_to(r, rows, target);
    narrow_into(static_cast<const compute_t<T>*>(target), dst, n);
    if (piece) stream_store(static_cast<const T*>(piece), out + r * C, n);
  }
  if (stream) stream_fence();
}

}  // namespace loops
}  // namespace fastnorm
