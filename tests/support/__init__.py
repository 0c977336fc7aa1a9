"""Helpers shared by the test modules; conftest.py keeps only the fixtures built on them."""
