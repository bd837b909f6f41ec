"""The command line: `python -m fastnorm info`, a tiny `bench` run and its report (numbers not checked here)."""
import json
import subprocess
import sys

import pytest

from fastnorm.__main__ import main
from fastnorm.bench_cases import _half_dtypes


def test_info_prints_the_build(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for key in ("version", "isa", "supported_isas", "openmp", "num_threads", "compiler", "flags"):
        assert key in out


def test_bench_runs_a_filtered_quick_case_and_writes_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    args = ["bench", "--quick", "--size", "4096", "--repeats", "2", "--threads", "1", "--filter", "relu b",
            "--no-torch", "--json", str(path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "relu bwd" in out and "copy bandwidth" in out
    rows = json.loads(path.read_text())["rows"]
    names = {r["case"] for r in rows}
    halves = [tag for tag, _ in _half_dtypes()]  # f16, and bf16 with ml_dtypes
    assert names == {f"{op} bwd{suffix}" for op in ("relu", "leaky_relu") for suffix in ["", *(" " + h for h in halves)]}
    assert all(r["fastnorm_out_ms"] > 0 and r["gbs"] > 0 for r in rows)


def test_bench_report_writes_markdown_plots_and_results(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    report = tmp_path / "report"
    args = ["bench", "--quick", "--size", "4096", "--repeats", "2", "--threads", "1,2", "--filter", "relu fwd",
            "--no-torch", "--report", str(report)]
    assert main(args) == 0
    text = (report / "README.md").read_text()
    assert "## 1 thread" in text and "## 2 threads" in text and "## Thread scaling" in text
    assert "| relu fwd |" in text and "--report" in text and "Copy bandwidth" in text
    for name in ("speedup.png", "bandwidth.png", "scaling.png"):
        assert (report / name).read_bytes()[:4] == b"\x89PNG" and f"]({name})" in text
    rows = json.loads((report / "results.json").read_text())["rows"]
    assert len(rows) == 2 * 2 * (1 + len(_half_dtypes()))  # relu, leaky_relu fwd; float32 and halves; 2 threads


def test_bench_report_refuses_an_unwritable_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SystemExit):
        main(["bench", "--quick", "--filter", "relu", "--no-torch", "--report", str(blocker / "sub")])


def test_bench_with_a_filter_that_matches_nothing_is_an_error():
    with pytest.raises(SystemExit):
        main(["bench", "--filter", "no-such-op", "--no-torch"])


def test_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "fastnorm", "info"], capture_output=True, text=True, check=True)
    assert "isa" in out.stdout


@pytest.mark.parametrize("command,option", [("bench", "--full"), ("demo", "--depth"), ("info", "--help")])
def test_each_subcommand_has_its_own_help(command, option, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert f"python -m fastnorm {command}" in out and option in out


def test_bench_defaults_to_the_headline_cases_and_saves_its_results(tmp_path, monkeypatch, capsys):
    from fastnorm import bench
    from fastnorm.__main__ import build_parser
    p = build_parser()
    assert [c.name for c in bench._selected(p, p.parse_args(["bench"]))] == \
        [c.name for c in bench.REGISTRY if c.name in bench.HEADLINE]
    assert set(bench.HEADLINE) <= {c.name for c in bench.REGISTRY}
    assert len(bench._selected(p, p.parse_args(["bench", "--full"]))) == len(bench.REGISTRY)
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--quick", "--size", "4096", "--repeats", "4", "--threads", "1", "--filter",
                 "relu fwd,sigmoid bwd", "--no-torch"]) == 0
    out = capsys.readouterr().out
    saved = list(tmp_path.glob("bench-*.json"))
    assert len(saved) == 1 and f"results: {saved[0].name}" in out
    assert "[1/" in out and "s left" in out  # progress
    table = out[out.index("case "):]
    assert max(len(line) for line in table.splitlines()) <= 100
    assert main(["bench", "--quick", "--size", "4096", "--repeats", "2", "--threads", "1", "--filter", "relu fwd",
                 "--no-torch", "--no-save"]) == 0
    assert len(list(tmp_path.glob("bench-*.json"))) == 1


def test_pytorch_baselines_are_its_fastest_calls():
    """Each activation backward's PyTorch baseline writes into the same preallocated array as fastnorm (its
    grad_input= overload; mish has none), and sigmoid / tanh are taken from the forward's output on every side."""
    torch = pytest.importorskip("torch", reason="PyTorch is optional; this compares with it when installed")
    import numpy as np

    from fastnorm import bench, bench_cases
    rng = np.random.default_rng(0)
    cases = [c for c in bench.REGISTRY if "activation" in c.tags and "half" not in c.tags and c.torch]
    assert len(cases) > 20
    for case in cases:
        inputs = case.setup(1000, rng)
        tin = {k: torch.from_numpy(v) for k, v in inputs.items()}
        tout = torch.empty(1000)
        result = case.torch(tin, tout)
        if case.name != "mish bwd" and case.name != "selu fwd":
            assert result is tout or result.data_ptr() == tout.data_ptr(), f"{case.name}: PyTorch allocates"
        want = case.fastnorm(inputs, None)
        np.testing.assert_allclose(result.numpy(), want, rtol=2e-4, atol=2e-5, err_msg=case.name)
        if case.name.split()[0] in bench_cases.FROM_OUTPUT and "bwd" in case.name:
            assert set(inputs) == {"dy", "y"}


def test_pytorch_norm_baselines_write_into_the_out_array():
    """The norms' PyTorch baselines take its native_*.out overloads when given an output (the statistics or
    parameter gradients they also write go to small tensors of their own), and compute what fastnorm computes."""
    torch = pytest.importorskip("torch", reason="PyTorch is optional; this compares with it when installed")
    import numpy as np

    from fastnorm import bench
    rng = np.random.default_rng(0)
    names = ["batch_norm fwd nchw 64x256x14x14", "batch_norm bwd nhwc 64x256x14x14",
             "batch_norm eval nchw 64x256x14x14", "layer_norm fwd 32768x256", "layer_norm bwd 32768x256",
             "group_norm fwd nhwc 64x256x14x14", "group_norm bwd nchw 64x256x14x14"]
    cases = {c.name: c for c in bench.REGISTRY}
    for name in names:
        case = cases[name]
        inputs = case.setup(0, rng)
        tin = {k: torch.from_numpy(v) for k, v in inputs.items() if isinstance(v, np.ndarray)}
        out = np.full(case.shape, np.nan, np.float32)
        result = case.torch(tin, torch.from_numpy(out))
        assert result.data_ptr() == out.ctypes.data, f"{name}: PyTorch allocates"
        want = case.fastnorm(inputs, None)
        want = want[0] if isinstance(want, tuple) else want  # a backward's dx
        np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4, err_msg=name)


def test_onnx_runtime_peer_computes_the_same_op():
    """Each case's ONNX node (its attributes, eps, input order) computes what the case's fastnorm call computes, its
    output bound to the preallocated array, and the accuracy measure sees both sides' errors."""
    pytest.importorskip("onnxruntime", reason="ONNX Runtime is optional; the benchmark compares with it when installed")
    pytest.importorskip("onnx")
    import numpy as np

    from fastnorm import bench, bench_onnx
    rng = np.random.default_rng(0)
    cases = [c for c in bench.REGISTRY if c.onnx is not None]
    assert {c.onnx.op_type for c in cases} >= {"Relu", "Tanh", "Gelu", "LayerNormalization", "RMSNormalization",
                                                  "BatchNormalization", "InstanceNormalization",
                                                  "GroupNormalization", "Softmax", "LogSoftmax"}
    for case in cases:
        if "sweep" in case.tags and case.shape[-1] not in (128, 1024):
            continue  # the same node at other widths
        n = 4096 if case.shape is None else int(np.prod(case.shape))
        inputs = case.setup(n, rng)
        theirs = np.full(case.shape or n, np.nan, np.float32)
        bench_onnx.bind(case.onnx, inputs, theirs, 1)()
        ours = case.fastnorm(inputs, None)
        scale = np.maximum(np.abs(ours), 1)
        assert np.max(np.abs(theirs - ours) / scale) < 1e-4, case.name
        mine, peer = bench._accuracy(case, inputs, theirs)
        assert 0 <= mine < (1e-5 if case.onnx.metric == "abs" else 200), case.name
        assert np.isfinite(peer), case.name


def test_bench_distributed_family(tmp_path, capsys):
    pytest.importorskip("dask")
    pytest.importorskip("mpi4py")
    path = tmp_path / "d.json"
    assert main(["bench", "--distributed", "--threads", "1", "--repeats", "2", "--no-torch", "--json",
                 str(path)]) == 0
    text = capsys.readouterr().out
    assert "fastnorm.dask" in text and "da.var(dtype=float64)" in text
    rows = json.loads(path.read_text())["rows"]
    assert [r.get("ranks") for r in rows] == [None, 2, 3]
    assert all(r["sync_ms"] > 0 and r["collectives_ms"] > 0 for r in rows[1:])
