"""``python -m fastnorm bench --report DIR``: the benchmark's results as a Markdown report with plots.

Writes ``DIR/README.md`` (machine, versions, the command, copy bandwidth per thread count, one table per thread
count, a summary of the speed-ups over PyTorch and NumPy and, with several thread counts, a thread-scaling
table), ``DIR/results.json`` (the raw rows) and, when matplotlib is installed, ``speedup.png`` (speed-up over
PyTorch per op and thread count), ``bandwidth.png`` (fraction of the copy bandwidth) and ``scaling.png``.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import datetime
import json
import os
import platform
import statistics


def machine() -> Dict[str, Any]:
    """CPU model, logical CPUs, OS and Python: what the report is about."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": model, "logical_cpus": os.cpu_count(), "os": platform.platform(),
            "python": platform.python_version()}


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def _table(rows: list) -> List[Any]:
    lines = ["| case | fastnorm ms (out=) | fastnorm ms (alloc) | GB/s | % of copy | NumPy ms | PyTorch ms (best) | "
             "x NumPy | x PyTorch |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        torch = [v for v in (r.get("torch_alloc_ms"), r.get("torch_out_ms")) if v]
        lines.append(f"| {r['case']} | {_fmt(r['fastnorm_out_ms'], '.3f')} | {_fmt(r['fastnorm_alloc_ms'], '.3f')} | "
                     f"{_fmt(r['gbs'], '.1f')} | {_fmt(100 * r['copy_fraction'], '.0f')}% | "
                     f"{_fmt(r.get('numpy_ms'), '.3f')} | {_fmt(min(torch) if torch else None, '.3f')} | "
                     f"{_fmt(r.get('vs_numpy'), '.1f')} | {_fmt(r.get('vs_torch_best'), '.2f')} |")
    return lines


def _onnx_table(rows: list) -> List[Any]:
    lines = []
    for t in sorted({r["threads"] for r in rows}):
        vs = sorted((r["vs_onnx"], r["case"]) for r in rows if r["threads"] == t and r.get("vs_onnx"))
        lines.append(f"- {t} thread{'s' if t > 1 else ''}: {len(vs)} ops, median "
                     f"{statistics.median(v for v, _ in vs):.2f}x ONNX Runtime, slowest {vs[0][0]:.2f}x ({vs[0][1]})")
    lines += ["", "| case | threads | fastnorm ms (out=) | ONNX Runtime ms | x ONNX Runtime | fastnorm error | "
             "ONNX Runtime error |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['threads']} | {_fmt(r['fastnorm_out_ms'], '.3f')} | "
                     f"{_fmt(r['onnx_ms'], '.3f')} | {_fmt(r.get('vs_onnx'), '.2f')} | "
                     f"{_fmt(r.get('fastnorm_error'), '.2g')} | {_fmt(r.get('onnx_error'), '.2g')} |")
    return lines


def _summary(rows: list, threads: list) -> List[Any]:
    lines = ["| threads | ops vs PyTorch | slowest vs PyTorch | median vs PyTorch | ops below 1.2x PyTorch | "
             "median vs NumPy |", "|---:|---:|---:|---:|---|---:|"]
    for t in threads:
        mine = [r for r in rows if r["threads"] == t]
        vt = sorted((r["vs_torch_best"], r["case"]) for r in mine if r.get("vs_torch_best"))
        vn = [r["vs_numpy"] for r in mine if r.get("vs_numpy")]
        numpy_median = f"{statistics.median(vn):.1f}x" if vn else "-"
        if not vt:
            lines.append(f"| {t} | 0 | - | - | - | {numpy_median} |")
            continue
        slow = ", ".join(f"{c} ({v:.2f}x)" for v, c in vt if v < 1.2) or "none"
        lines.append(f"| {t} | {len(vt)} | {vt[0][0]:.2f}x ({vt[0][1]}) | "
                     f"{statistics.median(v for v, _ in vt):.2f}x | {slow} | {numpy_median} |")
    return lines


def _scaling(rows: list, threads: list) -> List[Any]:
    head = "| case | " + " | ".join(f"{t} thr ms" for t in threads) + " | " + \
           " | ".join(f"speed-up at {t}" for t in threads[1:]) + " |"
    lines = [head, "|---|" + "---:|" * (2 * len(threads) - 1)]
    by_case: dict = {}
    for r in rows:
        best = min(v for v in (r["fastnorm_out_ms"], r["fastnorm_alloc_ms"]) if v is not None)
        by_case.setdefault(r["case"], {})[r["threads"]] = best
    for case, times in by_case.items():
        base = times.get(threads[0])
        cells = [_fmt(times.get(t), ".3f") for t in threads]
        ups = [_fmt(base / times[t] if base and times.get(t) else None, ".2f") for t in threads[1:]]
        lines.append(f"| {case} | " + " | ".join(cells + ups) + " |")
    return lines


def _plots(directory: str, rows: list, threads: list) -> List[Any]:
    try:
        import matplotlib
        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    import numpy as np
    cases = list(dict.fromkeys(r["case"] for r in rows))
    get = {(r["case"], r["threads"]): r for r in rows}
    written = []
    width = 0.8 / len(threads)
    for name, key, label, ref in (("speedup.png", "vs_torch_best", "x PyTorch (its best call)", 1.2),
                                  ("bandwidth.png", "copy_fraction", "fraction of the copy bandwidth", 0.8)):
        fig, ax = plt.subplots(figsize=(max(6, 0.32 * len(cases)), 4))
        for i, t in enumerate(threads):
            vals = [(get.get((c, t)) or {}).get(key) or 0 for c in cases]
            ax.bar(np.arange(len(cases)) + i * width, vals, width, label=f"{t} thread{'s' if t > 1 else ''}")
        ax.axhline(ref, color="k", lw=0.8, ls="--")
        ax.set_xticks(np.arange(len(cases)) + width * (len(threads) - 1) / 2)
        ax.set_xticklabels(cases, rotation=90, fontsize=6)
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(directory, name), dpi=90)
        plt.close(fig)
        written.append(name)
    if len(threads) > 1:
        fig, ax = plt.subplots(figsize=(6, 4))
        for c in cases:
            times = [get[(c, t)] for t in threads if (c, t) in get]
            best = [min(v for v in (r["fastnorm_out_ms"], r["fastnorm_alloc_ms"]) if v is not None) for r in times]
            ax.plot([r["threads"] for r in times], [best[0] / b for b in best], marker="o", lw=0.8)
        ax.plot(threads, [t / threads[0] for t in threads], "k--", lw=0.8, label="linear")
        ax.set_xlabel("threads")
        ax.set_ylabel(f"speed-up over {threads[0]} thread{'s' if threads[0] > 1 else ''}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(directory, "scaling.png"), dpi=90)
        plt.close(fig)
        written.append("scaling.png")
    return written


def write_report(directory: str, *, rows: List[Dict[str, Any]], copy: Dict[int, float], info: Dict[str, Any],
                 n: int, repeats: int, torch_version: Optional[str], small_call: Dict[str, float], command: str,
                 onnx_version: Optional[str] = None) -> str:
    """Writes the report into ``directory`` (created if needed); returns the path of its README.md."""
    os.makedirs(directory, exist_ok=True)
    threads = sorted({r["threads"] for r in rows})
    m = machine()
    with open(os.path.join(directory, "results.json"), "w") as f:
        json.dump({"machine": m, "info": info, "n": n, "repeats": repeats, "copy_gbs": copy, "rows": rows,
                   "small_call": small_call, "torch": torch_version, "onnxruntime": onnx_version,
                   "command": command}, f, indent=1)
    plots = _plots(directory, rows, threads)
    lines = [f"# fastnorm benchmark report: {m['cpu']}", "",
             f"Made on {datetime.date.today().isoformat()} with `{command}`.", "",
             f"- Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, {m['os']}",
             f"- fastnorm {info.get('version')} at ISA {info.get('isa')} (compiler {info.get('compiler')}), "
             f"NumPy {info.get('numpy')}, PyTorch {torch_version or 'not installed'}, ONNX Runtime "
             f"{onnx_version or 'not installed'}, Python {m['python']}",
             f"- float32 unless a case says otherwise; elementwise cases on {n} elements ({4 * n / 2**20:.0f} MiB "
             f"per array), the others at their shapes; median of {repeats} calls; thread counts "
             f"{', '.join(map(str, threads))}",
             "- Copy bandwidth (read + write, same bytes, same run): " +
             ", ".join(f"{t} thread{'s' if t > 1 else ''} {g:.1f} GB/s" for t, g in copy.items()),
             "- A call on 1,000 float32 elements: " + ", ".join(f"{k} {v:.2f} us" for k, v in small_call.items()),
             "",
             "x PyTorch: PyTorch's fastest call (allocating or `out=`) over fastnorm's fastest; x NumPy: the "
             "plainest NumPy formula's allocating time over fastnorm's allocating time; GB/s and % of copy: "
             "fastnorm's fastest time, compulsory bytes over the copy bandwidth of the same run. Shared machines are "
             "noisy: compare ratios within a run.", "", "## Summary", ""]
    lines += _summary(rows, threads)
    for p in plots:
        lines += ["", f"![{p}]({p})"]
    for t in threads:
        lines += ["", f"## {t} thread{'s' if t > 1 else ''}", ""]
        lines += _table([r for r in rows if r["threads"] == t])
    if any(r.get("onnx_ms") for r in rows):
        lines += ["", "## ONNX Runtime (MLAS)", "",
                  "The ops ONNX Runtime has, as one-node models with their inputs and output bound to NumPy arrays "
                  "(`io_binding`), against fastnorm with `out=`: x ONNX Runtime is its time over fastnorm's. Errors "
                  "against the same op evaluated in float64: float32 ulps for activations, absolute for the norms and "
                  "softmaxes.", ""]
        lines += _onnx_table([r for r in rows if r.get("onnx_ms")])
    if len(threads) > 1:
        lines += ["", "## Thread scaling (fastnorm's fastest call)", ""]
        lines += _scaling(rows, threads)
    path = os.path.join(directory, "README.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path
