"""Print the accuracy table of docs/accuracy.md from the measurements of tests/test_accuracy.py.

    FASTNORM_ISA=v4 python tools/accuracy_table.py      # run once per ISA level; the doc lists the worst
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import test_accuracy  # noqa: E402

import fastnorm  # noqa: E402
import numpy as np  # noqa: E402

print(f"ISA {fastnorm.info()['isa']}\n")
print("| function | forward float32 (ulps) | forward float64 (ulps) | backward float32 (eps) | backward float64 (eps) "
      "| denormal results float32 / float64 (smallest denormals) |")
print("|---|---|---|---|---|---|")
for name, f32, f64, b32, b64, d32, d64 in test_accuracy.measure_all():
    print(f"| {name} | {f32:.2f} | {f64:.2f} | {b32:.2f} | {b64:.2f} | {d32:.1f} / {d64:.1f} |")

print()
print("| function | float32 | float64 |")
print("|---|---|---|")
(l32, s32), (l64, s64) = (test_accuracy.softmax_error(np.float32), test_accuracy.softmax_error(np.float64))
print(f"| log_softmax (ulps, where normal) | {l32:.2f} | {l64:.2f} |")
print(f"| softmax: largest abs(row sum - 1) (eps) | {s32:.2f} | {s64:.2f} |")
