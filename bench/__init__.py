"""hourglass's benchmark suite (not part of the test run): `python -m bench`.

See docs/benchmarks.md for what it measures, how to read its table, and the last results.
"""
