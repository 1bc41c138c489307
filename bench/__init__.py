"""Benchmarks, run by hand (``python -m bench.NAME``); see bench/README.md."""
