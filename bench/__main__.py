"""Run the benchmarks: ``python -m bench [--quick] [--only NAME ...]``."""

from __future__ import annotations

import argparse
import importlib

SUITES = ("jobs", "scan", "api", "hops", "library", "events", "thumbnails")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--only", nargs="+", choices=SUITES, default=list(SUITES))
    args = parser.parse_args()
    for name in args.only:
        module = importlib.import_module(f"bench.bench_{name}")
        module.main(quick=args.quick)


if __name__ == "__main__":
    main()
