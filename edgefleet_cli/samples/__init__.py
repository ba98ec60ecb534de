"""Synthetic sample data and trainers used by the examples, the quickstart and the tests."""
