"""Benchmarks are run by hand (``python -m tests.bench.run``), never collected as tests."""

collect_ignore_glob = ["*.py"]
