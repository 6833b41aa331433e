"""Benchmarks of imgfeat against what a user would otherwise run, printed side by side.

``make bench`` runs ``python -m bench``: a throwaway PostgreSQL cluster (or ``--dsn``), the
312 full-resolution left/right CMU faces as bytea, synthetic resnet18/resnet50, and the
targets P1..P6 of issue 7 (see :mod:`bench.targets`). Every comparison runs its two sides
alternately in the same process, several rounds, and keeps each side's best round: on a
shared machine absolute times drift, ratios hold. Each round waits (bounded) until the
machine is idle, since a round measured while another job runs compares nothing.

The other scripts in this directory (``load_bench.py``, ``spark_bench.py``) are
stand-alone benchmarks of the loader and the Spark path.
"""
