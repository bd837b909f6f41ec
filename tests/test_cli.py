"""The command line: `python -m fastnorm info` and a tiny `bench` run (its numbers are not checked here)."""
import json
import subprocess
import sys

import pytest

from fastnorm.__main__ import main


def test_info_prints_the_build(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for key in ("version", "isa", "supported_isas", "openmp", "num_threads", "compiler", "flags"):
        assert key in out


def test_bench_runs_a_filtered_quick_case_and_writes_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    args = ["bench", "--quick", "--size", "4096", "--repeats", "2", "--threads", "1", "--filter", "relu",
            "--no-torch", "--json", str(path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "relu fwd" in out and "relu bwd" in out and "copy bandwidth" in out
    rows = json.loads(path.read_text())["rows"]
    names = {r["case"] for r in rows}
    assert {"relu fwd", "relu bwd"} <= names and all("relu" in name for name in names)
    assert all(r["fastnorm_out_ms"] > 0 and r["gbs"] > 0 for r in rows)


def test_bench_with_a_filter_that_matches_nothing_is_an_error():
    with pytest.raises(SystemExit):
        main(["bench", "--filter", "no-such-op", "--no-torch"])


def test_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "fastnorm", "info"], capture_output=True, text=True, check=True)
    assert "isa" in out.stdout
