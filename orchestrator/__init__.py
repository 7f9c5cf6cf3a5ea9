"""Durable, resumable YAML pipelines for fine-tuning models through an API."""
