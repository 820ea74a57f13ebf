"""Benchmarks, run by hand: `python -m bench pipeline|jobs|intake|ceiling|all` (see bench/README.md)."""
