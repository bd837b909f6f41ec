"""Command line: ``python -m fastnorm info | bench | demo``, each with its own ``--help``."""
import argparse
from typing import Any
import sys


def build_parser() -> argparse.ArgumentParser:
    from fastnorm import bench, demo

    p = argparse.ArgumentParser(prog="python -m fastnorm", description="fastnorm's command line")
    sub = p.add_subparsers(dest="command", required=True, metavar="{info,bench,demo}")
    sub.add_parser("info", help="this build and machine: version, ISA levels, OpenMP, threads, compiler flags",
                   description="This build and machine: version, ISA levels, OpenMP, threads, compiler flags.")
    b = sub.add_parser("bench", help="benchmarks against NumPy and PyTorch (the headline cases; --full: all)",
                       description=bench.__doc__.split("\n\n")[0])
    bench.add_arguments(b)
    d = sub.add_parser("demo", help="the lecture's activation-statistics experiment",
                       description=demo.__doc__.split("\n\n")[0])
    demo.add_arguments(d)
    return p


def main(argv: Any = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = build_parser()
    args = p.parse_args(argv)
    if args.command == "info":
        from fastnorm.info import format_info, info
        print(format_info(info()))
        return 0
    if args.command == "demo":
        from fastnorm import demo
        return demo.run(p, args)
    from fastnorm import bench
    return bench.run(p, args, argv[1:])


if __name__ == "__main__":
    sys.exit(main())
