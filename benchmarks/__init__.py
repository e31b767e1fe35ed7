"""Benchmarks: scripts that print their figures (see the README's Benchmark section)."""
