"""2D keypoint layouts of common detectors and their conversion to a model's input layout.

Models take 2D keypoints in one of two layouts (a system's ``keypoints``): Human3.6M-17
in VideoPose3D's order (0 hip, 1-3 right hip/knee/foot, 4-6 left hip/knee/foot, 7 spine,
8 thorax, 9 neck/nose, 10 head, 11-13 left shoulder/elbow/wrist, 14-16 right
shoulder/elbow/wrist), or COCO-17 (D3DP's in-the-wild model: COCO 2D in, Human3.6M 3D
out), so detector output is converted first. Each target joint is the mean of one or
more source joints (one matrix per layout and target, :meth:`Layout.matrix`); a joint
made from several sources is missing when any of them is, and its confidence is their
minimum. To COCO-17: Halpe-26's first 17 joints are COCO's; BODY_25 maps joint for joint
by part name; Human3.6M-17 cannot be converted (it has no eyes or ears).

Sources of the correspondences:

* ``coco`` (COCO-17: 0 nose, 1/2 left/right eye, 3/4 ears, 5/6 shoulders, 7/8 elbows,
  9/10 wrists, 11/12 hips, 13/14 knees, 15/16 ankles): MMPose
  ``mmpose/apis/inference_3d.py`` ``convert_keypoint_definition`` (COCO -> H36M) and
  MotionBERT ``lib/data/dataset_action.py`` ``coco2h36m``, which agree: hip = mean of
  the hips, thorax = mean of the shoulders, spine = mean(hip, thorax), neck/nose =
  nose, head = mean of the eyes.
* ``halpe`` (AlphaPose Halpe-26: COCO 0-16, then 17 head, 18 neck, 19 mid-hip, 20-25
  toes and heels): MotionBERT ``lib/data/dataset_wild.py`` ``halpe2h36m`` (the native
  hip, neck and head; spine = mean(neck, hip)).
* ``openpose`` (BODY_25, OpenPose ``doc/02_output.md``: 0 nose, 1 neck, 2-4 right arm,
  5-7 left arm, 8 mid-hip, 9-11 right leg, 12-14 left leg, 15/16 right/left eye,
  17/18 ears, 19-24 feet): no published converter exists; this one is *derived* from
  the part names the way MotionBERT treats Halpe (native neck and mid-hip), with the
  head as the mean of the eyes as the COCO rule has it.
* ``h36m``: already Human3.6M-17 (identity).

Flipping: the lifter converts to the model's input layout before the model sees
anything; flip test-time augmentation mirrors the 2D with that layout's left/right
lists and the 3D with Human3.6M's (the same lists for a Human3.6M-input model).
:attr:`Layout.flip_permutation` is the permutation in the *source* order (left/right
lists: VideoPose3D ``data/data_utils.py`` for COCO, MMPose
``configs/_base_/datasets/halpe26.py`` for Halpe, the part names for BODY_25); it is
what mirrors raw detector output, and converting commutes with mirroring:
``to_h36m(mirror(x, layout.flip_permutation)) == mirror(to_h36m(x), H36M permutation)``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pose_jax import skeleton as skeleton_lib
from pose_jax.lift.errors import KeypointLayoutError

NUM_H36M = 17


@dataclasses.dataclass(frozen=True)
class Layout:
    """A source keypoint layout.

    Attributes:
      name: ``'coco'``, ``'halpe'``, ``'openpose'`` or ``'h36m'``.
      joint_names: one name per source joint.
      sources: per Human3.6M joint, the source joints averaged into it.
      joints_left, joints_right: paired left/right source joints (for mirroring).
      coco_sources: per COCO-17 joint, its source joint; None when the layout cannot
        give COCO-17.
    """

    name: str
    joint_names: tuple[str, ...]
    sources: tuple[tuple[int, ...], ...]
    joints_left: tuple[int, ...]
    joints_right: tuple[int, ...]
    coco_sources: tuple[tuple[int, ...], ...] | None = None

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def to_h36m(self) -> np.ndarray:
        """``[17, J]`` averaging matrix: ``h36m = to_h36m @ source``."""
        return skeleton_lib.averaging_matrix(self.sources, self.num_joints)

    def target_sources(self, target: str) -> tuple[tuple[int, ...], ...]:
        """Per joint of ``target`` (``'h36m'`` or ``'coco'``), the source joints averaged."""
        if target not in TARGETS:
            raise KeypointLayoutError(
                f"unknown model input layout {target!r}; expected one of {TARGETS}."
            )
        sources = self.sources if target == "h36m" else self.coco_sources
        if sources is None:
            raise KeypointLayoutError(
                f"{self.name!r} keypoints cannot be converted to {target!r}: the model takes "
                f"{target} 2D input, which needs joints {self.name} lacks; give "
                f"{', '.join(n for n in sorted(LAYOUTS) if LAYOUTS[n].coco_sources)} keypoints."
            )
        return sources

    def matrix(self, target: str) -> np.ndarray:
        """``[17, J]`` averaging matrix to ``target``: ``out = matrix(target) @ source``."""
        return skeleton_lib.averaging_matrix(self.target_sources(target), self.num_joints)

    @property
    def flip_permutation(self) -> np.ndarray:
        """``perm`` with ``x[..., perm, :]`` swapping left and right joints (source order)."""
        return skeleton_lib.swap_permutation(self.num_joints, self.joints_left, self.joints_right)


# fmt: off
_COCO_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)
_COCO_SOURCES = skeleton_lib.COCO_TO_H36M
_HALPE_EXTRA = (
    "head", "neck", "hip", "left_big_toe", "right_big_toe", "left_small_toe",
    "right_small_toe", "left_heel", "right_heel",
)
_HALPE_SOURCES = (
    (19,), (12,), (14,), (16,), (11,), (13,), (15,), (18, 19), (18,), (0,), (17,),
    (5,), (7,), (9,), (6,), (8,), (10,),
)
_BODY25_NAMES = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder",
    "left_elbow", "left_wrist", "mid_hip", "right_hip", "right_knee", "right_ankle",
    "left_hip", "left_knee", "left_ankle", "right_eye", "left_eye", "right_ear",
    "left_ear", "left_big_toe", "left_small_toe", "left_heel", "right_big_toe",
    "right_small_toe", "right_heel",
)
_BODY25_SOURCES = (
    (8,), (9,), (10,), (11,), (12,), (13,), (14,), (1, 8), (1,), (0,), (15, 16),
    (5,), (6,), (7,), (2,), (3,), (4,),
)
_COCO_LEFT, _COCO_RIGHT = skeleton_lib.COCO.joints_left, skeleton_lib.COCO.joints_right
# COCO-17 from BODY_25 by part name: nose, eyes, ears, shoulders, elbows, wrists, hips,
# knees, ankles (OpenPose doc/02_output.md names both orders).
_BODY25_TO_COCO = (0, 16, 15, 18, 17, 5, 2, 6, 3, 7, 4, 12, 9, 13, 10, 14, 11)
# fmt: on
_COCO_IDENTITY = tuple((k,) for k in range(17))

TARGETS = ("h36m", "coco")

COCO = Layout(
    "coco", _COCO_NAMES, _COCO_SOURCES, _COCO_LEFT, _COCO_RIGHT, coco_sources=_COCO_IDENTITY
)
HALPE = Layout(
    "halpe",
    (*_COCO_NAMES, *_HALPE_EXTRA),
    _HALPE_SOURCES,
    (*_COCO_LEFT, 20, 22, 24),
    (*_COCO_RIGHT, 21, 23, 25),
    coco_sources=_COCO_IDENTITY,
)
OPENPOSE = Layout(
    "openpose",
    _BODY25_NAMES,
    _BODY25_SOURCES,
    (5, 6, 7, 12, 13, 14, 16, 18, 19, 20, 21),
    (2, 3, 4, 9, 10, 11, 15, 17, 22, 23, 24),
    coco_sources=tuple((k,) for k in _BODY25_TO_COCO),
)

_H36M = skeleton_lib.get_skeleton("h36m")
H36M = Layout(
    name="h36m",
    joint_names=_H36M.joint_names,
    sources=tuple((k,) for k in range(NUM_H36M)),
    joints_left=_H36M.joints_left,
    joints_right=_H36M.joints_right,
)

LAYOUTS: dict[str, Layout] = {x.name: x for x in (COCO, HALPE, OPENPOSE, H36M)}
# Names users reach for; each maps to one layout.
_ALIASES = {
    "coco17": "coco",
    "halpe26": "halpe",
    "alphapose": "halpe",
    "body25": "openpose",
    "body_25": "openpose",
    "human36m": "h36m",
    "h36m17": "h36m",
}


def get_layout(name: str, *, where: str = "") -> Layout:
    """The layout called ``name`` (or an alias: ``coco17``, ``halpe26``, ``body_25``...)."""
    key = _ALIASES.get(str(name).lower(), str(name).lower())
    if key not in LAYOUTS:
        prefix = f"{where}: " if where else ""
        raise KeypointLayoutError(
            f"{prefix}unknown keypoint layout {name!r}; expected one of {sorted(LAYOUTS)} "
            "(COCO-17, AlphaPose Halpe-26, OpenPose BODY_25, Human3.6M-17)."
        )
    return LAYOUTS[key]


def layouts_with(num_joints: int) -> list[str]:
    """The layouts that have ``num_joints`` joints (17: ``coco`` and ``h36m``)."""
    return sorted(n for n, x in LAYOUTS.items() if x.num_joints == num_joints)


def to_h36m(
    layout: Layout, xy: np.ndarray, valid: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Converts ``[..., J, 2]`` source keypoints to Human3.6M-17 (:func:`convert`)."""
    return convert(layout, "h36m", xy, valid, scores)


def convert(
    layout: Layout, target: str, xy: np.ndarray, valid: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Converts ``[..., J, 2]`` source keypoints to ``target`` (``'h36m'`` or ``'coco'``).

    Args:
      layout: the source layout (``J = layout.num_joints``).
      target: the model's input layout.
      xy: ``[..., J, 2]`` pixels (any value where ``valid`` is False).
      valid: ``[..., J]`` whether each source joint was detected.
      scores: ``[..., J]`` confidences.

    Returns:
      ``(xy [..., 17, 2], valid [..., 17], scores [..., 17])``: a joint averaged from
      several sources is valid when all of them are, with their minimum confidence.
    """
    m = layout.matrix(target)
    used = m > 0
    clean = np.where(valid[..., None], xy, 0.0)
    out_xy = np.einsum("kj,...jc->...kc", m, clean)
    out_valid = ~np.any(used & ~valid[..., None, :], axis=-1)
    masked = np.where(used, scores[..., None, :], np.inf)
    out_scores = np.min(masked, axis=-1)
    return out_xy.astype(np.float32), out_valid, out_scores.astype(np.float32)
