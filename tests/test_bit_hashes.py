"""The bits of every kernel's outputs over tools/bit_hashes.py's grid equal those recorded in bit_hashes.json for
this build (compiler, platform, ISA level): reorganizing the kernels must not move them.  Builds that were not
recorded skip (another compiler may round differently where contraction is allowed); record one with
``FASTNORM_ISA=<level> python tools/bit_hashes.py --update`` when a change is meant to change the bits, and say
why in the commit."""
import json
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tools"))

import bit_hashes  # noqa: E402


def test_outputs_keep_their_recorded_bits():
    with open(bit_hashes.RECORD) as f:
        record = json.load(f)
    key = bit_hashes.build_key()
    if key not in record:
        pytest.skip(f"no hashes recorded for this build ({key}); recorded: {sorted(record)}")
    got = bit_hashes.compute()
    want = record[key]
    changed = sorted(n for n in want if got.get(n) != want[n])
    missing = sorted(set(got) - set(want))
    assert not changed and not missing, f"changed: {changed[:20]} ({len(changed)}); not recorded: {missing[:20]}"
