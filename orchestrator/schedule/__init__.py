"""Batches, schedules and workers: what decides which runs exist and who executes them."""
