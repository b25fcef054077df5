r"""Evaluates the latest checkpoint of a run and writes WORKDIR/eval/.

  python -m launch.evaluate --config=configs/quickstart.py --workdir=runs/quickstart
  python -m launch.evaluate --config=configs/d3dp_h36m.py --workdir=/runs/d3dp \
      --config.eval.num_hypotheses=20 --config.eval.num_iterations=10

Writes results.json (``mpjpe_mm``/``p_mpjpe_mm`` for j_best, p_best, p_agg, j_agg at
the last iteration, every k under ``per_iteration``), results.csv, results.md and PNG plots.
"""

from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from launch import cli

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory holding checkpoints/.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed",
    False,
    "Initialise jax.distributed first and evaluate on every process's devices (run the "
    "same command on every host, as for launch.train --distributed).",
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # orbax and tfds are chatty at INFO
    if _DISTRIBUTED.value:
        from launch import distributed

        distributed.initialize_from_environment()
    from launch import experiment

    cli.run_main("launch.evaluate", lambda: experiment.evaluate(_CONFIG.value, _WORKDIR.value))


if __name__ == "__main__":
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main, flags_parser=cli.parse_flags)
