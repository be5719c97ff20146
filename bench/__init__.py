"""Benchmarks: each script prints a table and writes its raw results under bench/results/."""
