"""Throughput and scaling measurements; JSON output, not part of the test run."""
