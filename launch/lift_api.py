"""Python API of the lifter: :class:`Lifter` built from a training run or a converted checkpoint.

  from launch.lift_api import Lifter
  from pose_jax.lift import read_keypoints

  lifter = Lifter.from_run("runs/quickstart")           # or Lifter.from_converted(DIR)
  kp = read_keypoints("video.json", layout="coco")[0]    # MMPose, AlphaPose, OpenPose, ...
  result = lifter.lift(kp, image_size=(1920, 1080), num_hypotheses=5, num_iterations=5)
  result.poses_3d        # [T, 17, 3] metres, camera frame, root-relative (P-Agg)
  result.save("out.npz")

This module lives in ``launch`` because it reads the experiment configs
(``pose_jax`` never imports ``configs``); it parses no flags.
"""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections

from launch import converted as converted_lib
from launch import experiment
from pose_jax import lift
from pose_jax.training import workdir as workdir_lib


def run_config(workdir: str | os.PathLike) -> ml_collections.ConfigDict:
    """The config ``launch.train`` wrote into ``WORKDIR/config.json``."""
    root = workdir_lib.resolve(os.fspath(workdir))
    path = root / "config.json"
    if not path.exists():
        raise experiment.WorkdirNotFoundError(
            f"lift: {root} holds no config.json; expected the --workdir of a launch.train run."
        )
    return ml_collections.ConfigDict(json.loads(path.read_text()))


class Lifter(lift.Lifter):
    """:class:`pose_jax.lift.Lifter` with constructors from runs and converted checkpoints."""

    @classmethod
    def from_run(cls, workdir: str | os.PathLike, *, config: Any = None) -> Lifter:
        """The newest restorable checkpoint of a ``launch.train`` run (as launch.evaluate reads it).

        ``config``: the run's config to use instead of ``WORKDIR/config.json``.
        """
        root = workdir_lib.resolve(os.fspath(workdir))
        config = run_config(root) if config is None else config
        system = experiment.make_system(config)
        params, step = experiment.restore_params(config, root, system, who="lift")
        description = {"run": os.fspath(root), "system": config.system, "step": int(step)}
        return cls._build(system, params, config, description)

    @classmethod
    def from_converted(
        cls, path: str | os.PathLike, *, lifter: str | None = None, config: Any = None
    ) -> Lifter:
        """A ``launch.convert`` output (``lifter=DIR``: the DiffPose lifter a denoiser needs).

        ``config``: an experiment config to adapt (it must build the converted model);
        default: the model family's own experiment file.
        """
        config = converted_lib.converted_config(path, config, lifter=lifter)
        system = experiment.make_system(config)
        params = converted_lib.load_converted_params(path, system, config)
        root, cfg = converted_lib.read_converted(path)
        description = {"converted": os.fspath(root), "system": config.system, "model": cfg["model"]}
        if lifter:
            description["lifter"] = os.fspath(workdir_lib.resolve(os.fspath(lifter)))
        return cls._build(system, params, config, description)

    @classmethod
    def _build(cls, system, params, config, description) -> Lifter:
        return cls(
            system,
            params,
            num_frames=config.data.num_frames,
            eval_config=config.eval,
            description={**description, "model_name": config.model.name},
        )
