// Tuning constants: the sizes that set how work is cut, grouped and kept in cache, in one place with the evidence
// for each (times from the 2-core development machines, float32 unless said; the schedules that use them explain
// the mechanism).  Those marked [bits] also fix the order of floating-point sums: changing one changes results
// (re-record tests/bit_hashes.json and say why).
#pragma once

#include "fastnorm/isa.h"

namespace fastnorm {
namespace tuning {

// ---- threads and memory -----------------------------------------------------------------------------------------

// [bits] Chunk of elementwise work and of the statistics' pieces: 64 KiB of float32.  Below two chunks a thread
// team costs more than it saves; chunk boundaries never depend on the thread count.
constexpr idx kElementwiseGrain = 16384;

// Kernels whose traffic (output-sized arrays read or written, re-reads from cache included: parallel.h) reaches
// this many bytes write their output with streaming stores (FASTNORM_STREAM_BYTES overrides): below it the output is
// likely still in cache when read next; above, skipping the read of each output line saves a third of a
// memory-bound op's traffic.  Measured on the 2-vCPU development machine (32 MiB L3), 1 thread, plain / streamed
// time: relu 9.2 MiB (2 passes, 18 MiB) 0.87, batch norm forward 6.1 MiB (3 passes: statistics, then apply from L2;
// 18 MiB) 0.86 and 9.2 MiB (28 MiB) 1.24, backward 3.1 MiB (5 passes, 16 MiB) 0.76 and 6.1 MiB (31 MiB) 1.34; at
// 12.8 MiB (64x256x14x14 float32, which an output threshold of 16 MiB left unstreamed) batch norm forward 1.27 ->
// 0.83 ms, backward 2.30 -> 1.84, group norm backward channels-last 2.16 -> 1.61.  Test-mode batch norm there (2
// passes, 24.5 MiB, its input and output both in this L3) ran 0.43-0.49 ms plain against 0.56-0.60 streamed: the
// line sits above it, at the L3's size.
constexpr idx kStreamBytes = idx(32) << 20;

// Elements per sub-block of a streamed copy-out (1-2 KiB, stays in L1), and per L1 piece of the normalization
// kernels' streamed outputs.
constexpr idx kStreamStep = 256;
constexpr idx kStreamPiece = 2048;

// Outputs written as rows or runs (layer / RMS norm rows, group norm channel runs) stream only where the rows are
// whole cache lines, or at least this many bytes long even where they start mid-line (out= arrays NumPy allocated:
// 16 bytes into a page), their partial end lines stored plainly (scratch.h: stream_runs).  8M float32 values,
// out= at page offset 16: backward rows of 768 / 512 values went from 1.45 / 1.41x the time into a page-aligned
// out= to 1.10 / 1.17x at 1 thread (1.39 / 1.50x -> 1.11 / 1.05x at 2); the forward gains on rows of 768 (layer
// norm 2.21 -> 2.10 ms at 1 thread, 2.4-2.6 -> 1.6-1.7 ms at 2) and loses on rows of 512 at 1 thread (RMS 1.97 ->
// 2.15 ms, layer norm 2.23 -> 2.45), hence its higher threshold; rows of 128-256 values streamed this way were
// 1.3-2x slower than plain stores, and so were group norm's runs of 196 values (64x256x14x14 float32 forward, 1
// thread: 0.84-0.89 -> 1.12-1.22 ms).
constexpr idx kStreamRunBytesForward = 3072;
constexpr idx kStreamRunBytesBackward = 2048;

// ---- statistics -------------------------------------------------------------------------------------------------

// [bits] Half-storage statistics are summed in float32 around a piece-local shift, pieces of this many values
// (4 KiB of float16, widened in registers): within 4e-7 of float64; a first pass for each piece's own mean cost
// 15-23% of the half forward norms (32x64x56x56 float16 group norm, 1 thread: 1.42 -> 1.10 ms).
constexpr idx kNarrowPiece = 2048;

// [bits] Runs of a channel shorter than this are summed across the row instead of run by run (moments.cpp): a
// merge per run of 196 values cost more than its sums (64x256x14x14, 1 thread: 1.25 -> 0.55 ms).
constexpr idx kMinRunMoments = 64;

// ---- batch norm -------------------------------------------------------------------------------------------------

// One pass by channel where a task's channels stay in L2 between their two loops.  Backward: dy and x of the
// channels up to 1 MiB (any current x86 server core's L2).  Forward: x alone up to half an MiB (256x64x28x28,
// 800 KB a channel, was 3-15% slower than two passes; 160x64x28x28, 500 KB, 10-15% faster).  At most kBnMaxBlock
// neighbouring channels a task (64x256x14x14, 1 thread: 2.4 ms in two passes, 2.2 ms one by one, less in blocks).
constexpr idx kBnBackwardL2Bytes = idx(1) << 20;
constexpr idx kBnForwardL2Bytes = idx(1) << 19;
constexpr idx kBnMaxBlock = 8;

// ---- group norm -------------------------------------------------------------------------------------------------

// Groups of samples handled together in the contiguous forward: about this many bytes of a group's values.
constexpr idx kGnBatchBytes = 4096;
// Groups of one value per channel ((N, C) data) handled together as one channels-last row, their statistics and
// sums in one dispatch: (10, 100) float32 in 10 groups, 1 thread, kernels alone, forward 3.7 -> 2.2 us, backward
// 5.7 -> 2.2-2.6 us (group by group: a dispatch, a copy of the constants and a short reduction's set-up each).
constexpr idx kGnRowBatch = 64;

// ---- layer and RMS norm -----------------------------------------------------------------------------------------

// Rows under kLnGroupBytes go a group at a time (at most kLnMaxGroup rows), statistics first, so that the rows'
// divisions and square roots overlap (262144x32, 1 thread: 20.0 -> 12.2 ms; groups of 4 KiB made 65536x128 8%
// slower at 2 threads).
constexpr idx kLnGroupBytes = 1024;
constexpr idx kLnMaxGroup = 8;

// Backward: rows up to this many values materialise a missing gamma and keep per-task parameter partials; longer
// rows take the nullable path, which keeps nothing as large as a row.
constexpr idx kLnMaterialize = idx(1) << 20;

// [bits] Backward: the parameter partials add this many rows in the compute type before going into double (a double
// add per element and row made the backward compute-bound).
constexpr idx kLnFlushRows = 16;

// ---- softmax and cross-entropy ----------------------------------------------------------------------------------

// [bits] Blocks of this many values are summed in float lanes (16 terms a lane), the blocks in double: as accurate
// as double throughout, at the speed of float vectors.
constexpr idx kSoftmaxSumBlock = 256;

// Rows of at most kSoftmaxGroupBytes (and kSoftmaxGroupRows) together: the group's log1p side by side in vector
// lanes instead of a chain of dependent divisions per row (cross-entropy 65536x32 and log-softmax 65536x128).
constexpr idx kSoftmaxGroupRows = 16;
constexpr idx kSoftmaxGroupBytes = 8192;

// Positions of a (C, B) slab reduced side by side when the class axis is not the last.
constexpr idx kSoftmaxTile = 64;
// Rows from this size on prefetch the next row while summing their exponentials (softmax.cpp: prefetched).
constexpr idx kSoftmaxPrefetchRowBytes = 2048;
// How much of the next row or group softmax prefetches while it computes this one.
constexpr idx kSoftmaxPrefetchBytes = 8192;

}  // namespace tuning
}  // namespace fastnorm
