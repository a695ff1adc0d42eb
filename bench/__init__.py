"""Benchmarks, run by `python run.py bench`; nothing in the product imports them."""
