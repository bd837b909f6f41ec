// Elementwise loops in which every element goes through the vectorised loop body.
//
// GCC compiles a `#pragma omp simd` loop into a vector body plus a scalar remainder, and the two can round
// differently (FMA contraction is decided separately for each).  An element's result would then depend on its
// position in the buffer, and so on the buffer's alignment and the chunking.  run_blocked calls the loop on whole
// blocks of kBlock elements only, and on the ragged rest through zero-padded, aligned copies.
//
// Large outputs are written with non-temporal (streaming) stores: each sub-block is computed into an L1 buffer and
// streamed out, so that the output's cache lines are not first read from memory (a write-allocate store moves 3
// bytes per 2 of y = f(x)).  The caller decides (stream_output in parallel.h); the values are the same either way.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include <type_traits>

#include "fastnorm/isa.h"
#include "fastnorm/tuning.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#define FASTNORM_HAVE_STREAM 1
#else
#define FASTNORM_HAVE_STREAM 0
#endif

namespace fastnorm {

constexpr idx kBlock = 64;  // a multiple of every vector width (16 floats, 8 doubles per AVX-512 register)
constexpr idx kStreamStep = tuning::kStreamStep;  // a multiple of kBlock
constexpr idx kStreamPiece = tuning::kStreamPiece;

// dst[i] = src[i] for n a multiple of kBlock and dst 64-byte aligned, with streaming stores as wide as the active
// ISA level has (stream.cpp: intrinsics live there, compiled per level).  stream_fence() orders them before
// whatever the thread does next, such as leaving the parallel region.
void stream_copy(const float* src, float* dst, idx n);
void stream_copy(const double* src, double* dst, idx n);
// The same for any n and any alignment of dst (NumPy's arrays are 16-byte aligned): its whole 64-byte lines
// streamed, the partial lines at either end stored as usual.
void stream_store(const float* src, float* dst, idx n);
void stream_store(const double* src, double* dst, idx n);
#if FASTNORM_HAVE_HALF
void stream_copy(const half* src, half* dst, idx n);
// float16 <-> float32, n values, rounding to nearest even (stream.cpp: F16C where the ISA level has it).
void to_float(const half* src, float* dst, idx n);
void from_float(const float* src, half* dst, idx n);
void stream_store(const half* src, half* dst, idx n);
#endif
// bfloat16 <-> float32, n values: widening is exact; narrowing rounds to nearest even and turns NaN into the quiet
// NaN of its sign (0x7fc0 / 0xffc0), as ml_dtypes does.
void to_float(const bf16* src, float* dst, idx n);
void from_float(const float* src, bf16* dst, idx n);
void stream_store(const bf16* src, bf16* dst, idx n);
void stream_copy(const bf16* src, bf16* dst, idx n);
#if FASTNORM_HAVE_STREAM
FASTNORM_INLINE void stream_fence() { _mm_sfence(); }
#else
FASTNORM_INLINE void stream_fence() {}
#endif

template <class T>
FASTNORM_INLINE bool can_stream(const T* out) {
  return FASTNORM_HAVE_STREAM && reinterpret_cast<std::uintptr_t>(out) % 64 == 0;
}

// Values of narrow storage (float16, bfloat16) are computed in float: widened and rounded in registers by the
// loops that take their ISA level (narrow.h: the activations, batch norm's apply and dx passes, the statistics'
// pieces; row_blocks.h: layer norm's rows, the per-channel apply), else widened into L1 first and rounded back from
// it after.
template <class T>
constexpr bool is_narrow = !std::is_same_v<T, compute_t<T>>;

// Loop::loop(in, out, n, params) with n a multiple of kBlock; in = N input pointers.
// The loop runs on sub-blocks of kStep elements, prefetching its inputs kAhead elements ahead: loops with much
// arithmetic per element otherwise keep too few loads in flight to overlap memory with compute.  Measured at 16M
// float32, time / copy time, 1 and 2 threads: gelu 2.2 / 2.8 -> 1.3 / 1.5, sigmoid 1.0 / 1.3 -> 1.0 / 1.1, relu
// unchanged; longer distances (2048 ahead) were worse, and slowed memory-bound loops by ~20%.
// With `stream` (and out 64-byte aligned) each sub-block goes through an L1 buffer and streaming stores.
// (Helpers are always-inline functions, not lambdas: a lambda that GCC declines to inline would be compiled for the
// default ISA, not the caller's.)
template <class Loop, Isa I, class T, std::size_t N, class P>
FASTNORM_INLINE void run_loop(const std::array<const T*, N>& in, T* out, idx n, const P& params) {
  if constexpr (takes_isa<Loop>::value)
    Loop::template loop<I>(in, out, n, params);
  else
    Loop::loop(in, out, n, params);
}

template <class Loop, Isa I, class T, std::size_t N, class P>
FASTNORM_INLINE void run_sub_block(const std::array<const T*, N>& in, T* out, idx b, idx len, const P& params,
                                   bool stream) {
  std::array<const T*, N> at;
  for (std::size_t k = 0; k < N; ++k) at[k] = in[k] + b;
#if FASTNORM_HAVE_STREAM
  if (stream) {
    alignas(64) T buf[kStreamStep];
    run_loop<Loop, I>(at, static_cast<T*>(buf), len, params);
    stream_copy(static_cast<const T*>(buf), out + b, len);
    return;
  }
#endif
  run_loop<Loop, I>(at, out + b, len, params);
}

// Loop::loop(in, out, n, params), or Loop::loop<I>(...) for a Loop that takes its ISA level (I is the level of
// the body this runs in).
template <class Loop, Isa I = Isa::baseline, class T, std::size_t N, class P>
FASTNORM_INLINE void run_blocked(const std::array<const T*, N>& in, T* out, idx n, const P& params,
                                 bool stream = false) {
  const idx full = n - n % kBlock;
  constexpr idx kStep = kStreamStep, kAhead = 512, kLine = 64 / static_cast<idx>(sizeof(T));
  stream = stream && can_stream(out);
  idx b = 0;
  for (; b + kStep <= full; b += kStep) {
    for (std::size_t k = 0; k < N; ++k)
      for (idx i = kAhead; i < kAhead + kStep; i += kLine) __builtin_prefetch(in[k] + b + i);
    run_sub_block<Loop, I>(in, out, b, kStep, params, stream);
  }
  if (b < full) run_sub_block<Loop, I>(in, out, b, full - b, params, stream);
#if FASTNORM_HAVE_STREAM
  if (stream) stream_fence();
#endif
  const idx rest = n - full;
  if (rest == 0) return;
  alignas(64) T padded[N][kBlock];
  alignas(64) T result[kBlock];
  std::array<const T*, N> pin;
  for (std::size_t k = 0; k < N; ++k) {
    for (idx i = 0; i < kBlock; ++i) padded[k][i] = i < rest ? in[k][full + i] : T{};
    pin[k] = padded[k];
  }
  run_loop<Loop, I>(pin, static_cast<T*>(result), kBlock, params);
  for (idx i = 0; i < rest; ++i) out[full + i] = result[i];
}

}  // namespace fastnorm
