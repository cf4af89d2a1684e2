"""Benchmarks: ``make bench`` (``python -m bench``) prints one JSON object per line.

Each figure is compared with a baseline measured in the same run, as a ratio.
"""
