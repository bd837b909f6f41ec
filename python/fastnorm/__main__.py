"""Command line: ``python -m fastnorm info | bench | demo``."""
import argparse
import sys


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m fastnorm", description="fastnorm's command line")
    p.add_argument("command", choices=["info", "bench", "demo"],
                   help="info: this build and machine; bench: benchmarks; demo: the lecture's activation statistics")
    args, rest = p.parse_known_args(argv)
    if args.command == "info":
        if rest:
            p.error(f"info takes no arguments, got {rest}")
        from fastnorm.info import format_info, info
        print(format_info(info()))
        return 0
    if args.command == "demo":
        from fastnorm.demo import main as demo_main
        return demo_main(rest)
    from fastnorm.bench import main as bench_main
    return bench_main(rest)


if __name__ == "__main__":
    sys.exit(main())
