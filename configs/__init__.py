"""Experiment configs: one experiment per file, ``get_config(arg)``, ml_collections only."""
