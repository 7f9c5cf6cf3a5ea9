"""`python -m bench` runs every benchmark (filled in as benchmarks land)."""
