"""The benchmarks behind ``python -m launch.benchmark``, importable without its flags.

* :mod:`launch.benchmarks.common`: the benchmarked systems (config, published table
  layout and numbers), the grid parser, sampler settings, rows and the report's
  environment (no absl flags, jax imported lazily; the reference-speed script uses it).
* :mod:`launch.benchmarks.sampling`: ``--mode=sample`` (the compiled samplers).
* :mod:`launch.benchmarks.training`: ``--mode=train`` (one jitted training step).
"""
