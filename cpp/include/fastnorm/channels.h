// Walking arrays viewed as (A, C, B), C-contiguous, with the channel c as the middle index: the layout of every
// per-channel op (PReLU, batch norm).  Work is cut in fixed-size pieces, as everywhere (parallel.h).
#pragma once

#include <algorithm>

#include "fastnorm/parallel.h"

namespace fastnorm {

// Calls f(i, len, c) for each maximal run of one channel inside [begin, end) of the flattened (A, C, B) array.
template <class F>
void for_each_channel_run(idx begin, idx end, idx C, idx B, const F& f) {
  for (idx i = begin; i < end;) {
    const idx row = i / B;
    const idx stop = std::min(end, (row + 1) * B);
    f(i, stop - i, row % C);
    i = stop;
  }
}

// Rows per task so that a task touches about one elementwise grain.
inline idx rows_per_task(idx row_elements) {
  return std::max<idx>(1, kElementwiseGrain / std::max<idx>(1, row_elements));
}

}  // namespace fastnorm
