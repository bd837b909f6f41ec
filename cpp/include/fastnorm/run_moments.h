// The moments schedule: how a contiguous run, and a channel of an (A, C, B) array, are cut into pieces whose
// shifted sums (centering.h) are merged in a fixed order, so that every kernel computing a channel's statistics
// this way (moments.cpp, batch_norm.cpp's fused forward) gets the same bits for any thread count.
#pragma once

#include <algorithm>

#include "fastnorm/centering.h"
#include "fastnorm/isa.h"
#include "fastnorm/moments.h"
#include "fastnorm/parallel.h"

namespace fastnorm {
namespace loops {

// Moments of one contiguous run of values stored as S, in pieces merged in order: at most one grain (parallel.h)
// each summed around its first value, the pieces channel_moments uses for a run, so that the statistics equal
// moments() of it; kNarrowPiece values for narrow S (centering.h: narrow_piece_moments, widened in registers).
template <class S>
Moments run_moments(const S* x, idx n) {
  Moments acc;
  for (idx b = 0; b < n; b += is_narrow<S> ? kNarrowPiece : kElementwiseGrain) {
    if constexpr (is_narrow<S>) {
      acc = merge(acc, narrow_piece_moments<S>(x + b, std::min(kNarrowPiece, n - b)));
    } else {
      acc = merge(acc, shifted_moments(x + b, std::min(kElementwiseGrain, n - b)));
    }
  }
  return acc;
}

// How channel_moments sums the runs of B >= kMinRunMoments values of an (A, C, B) array: each run cut into pieces
// of at most one grain (so that a few long runs still use every thread), units (run a, piece k) in order, grouped
// in blocks of units_per_task, about a grain of values each; a channel's blocks are merged in order (Chan).  A
// block is one piece of a long run, or whole runs of a short one, summed in double around the block's first value
// (a merge per run of 196 values cost more than its sums: 64x256x14x14 float32, 1 thread, 1.25 -> 0.55 ms); narrow
// storage merges pieces of at most kNarrowPiece values in order within the block.  Whoever computes a channel's
// moments this way (moments.cpp's tasks, one per channel and block; batch_norm.cpp's fused forward, one per
// channel) gets the same bits.
constexpr idx kMinRunMoments = tuning::kMinRunMoments;  // shorter runs are summed across the row (moments.cpp)

struct RunPieces {
  idx A, C, B, piece, pieces_per_run, units, units_per_task, blocks;
  RunPieces(idx A_, idx C_, idx B_)
      : A(A_), C(C_), B(B_), piece(std::min(B_, kElementwiseGrain)), pieces_per_run((B_ + piece - 1) / piece),
        units(A_ * pieces_per_run), units_per_task(std::max<idx>(1, kElementwiseGrain / piece)),
        blocks((units + units_per_task - 1) / units_per_task) {}

  template <class T>
  Moments block(const T* x, idx c, idx blk) const {
    const idx u0 = blk * units_per_task, u_end = std::min(units, u0 + units_per_task);
    const auto start = [&](idx u) { return x + ((u / pieces_per_run) * C + c) * B + (u % pieces_per_run) * piece; };
    if constexpr (is_narrow<T>) {  // summed a kNarrowPiece at a time, widened in registers
      Moments acc;
      for (idx u = u0; u < u_end; ++u) {
        const idx b0 = (u % pieces_per_run) * piece, len = std::min(B, b0 + piece) - b0;
        const T* run = start(u);
        for (idx i = 0; i < len; i += kNarrowPiece) {
          const T* next = i + kNarrowPiece < len ? run + i + kNarrowPiece : u + 1 < u_end ? start(u + 1) : nullptr;
          acc = merge(acc, narrow_piece_moments(run + i, std::min(kNarrowPiece, len - i), next));
        }
      }
      return acc;
    } else {
      // whole runs (pieces_per_run 1), C * B apart; or a single piece of a long run (units_per_task 1)
      const idx runs = u_end - u0, len = pieces_per_run == 1 ? B : std::min(B, (u0 % pieces_per_run + 1) * piece) -
                                                                      (u0 % pieces_per_run) * piece;
      const T* first = start(u0);
      if (runs == 1) return shifted_moments(first, len);
      const double shift = static_cast<double>(first[0]);
      double s1, s2;
      isa_call<ShiftedSumsRuns<T>>(first, runs, len, C * B, shift, &s1, &s2);
      return from_shifted(static_cast<double>(runs * len), shift, s1, s2);
    }
  }

  // The merge of a channel's blocks, given each block's moments.
  template <class BlockMoments>
  static Moments merged(idx blocks, BlockMoments&& block_moments) {
    Moments acc;
    for (idx blk = 0; blk < blocks; ++blk) acc = merge(acc, block_moments(blk));
    return acc;
  }
};

}  // namespace loops
}  // namespace fastnorm
