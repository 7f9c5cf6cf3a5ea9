"""Judging a model's answers: scorers (pure functions of an answer and its reference), the
examples of an evaluation file, and quality gates (`require:`). No provider, no store: the
step `together/evaluate` asks the questions and keeps the answers."""
