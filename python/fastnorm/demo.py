"""``python -m fastnorm demo``: the lecture's activation-statistics experiment, configuration by configuration.

tanh with weights of std 0.01 (activations collapse to zero) and 0.05 (they saturate), Xavier (just right); ReLU
with Xavier (collapse again) and He (just right); each without and with batch norm (well scaled whatever the
init).  Prints a per-layer table for each and, with matplotlib installed (``pip install 'fastnorm[plot]'``),
writes a figure per configuration: a row of per-layer histograms.
"""
from __future__ import annotations

from typing import Any, Dict, List

import argparse
import os
import sys
import tempfile
import time

# name: (activation, init, std)
CONFIGS = {
    "tanh-std0.01": ("tanh", "small", 0.01),
    "tanh-std0.05": ("tanh", "small", 0.05),
    "tanh-xavier": ("tanh", "xavier_normal", None),
    "relu-xavier": ("relu", "xavier_normal", None),
    "relu-he": ("relu", "kaiming_normal", None),
}


def all_configs() -> List[Any]:
    """Every configuration name: each of CONFIGS, then each with batch norm ("+bn")."""
    return list(CONFIGS) + [f"{name}+bn" for name in CONFIGS]


def config_kwargs(name: str) -> Dict[str, Any]:
    base, bn = (name[:-3], True) if name.endswith("+bn") else (name, False)
    if base not in CONFIGS:
        raise ValueError(f"config: unknown {name!r}; valid: {', '.join(all_configs())}")
    activation, init, std = CONFIGS[base]
    return {"activation": activation, "init": init, "std": std, "norm": "batch" if bn else None}


def _writable_folder(path: str) -> str:
    """Creates ``path`` if needed and checks that a file can be written there; a clear error otherwise."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".fastnorm-write-test-"):
            pass
    except OSError as e:
        raise SystemExit(f"python -m fastnorm demo: error: --out {path!r} cannot be written ({e.strerror or e})")
    return path


def _have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
        return True
    except ImportError:
        return False


def main(argv: Any = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastnorm demo", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return run(p, p.parse_args(argv))


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The demo's options (``python -m fastnorm demo --help``)."""
    p.add_argument("--config", action="append", choices=all_configs(), metavar="NAME",
                   help=f"run only this configuration (repeatable): {', '.join(all_configs())}")
    p.add_argument("--depth", type=int, default=6, help="layers (default 6)")
    p.add_argument("--width", type=int, default=4096, help="units per layer (default 4096)")
    p.add_argument("--batch-size", type=int, default=64, help="examples (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="fastnorm-demo", help="folder for the figures and tables (default ./fastnorm-demo)")
    p.add_argument("--no-backward", action="store_true", help="forward pass only (no gradient statistics)")
    p.add_argument("--no-plot", action="store_true", help="print the tables only")


def run(p: argparse.ArgumentParser, args: Any) -> int:
    """Runs the demo the parsed ``args`` describe (``p`` reports bad arguments)."""
    from fastnorm.diagnostics import activation_stats

    for name in ("depth", "width", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')}: expected an integer >= 1, got {getattr(args, name)}")

    configs = args.config or all_configs()
    plot = not args.no_plot and _have_matplotlib()
    out = _writable_folder(args.out)  # before any work: a folder that cannot be written fails fast
    print(f"fastnorm demo: {len(configs)} configuration{'s' if len(configs) > 1 else ''}, {args.depth} layers of "
          f"{args.width}, batch {args.batch_size}, seed {args.seed}" +
          ("" if args.no_backward else ", forward and backward"), flush=True)
    tables = []
    start = time.perf_counter()
    for i, name in enumerate(configs, 1):
        t0 = time.perf_counter()

        def progress(message, i=i, name=name):
            print(f"\r[{i}/{len(configs)}] {name}: {message}   ", end="", file=sys.stderr, flush=True)

        stats = activation_stats(depth=args.depth, width=args.width, batch_size=args.batch_size, seed=args.seed,
                                 backward=not args.no_backward, progress=progress, **config_kwargs(name))
        print("\r" + " " * 60 + "\r", end="", file=sys.stderr, flush=True)
        block = f"== {name}: {stats.describe()} ({time.perf_counter() - t0:.1f} s)\n{stats.table()}\n"
        print(block, flush=True)
        tables.append(block)
        if plot:
            stats.plot(os.path.join(out, f"{name}.png"), title=f"{name}: {stats.describe()}")
    with open(os.path.join(out, "tables.txt"), "w") as f:
        f.write("\n".join(tables))
    print(f"done in {time.perf_counter() - start:.1f} s; tables in {os.path.join(out, 'tables.txt')}")
    if plot:
        print(f"figures (a row of per-layer activation histograms per configuration) in {out}/")
    elif not args.no_plot:
        print("figures: matplotlib is not installed; pip install 'fastnorm[plot]' and run again to get them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
