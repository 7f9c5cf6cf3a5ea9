"""Where fine-tuning steps send their requests: Together AI, or the local compatible API."""
