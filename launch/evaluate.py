r"""Evaluates the latest checkpoint of a run (or a converted checkpoint) and writes its tables.

  python -m launch.evaluate --config=configs/quickstart.py --workdir=runs/quickstart
  python -m launch.evaluate --config=configs/d3dp_h36m.py --workdir=/runs/d3dp \
      --config.eval.num_hypotheses=20 --config.eval.num_iterations=10
  python -m launch.evaluate --converted=/models/d3dp_h36m        # a launch.convert output
  python -m launch.evaluate --converted=/models/gcndiff --lifter=/models/gcn_xyz \
      --config=configs/diffpose_frame_h36m.py --config.data.data_dir=/data/tfds

With ``--converted`` the config is optional (default: the model family's experiment
file) and is adapted to the checkpoint's model and sizes; tables go to
``--workdir/eval`` if given, else ``DIR/eval``.

Writes results.json (``mpjpe_mm``/``p_mpjpe_mm`` for j_best, p_best, p_agg, j_agg at
the last iteration, every k under ``per_iteration``), results.csv, results.md and PNG plots.
"""

from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from launch import cli, host_memory

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory holding checkpoints/.")
_CONVERTED = flags.DEFINE_string(
    "converted", None, "A launch.convert output to evaluate instead of a run's checkpoint."
)
_LIFTER = flags.DEFINE_string(
    "lifter", None, "--converted DiffPose-family denoisers: the lifter (converted dir or run)."
)
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

    if _CONVERTED.value:
        cli.run_main(
            "launch.evaluate",
            lambda: experiment.evaluate_converted(
                _CONVERTED.value, _CONFIG.value, lifter=_LIFTER.value, workdir=_WORKDIR.value
            ),
        )
        return
    if _CONFIG.value is None or _WORKDIR.value is None:
        raise app.UsageError("pass --config and --workdir (or --converted=DIR).")
    cli.run_main("launch.evaluate", lambda: experiment.evaluate(_CONFIG.value, _WORKDIR.value))


if __name__ == "__main__":
    host_memory.ensure_hugepage_malloc("launch.evaluate")
    app.run(main, flags_parser=cli.parse_flags)
