"""Helpers for tests: writers of small input files in the real layouts."""
