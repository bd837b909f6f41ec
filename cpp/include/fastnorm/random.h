// Counter-based random sampling: Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
// SC 2011), one block of four 32-bit words per counter value, turned into uniform, normal or truncated-normal
// values by branch-free vector code.
//
// The output sequence is a pure function of (key, counter, position): values come in chunks of kChunkColumns
// columns, value k of column j (k < values_per_column) at position k * kChunkColumns + j of its chunk, so whole
// chunks vectorise over j.  A chunk takes chunk_blocks blocks, words laid out word-major (word k of block j at
// k * chunk_blocks + j), and reads them as rows of kChunkColumns words: float, 3 rows (192 blocks), each column's
// 96 bits as four 24-bit fields, the rows' words themselves (their high 24 bits) and a fourth of their low bytes;
// double, 4 rows (256 blocks), two values of 64 bits per column.  A call of n values uses chunks_for(n) chunks
// from `counter` on, and the generator then moves its counter past them.  Threads take whole chunks, and the file
// is compiled without floating-point contraction, so the bits are the same for any thread count and ISA level.
#pragma once

#include <cstdint>
#include <vector>

#include "fastnorm/enum_table.h"
#include "fastnorm/isa.h"

namespace fastnorm {

constexpr idx kChunkColumns = 256;

// The distributions sample() draws from; Python passes their names.
#define FASTNORM_DISTRIBUTIONS(X) X(uniform) X(normal) X(truncated_normal)

enum class Distribution : int { FASTNORM_DISTRIBUTIONS(FASTNORM_ENUM_VALUE) };

inline const std::vector<const char*>& distribution_names() {
  static const std::vector<const char*> names = {FASTNORM_DISTRIBUTIONS(FASTNORM_ENUM_NAME)};
  return names;
}

// 4 per column for float (24 bits each), 2 for double (53-bit uniforms take two words).
template <class T>
constexpr idx values_per_column() {
  return sizeof(T) == 4 ? 4 : 2;
}

// Philox blocks per chunk: 3 words per column for float, 4 for double.
template <class T>
constexpr idx chunk_blocks() {
  return kChunkColumns * (sizeof(T) == 4 ? 3 : 4) / 4;
}

template <class T>
constexpr idx chunks_for(idx n) {
  return (n + kChunkColumns * values_per_column<T>() - 1) / (kChunkColumns * values_per_column<T>());
}

// uniform: low + (high - low) u, u in [0, 1) with 24 (float) or 53 (double) random bits.
// normal: loc + scale z (Box-Muller on pairs of uniforms).
// truncated_normal: loc + scale z with z the standard normal restricted to [a, b]: inverse CDF of a uniform
//   on [Phi(a), Phi(b)] (Wichura's AS241), by symmetry on [-b, -a] when a > 0 so that the uniform lies in the
//   accurate lower half; z clipped to [a, b].
struct SampleParams {
  double loc = 0, scale = 1;  // normal, truncated_normal
  double low = 0, high = 1;   // uniform
  double a = -2, b = 2;       // truncated_normal, in standard deviations
};

// The 4 words of Philox4x32-10 for counter (c0, c1, c2, c3) and key (k0, k1): for tests against the published
// known-answer vectors.
void philox4x32_10(const std::uint32_t ctr[4], const std::uint32_t key[2], std::uint32_t out[4]);

// With `stream`, out is written with streaming stores (blocked.h), at any alignment; the values are the same.
template <class T>
void sample(Distribution d, std::uint64_t key, std::uint64_t counter, T* out, idx n, const SampleParams& p,
            int num_threads, bool stream);

// Dropout's mask from the same generator: 16 random bits per value (a drop probability on a grid of 2**-16), from
// chunks of kDropoutBlocks Philox blocks, chunk c at counter + c * kDropoutBlocks (words block-major as above):
// value j of a chunk uses the low half of word j, value j + kDropoutChunk / 2 the high half.  The mask is a pure
// function of (key, counter, index): the backward regenerates it instead of storing it.
constexpr idx kDropoutBlocks = 128, kDropoutChunk = 8 * kDropoutBlocks;
constexpr idx dropout_chunks(idx n) { return (n + kDropoutChunk - 1) / kDropoutChunk; }

// y = x scale + shift where kept (the value's 16 bits >= threshold), x * 0 + drop_shift where dropped; `stream` as
// sample's (without FASTNORM_HAVE_STREAM the values go to y directly).
template <class T>
void dropout(std::uint64_t key, std::uint64_t counter, const T* x, T* y, idx n, std::uint32_t threshold, T scale,
             T shift, T drop_shift, int num_threads, bool stream);

}  // namespace fastnorm
