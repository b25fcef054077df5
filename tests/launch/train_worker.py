"""Trains the tiny test config in a process: ``python -m train_worker DATA_DIR WORKDIR STEPS``."""

import sys


def main(data_dir: str, workdir: str, steps: int) -> None:
    from conftest import tiny_config

    from launch import experiment

    config = tiny_config(data_dir, **{"train.num_steps": steps, "train.log_every_steps": 1})
    experiment.train_and_evaluate(config, workdir, evaluate_after=False)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
