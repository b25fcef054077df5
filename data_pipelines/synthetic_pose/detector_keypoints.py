"""Synthetic detector output: a synthetic_pose motion seen as COCO, Halpe or OpenPose keypoints.

For the lifting demo and tests: a motion from :mod:`.motion` in a Human3.6M
camera's frame, and the keypoints a detector of another layout would report for
it, placed on the Human3.6M skeleton so that each layout's conversion
(:mod:`pose_jax.lift.layouts`) gives the Human3.6M joints back: the joints both
layouts share are the same points; eyes sit 3.5 cm either side of the head joint,
so their mean is the head; ears, toes and heels are plausible points the
conversions do not use.
"""

from __future__ import annotations

import numpy as np

from data_pipelines.synthetic_pose import motion
from data_pipelines.synthetic_pose.synthetic_pose_dataset_builder import capture_centre, render_2d
from pose_jax import camera as camera_lib
from pose_jax.lift import layouts as layouts_lib

_DIRECT = {
    "hip": 0, "mid_hip": 0, "right_hip": 1, "right_knee": 2, "right_ankle": 3, "left_hip": 4,
    "left_knee": 5, "left_ankle": 6, "neck": 8, "nose": 9, "head": 10, "left_shoulder": 11,
    "left_elbow": 12, "left_wrist": 13, "right_shoulder": 14, "right_elbow": 15,
    "right_wrist": 16,
}  # fmt: skip


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def named_points(pose: np.ndarray) -> dict[str, np.ndarray]:
    """Every joint name of the layouts -> ``[T, 3]`` points on the Human3.6M pose ``[T, 17, 3]``."""
    left = _unit(pose[:, 11] - pose[:, 14])  # towards the subject's left
    up = _unit(pose[:, 10] - pose[:, 8])
    fwd = _unit(np.cross(left, up))
    pts = {name: pose[:, j] for name, j in _DIRECT.items()}
    for side, s in (("left", 1.0), ("right", -1.0)):
        head, ankle = pose[:, 10], pose[:, 6 if side == "left" else 3]
        pts[f"{side}_eye"] = head + s * 0.035 * left
        pts[f"{side}_ear"] = head + s * 0.08 * left - 0.02 * up
        pts[f"{side}_big_toe"] = ankle + 0.15 * fwd - 0.06 * up + s * 0.02 * left
        pts[f"{side}_small_toe"] = ankle + 0.13 * fwd - 0.06 * up + s * 0.06 * left
        pts[f"{side}_heel"] = ankle - 0.05 * fwd - 0.07 * up
    for j, name in enumerate(layouts_lib.H36M.joint_names):
        pts.setdefault(f"h36m:{name}", pose[:, j])
    return pts


def layout_points(pose: np.ndarray, layout: str) -> np.ndarray:
    """``[T, J, 3]`` points of ``layout`` (``coco``, ``halpe``, ``openpose``, ``h36m``)."""
    lay = layouts_lib.get_layout(layout)
    if lay.name == "h36m":
        return np.asarray(pose, np.float64)
    pts = named_points(np.asarray(pose, np.float64))
    return np.stack([pts[n] for n in lay.joint_names], axis=1)


def demo_motion(num_frames: int, *, seed: int = 0, kind: str = "walk", subject: str = "S9"):
    """``(pose_world [T, 17, 3], camera)``: a synthetic motion and the subject's first camera."""
    rng = np.random.default_rng(seed)
    bones = motion.subject_bones(rng)
    world = motion.generate(kind, num_frames, bones, rng, capture_centre(subject))
    return world, camera_lib.h36m_cameras(subject)[0]


def project_points(points_world: np.ndarray, cam: camera_lib.Camera) -> np.ndarray:
    """Pixels ``[T, J, 2]`` of world points (as the synthetic_pose 2D is made)."""
    return render_2d(np.asarray(points_world, np.float32), cam)


def detector_keypoints(pose_world: np.ndarray, cam: camera_lib.Camera, layout: str):
    """``(xy [T, J, 2] pixels, scores [T, J])`` a perfect ``layout`` detector would report."""
    xy = project_points(layout_points(pose_world, layout), cam)
    return xy, np.ones(xy.shape[:2], np.float32)
