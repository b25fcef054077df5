"""Lift your own 2D keypoints to 3D.

* :func:`read_keypoints`: MMPose, AlphaPose, OpenPose, VideoPose3D and plain-array
  files -> one person's Human3.6M-17 :class:`Keypoints` (gaps interpolated, reported).
* :class:`Lifter`: a trained system's sampler over any sequence length ->
  :class:`LiftResult` (hypotheses, aggregate, spread, in metres).
* Build a Lifter from a training run or a converted reference checkpoint with
  ``launch.lift_api.Lifter.from_run(WORKDIR)`` / ``.from_converted(DIR)`` (they read
  the configs, which ``pose_jax`` does not import).
"""

from pose_jax.lift.errors import (
    ImageSizeError,
    KeypointFileError,
    KeypointLayoutError,
    LiftModelError,
    MissingKeypointsError,
    RenderError,
)
from pose_jax.lift.formats import read_keypoints, read_tracks, select_tracks
from pose_jax.lift.keypoints import DEFAULT_THRESHOLD, Keypoints, Track, from_array, prepare
from pose_jax.lift.layouts import LAYOUTS, Layout, get_layout, to_h36m
from pose_jax.lift.lifter import Lifter, fit_trajectory, normalized_intrinsics
from pose_jax.lift.result import LiftResult

__all__ = [
    "DEFAULT_THRESHOLD",
    "LAYOUTS",
    "ImageSizeError",
    "KeypointFileError",
    "KeypointLayoutError",
    "Keypoints",
    "Layout",
    "LiftModelError",
    "LiftResult",
    "Lifter",
    "MissingKeypointsError",
    "RenderError",
    "Track",
    "fit_trajectory",
    "from_array",
    "get_layout",
    "normalized_intrinsics",
    "prepare",
    "read_keypoints",
    "read_tracks",
    "select_tracks",
    "to_h36m",
]
