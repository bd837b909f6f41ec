#pragma once

#include "fastnorm/isa.h"

namespace fastnorm {

// dst[i] = src[i] for n bytes, a plain STREAM-style loop split over threads like every elementwise kernel, with
// the same stores as they use (streaming for large outputs, blocked.h).  The benchmark's bandwidth reference: an
// op that moves the same bytes cannot beat it by much.
void copy_bytes(const void* src, void* dst, idx nbytes, int num_threads);

}  // namespace fastnorm
