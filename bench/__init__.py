"""Benchmarks: each script prints a table, then one JSON line per figure (bench/report.py)."""
