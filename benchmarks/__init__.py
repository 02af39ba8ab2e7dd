"""Benchmarks of vsrtel against the CPython floor and its peers: ``python -m benchmarks``."""
