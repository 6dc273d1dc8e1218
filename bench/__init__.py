"""Benchmark harness of tornado_gw against its peers (issue 5); see bench/README.md."""
