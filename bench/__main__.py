"""`python -m bench <name> [options]`: run one benchmark (or `all`), print its figures, write bench/results/."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = ("pipeline", "jobs", "intake", "ceiling")


def main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in (*BENCHMARKS, "all"):
        print(__doc__)
        print("benchmarks:", ", ".join(BENCHMARKS), "(each takes --help)")
        sys.exit(0 if argv and argv[0] in ("-h", "--help") else 2)
    names = BENCHMARKS if argv[0] == "all" else (argv[0],)
    for name in names:
        print(f"=== {name}")
        importlib.import_module(f"bench.{name}").main(argv[1:] if len(names) == 1 else [])


if __name__ == "__main__":
    main(sys.argv[1:])
