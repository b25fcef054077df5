"""Converter tests (a package: module basenames repeat in tests/models, tests/systems)."""
