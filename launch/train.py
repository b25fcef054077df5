r"""Trains (and by default evaluates) a pose_jax experiment.

  python -m launch.train --config=configs/quickstart.py --workdir=runs/quickstart
  python -m launch.train --config=configs/d3dp_h36m.py:keypoints=gt \
      --config.data.data_dir=/data/tfds --workdir=/runs/d3dp_gt

Any field can be overridden with ``--config.<block>.<field>=value``. A run
restarted with the same workdir resumes from its last checkpoint.
"""

from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from launch import cli, host_memory

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, logs, eval).")
_EVALUATE = flags.DEFINE_bool("evaluate", True, "Evaluate the final parameters after training.")
_ALLOW_CHANGE = flags.DEFINE_list(
    "allow_config_change",
    [],
    "Config keys (e.g. optim.lr,train.seed) allowed to differ from the checkpoint's when "
    "resuming a workdir; other differences in model, data, optimiser or seed are refused.",
)
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed",
    False,
    "Initialise jax.distributed first (multi-process runs): POSE_JAX_* variables if set, "
    "else jax's cluster auto-detection (SLURM, Open MPI, TPU VMs); see launch/distributed.py.",
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # orbax and tfds are chatty at INFO
    if _DISTRIBUTED.value:
        from launch import distributed

        distributed.initialize_from_environment()
    from launch import experiment

    try:
        cli.run_main(
            "launch.train",
            lambda: experiment.train_and_evaluate(
                _CONFIG.value,
                _WORKDIR.value,
                evaluate_after=_EVALUATE.value,
                allow_config_change=_ALLOW_CHANGE.value,
            ),
        )
    except Exception:
        if not _DISTRIBUTED.value:
            raise
        # A failed process would otherwise hang at exit in jax.distributed's shutdown
        # barrier, waiting for peers that are themselves blocked in a collective, and
        # the launcher (srun, the local recipe) would never see the failure.
        import os
        import sys
        import traceback

        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)


if __name__ == "__main__":
    host_memory.ensure_hugepage_malloc("launch.train")
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main, flags_parser=cli.parse_flags)
