"""Slow benchmarks (``make bench``); results go to ``eval/results/``. Never part of the default tests."""
