"""Benchmarks of the embedded endpoint, the pipeline on it, and the LocalStack comparison (`python -m bench`)."""
