"""Microbenchmarks: fastnorm against the plainest NumPy formula, PyTorch's and ONNX Runtime's CPU kernels.

Each case runs, in one process and at the same thread count: fastnorm with a preallocated ``out=`` and
allocating its result, NumPy, PyTorch (when importable; its own allocating call and its ``.out`` overload) and,
for the ops ONNX Runtime has, a one-node ONNX model with its output bound to a preallocated array
(:mod:`fastnorm.bench_onnx`, with each side's accuracy on the case).
Reported per case: the median time, GB/s of compulsory traffic (activation forward: read x, write y; backward:
read dy and x, write dx), and that bandwidth as a fraction of a copy kernel measured in the same run on the same
bytes and threads.  Machines are shared and noisy: compare ratios within one run, not times across runs.

The cases live in :mod:`fastnorm.bench_cases`, registered family by family; this module times them and reports.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import textwrap
import time
from typing import Any, Dict, List, Tuple

import numpy as np

import fastnorm
from fastnorm import _C
from fastnorm import bench_onnx
from fastnorm.bench_cases import HEADLINE, REGISTRY, Case


# ---- measuring --------------------------------------------------------------------------------------------------

def _timings(fn, repeats: int) -> List[Any]:
    fn()  # warm-up: first-touch, caches, thread pool
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def _median_time(fn, repeats: int) -> float:
    return statistics.median(_timings(fn, repeats))


def _spread(times: list) -> float:
    """The interquartile range over the median: how noisy a measurement was (0.1 = 10%)."""
    if len(times) < 4:
        return 0.0
    q = statistics.quantiles(times, n=4)
    return (q[2] - q[0]) / statistics.median(times)


def copy_bandwidth(nbytes: int, threads: int, repeats: int) -> float:
    """GB/s (bytes read + written) of fastnorm's parallel copy kernel on ``nbytes``, the reference bandwidth."""
    src = np.ones(nbytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    t = _median_time(lambda: _C.copy(src, dst, threads), repeats)
    return 2 * nbytes / t / 1e9


def _try(fn):
    """Runs fn once to see that it works here (a missing torch overload, say); returns fn or None."""
    try:
        fn()
        return fn
    except Exception:
        return None


def _blas_threads(threads: int):
    """NumPy's BLAS limited to ``threads`` (orthogonal init and the NumPy formulas use it) when threadpoolctl is
    installed; else left as it is."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(threads, user_api="blas")


def run_case(case: Case, n: int, threads: int, repeats: int, copy_gbs: float, torch_mod: Any,
             onnx: bool = True) -> Dict[str, Any]:
    with _blas_threads(threads):
        return _run_case(case, n, threads, repeats, copy_gbs, torch_mod, onnx)


def _to_torch(torch_mod, a: np.ndarray):
    """A tensor sharing ``a``'s memory; ml_dtypes' bfloat16 becomes torch.bfloat16 (from_numpy cannot read it)."""
    if a.dtype.name == "bfloat16":
        return torch_mod.from_numpy(a.view(np.uint16)).view(torch_mod.bfloat16)
    return torch_mod.from_numpy(a)


def _accuracy(case: Case, inputs: Dict[str, Any], theirs: np.ndarray) -> Tuple[float, float]:
    """(fastnorm's error, the peer's) on the case against fastnorm's float64 evaluation of the same op."""
    wide = {k: v.astype(np.float64) if isinstance(v, np.ndarray) and v.dtype == np.float32 else v
            for k, v in inputs.items()}
    reference = case.fastnorm(wide, None)
    metric = case.onnx.metric if case.onnx is not None else "ulp"
    return (bench_onnx.error(case.fastnorm(inputs, None), reference, metric),
            bench_onnx.error(theirs, reference, metric))


def _run_case(case: Case, n: int, threads: int, repeats: int, copy_gbs: float, torch_mod,
              onnx: bool = True) -> Dict[str, Any]:
    rng = np.random.default_rng(0)
    if case.shape is not None:
        n = int(np.prod(case.shape))
    inputs = case.setup(n, rng)
    out = np.empty(case.shape or n, dtype=case.dtype) if case.has_out else None
    moved = case.bytes_per_element * n
    row = {"case": case.name, "n": n, "threads": threads}

    def record(key, fn):
        if fn is None:
            row[key] = None
            return None
        times = _timings(fn, repeats)
        row[key] = statistics.median(times) * 1e3
        return _spread(times)

    fastnorm.set_num_threads(threads)
    try:
        spread_out = record("fastnorm_out_ms", (lambda: case.fastnorm(inputs, out)) if case.has_out else None)
        spread_alloc = record("fastnorm_alloc_ms", lambda: case.fastnorm(inputs, None))
    finally:
        fastnorm.set_num_threads(None)
    row["spread"] = max(s for s in (spread_out, spread_alloc) if s is not None)
    if case.numpy is not None:
        record("numpy_ms", _try(lambda: case.numpy(inputs, None)))
    if torch_mod is not None and case.torch is not None:
        torch_mod.set_num_threads(threads)
        tin = {k: _to_torch(torch_mod, v) for k, v in inputs.items() if isinstance(v, np.ndarray)}
        tout = _to_torch(torch_mod, np.empty(case.shape or n, dtype=case.dtype))
        record("torch_alloc_ms", _try(lambda: case.torch(tin, None)))
        # PyTorch's out= overloads: activation forwards and backwards (grad_input=), the samplers, softmax, and the
        # norms' native_*.out (instance norm and RMS norm have none: those calls allocate either way)
        with_out = case.has_out and any(t in case.tags for t in ("activation", "random", "loss", "normalization"))
        record("torch_out_ms", _try(lambda: case.torch(tin, tout)) if with_out else None)
    if onnx and case.onnx is not None and out is not None:
        theirs = np.empty_like(out)
        try:
            ort_call = bench_onnx.bind(case.onnx, inputs, theirs, threads)  # None: no ONNX Runtime here
        except Exception as e:  # an ONNX Runtime too old for the op, say: the other columns still count
            print(f"ONNX Runtime cannot run {case.name}: {str(e).splitlines()[0]}", flush=True)
            ort_call = None
        if ort_call is not None:
            record("onnx_ms", ort_call)
            row["vs_onnx"] = row["onnx_ms"] / row["fastnorm_out_ms"]
            row["fastnorm_error"], row["onnx_error"] = _accuracy(case, inputs, theirs)
    best = min(v for v in (row["fastnorm_out_ms"], row["fastnorm_alloc_ms"]) if v is not None)
    row["gbs"] = moved / (best / 1e3) / 1e9
    row["copy_fraction"] = row["gbs"] / copy_gbs
    best_np = row.get("numpy_ms")
    torch_times = [v for v in (row.get("torch_alloc_ms"), row.get("torch_out_ms")) if v]
    row["vs_numpy"] = best_np / row["fastnorm_alloc_ms"] if best_np else None
    row["vs_torch_alloc"] = row["torch_alloc_ms"] / row["fastnorm_alloc_ms"] if row.get("torch_alloc_ms") else None
    row["vs_torch_out"] = (row["torch_out_ms"] / row["fastnorm_out_ms"]) if row.get("torch_out_ms") else None
    row["vs_torch_best"] = min(torch_times) / best if torch_times else None
    return row


def small_call_overhead(repeats: int = 2000) -> Dict[str, Any]:
    """Median microseconds of a call on 1,000 float32 elements: activations allocating and with out=, and the
    normalizations (10 x 100, affine, training; group norm in 10 groups of 10 channels) forward and backward."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(1000).astype(np.float32)
    out = np.empty_like(x)
    res = {}
    for name, fn in [("relu", fastnorm.relu), ("sigmoid", fastnorm.sigmoid)]:
        res[f"{name}_alloc_us"] = _median_time(lambda: fn(x), repeats) * 1e6
        res[f"{name}_out_us"] = _median_time(lambda: fn(x, out=out), repeats) * 1e6
    x2, dy = x.reshape(10, 100), rng.standard_normal((10, 100)).astype(np.float32)
    gamma, beta = np.ones(100, np.float32), np.zeros(100, np.float32)
    calls = {  # name: (forward, backward from the forward's statistics)
        "batch_norm": (lambda: fastnorm.batch_norm(x2, gamma=gamma, beta=beta, return_stats=True),
                       lambda s: fastnorm.batch_norm_backward(dy, x2, s[1], s[2], gamma)),
        "layer_norm": (lambda: fastnorm.layer_norm(x2, gamma, beta, return_stats=True),
                       lambda s: fastnorm.layer_norm_backward(dy, x2, s[1], s[2], gamma)),
        "rms_norm": (lambda: fastnorm.rms_norm(x2, gamma, return_stats=True),
                     lambda s: fastnorm.rms_norm_backward(dy, x2, s[1], gamma)),
        "group_norm": (lambda: fastnorm.group_norm(x2, 10, gamma, beta, return_stats=True),
                       lambda s: fastnorm.group_norm_backward(dy, x2, s[1], s[2], 10, gamma)),
    }
    for name, (fwd, bwd) in calls.items():
        stats = fwd()
        res[f"{name}_us"] = _median_time(fwd, repeats) * 1e6
        res[f"{name}_backward_us"] = _median_time(lambda: bwd(stats), repeats) * 1e6
    return res


def _fmt(v, spec=".2f", suffix=""):
    return "-" if v is None else f"{v:{spec}}{suffix}"


NOISY = 0.10  # a spread (interquartile range over the median) above this marks a time as noisy


def format_table(rows: List[Dict[str, Any]], copy: Dict[int, float]) -> str:
    """The results as a table of at most 100 columns; '~' marks a noisy fastnorm time (spread above 10%), '!' a
    fraction of the copy bandwidth above 100% (the copy's own measurement was slower: noise)."""
    width = max([26] + [len(r["case"]) for r in rows])
    head = (f"{'case':<{width}}{'thr':>4}{'out= ms':>9}{'GB/s':>7}{'%copy':>7}{'alloc ms':>9}{'numpy ms':>9}"
            f"{'torch ms':>9}{'x numpy':>8}{'x torch':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        noisy = "~" if r.get("spread", 0.0) > NOISY else " "
        over = "!" if r["copy_fraction"] > 1 else " "
        torch_best = min((v for v in (r.get("torch_alloc_ms"), r.get("torch_out_ms")) if v), default=None)
        lines.append(
            f"{r['case']:<{width}}{r['threads']:>4}{_fmt(r['fastnorm_out_ms']):>8}{noisy}{_fmt(r['gbs'], '.1f'):>7}"
            f"{_fmt(100 * r['copy_fraction'], '.0f', '%'):>6}{over}{_fmt(r['fastnorm_alloc_ms']):>9}"
            f"{_fmt(r.get('numpy_ms')):>9}{_fmt(torch_best):>9}"
            f"{_fmt(r.get('vs_numpy'), '.1f', 'x'):>8}{_fmt(r.get('vs_torch_best'), '.1f', 'x'):>8}")
    lines.append("")
    lines.append("copy bandwidth (read + write): " +
                 ", ".join(f"{t} thread{'s' if t > 1 else ''} {g:.1f} GB/s" for t, g in copy.items()))
    lines += textwrap.wrap(
        "x numpy: NumPy's allocating time / fastnorm's allocating time.  x torch: PyTorch's best call (allocating "
        "or out=) / fastnorm's best.  GB/s and %copy: fastnorm's best time (out= where the op has it), compulsory "
        "bytes over the copy bandwidth.  ~: a noisy time (interquartile range above 10% of the median); !: above "
        "the copy bandwidth measured in the same run (noise).", 100)
    return "\n".join(lines)


def format_onnx_table(rows: List[Dict[str, Any]]) -> str:
    """The cases ONNX Runtime has: both sides' times with out= (ORT's output bound to a preallocated array), the
    ratio, and each side's error against float64 (ulps for activations, absolute for norms and softmaxes)."""
    mine = [r for r in rows if r.get("onnx_ms")]
    width = max([26] + [len(r["case"]) for r in mine])
    head = (f"{'case (vs ONNX Runtime)':<{width}}{'thr':>4}{'out= ms':>9}{'ORT ms':>9}{'x ORT':>7}{'error':>10}"
            f"{'ORT err':>10}")
    lines = [head, "-" * len(head)]
    for r in mine:
        lines.append(f"{r['case']:<{width}}{r['threads']:>4}{_fmt(r['fastnorm_out_ms']):>9}{_fmt(r['onnx_ms']):>9}"
                     f"{_fmt(r.get('vs_onnx'), '.2f', 'x'):>7}{_fmt(r.get('fastnorm_error'), '.2g'):>10}"
                     f"{_fmt(r.get('onnx_error'), '.2g'):>10}")
    lines += textwrap.wrap(
        "x ORT: ONNX Runtime's time / fastnorm's, both writing into a preallocated array.  error: the largest error "
        "against the op evaluated in float64, in float32 ulps for activations, absolute for norms and softmaxes.",
        100)
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The benchmark's options (``python -m fastnorm bench --help``)."""
    p.add_argument("--full", action="store_true",
                   help=f"every case ({len(REGISTRY)}, about 20 minutes on 2 cores) instead of the {len(HEADLINE)} "
                        "headline ones")
    p.add_argument("--quick", action="store_true", help="1M elements, 5 repeats: a fast smoke run")
    p.add_argument("--threads", default=None, help="comma-separated thread counts (default: 1 and the maximum)")
    p.add_argument("--filter", default="",
                   help="only cases whose name contains this (several, comma-separated: any of them); implies "
                        "--full's list")
    p.add_argument("--size", type=int, default=None, help="elements per array (default 16M, --quick 1M)")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per measurement (default 15)")
    p.add_argument("--json", default=None, metavar="FILE",
                   help="where to save the results (default bench-<date>-<time>.json here)")
    p.add_argument("--no-save", action="store_true", help="do not save the results")
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch even if it is installed")
    p.add_argument("--no-onnx", action="store_true", help="skip ONNX Runtime even if it is installed")
    p.add_argument("--distributed", action="store_true",
                   help="the distributed family instead: Dask statistics against da.var, SyncBatchNorm steps over "
                        "2 and 3 MPI ranks against local batch norm and a torch.distributed (gloo) one")
    p.add_argument("--report", default=None, metavar="DIR",
                   help="write a Markdown report with plots (matplotlib) and the raw results into DIR")


def main(argv: Any = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastnorm bench", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return run(p, p.parse_args(argv), argv)


def _selected(p: argparse.ArgumentParser, args) -> List[Any]:
    if args.filter:
        wanted = [f.strip() for f in args.filter.split(",")]
        cases = [c for c in REGISTRY if any(f in c.name for f in wanted)]
        if not cases:
            p.error(f"no benchmark case matches --filter {args.filter!r}")
        return cases
    if args.full:
        return list(REGISTRY)
    return [c for c in REGISTRY if c.name in HEADLINE]


def run(p: argparse.ArgumentParser, args: Any, argv: Any = None) -> int:
    """Runs the benchmark the parsed ``args`` describe (``p`` reports bad arguments)."""
    if args.report:
        try:
            os.makedirs(args.report, exist_ok=True)
            probe = os.path.join(args.report, ".fastnorm-write-test")
            open(probe, "w").close()
            os.remove(probe)
        except OSError as e:
            p.error(f"--report {args.report!r} cannot be written ({e.strerror or e})")

    n = args.size or (1 << 20 if args.quick else 1 << 24)
    repeats = args.repeats or (5 if args.quick else 15)
    maxt = fastnorm.get_num_threads()
    threads = sorted({int(t) for t in args.threads.split(",")}) if args.threads else sorted({1, maxt})
    if args.distributed:
        from fastnorm import bench_distributed
        rows = bench_distributed.run(threads, repeats, not args.no_torch)
        if not args.no_save:
            path = args.json or time.strftime("bench-distributed-%Y%m%d-%H%M%S.json")
            with open(path, "w") as f:
                json.dump({"info": fastnorm.info(), "repeats": repeats, "rows": rows}, f, indent=1)
            print(f"results: {path}")
        return 0
    cases = _selected(p, args)
    torch_mod = None
    if not args.no_torch:
        try:
            import torch as torch_mod
        except ImportError:
            print("PyTorch is not installed: comparing with NumPy only (pip install torch to add it)")
    onnx_peer = not args.no_onnx and bench_onnx.runtime() is not None
    ort_version = bench_onnx.runtime()[1].__version__ if onnx_peer else None  # type: ignore[index]
    info = fastnorm.info()
    total = len(cases) * len(threads)
    print(f"fastnorm {info['version']}  ISA {info['isa']}  {platform.machine()}  float32, {n} elements, "
          f"median of {repeats}" + (f", torch {torch_mod.__version__}" if torch_mod else "") +
          (f", onnxruntime {ort_version}" if ort_version else "") +
          f": {total} measurements" + ("" if args.full or args.filter else " (the headline cases; --full: all)"),
          flush=True)

    rows, copy = [], {}
    start = time.perf_counter()
    for t in threads:
        copy[t] = copy_bandwidth(4 * n, t, repeats)
        for case in cases:
            rows.append(run_case(case, n, t, repeats, copy[t], torch_mod, onnx_peer))
            done, elapsed = len(rows), time.perf_counter() - start
            left = elapsed / done * (total - done)
            print(f"[{done}/{total}] {case.name} ({t} thread{'s' if t > 1 else ''}): {elapsed:.0f} s elapsed, "
                  f"about {left:.0f} s left", flush=True)
    small = small_call_overhead()
    print()
    print(format_table(rows, copy))
    if any(r.get("onnx_ms") for r in rows):
        print()
        print(format_onnx_table(rows))
    print(textwrap.fill("call on 1,000 elements: " + ", ".join(f"{k} {v:.2f} us" for k, v in small.items()), 100))
    results = {"info": info, "n": n, "repeats": repeats, "copy_gbs": copy, "rows": rows, "small_call": small,
               "torch": getattr(torch_mod, "__version__", None), "onnxruntime": ort_version}
    if not args.no_save:
        path = args.json or time.strftime("bench-%Y%m%d-%H%M%S.json")
        with open(path, "w") as f:
            json.dump(results, f, indent=1)
        print(f"results: {path}")
    if args.report:
        from fastnorm.report import write_report
        command = "python -m fastnorm bench " + " ".join(argv if argv is not None else sys.argv[1:])
        path = write_report(args.report, rows=rows, copy=copy, info=info, n=n, repeats=repeats,
                            torch_version=getattr(torch_mod, "__version__", None), onnx_version=ort_version,
                            small_call=small,
                            command=command.strip())
        print(f"report: {path}")
    return 0
