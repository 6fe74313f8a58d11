"""Helpers of bench/bench_peers.py: the datasets, the tarn project built on each, the peer
models and the result table. A package (not bench/*.py modules) so that `make bench`, which
runs every bench/*.py, does not run them as benchmarks of their own."""
