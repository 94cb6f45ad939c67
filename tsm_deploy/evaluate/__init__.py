"""Evaluating compiled models: runners, parity, benchmarks, plots (host side)."""
