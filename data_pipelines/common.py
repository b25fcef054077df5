"""Pieces shared by the pose builders: constants, features, file loading, checks.

Everything that refuses input raises :class:`DataLayoutError` (a ``ValueError``)
whose message names the file, the sequence (subject / action / camera) and what
was expected; a missing file raises ``FileNotFoundError`` naming the file and
the layout it should have.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from pose_jax import camera as camera_lib

# The 15 Human3.6M action classes, in the order every reference prints them
# (REFERENCE.md 1.1). ``ClassLabel`` indices follow this order.
H36M_ACTIONS = (
    "Directions", "Discussion", "Eating", "Greeting", "Phoning", "Photo", "Posing",
    "Purchases", "Sitting", "SittingDown", "Smoking", "Waiting", "WalkDog", "Walking",
    "WalkTogether",
)  # fmt: skip

# Original Human3.6M names that VideoPose3D canonicalised.
_ACTION_ALIASES = {"TakingPhoto": "Photo", "WalkingDog": "WalkDog"}

H36M_TRAIN_SUBJECTS = ("S1", "S5", "S6", "S7", "S8")
H36M_TEST_SUBJECTS = ("S9", "S11")
H36M_SUBJECTS = H36M_TRAIN_SUBJECTS + H36M_TEST_SUBJECTS

NUM_JOINTS = 17


class DataLayoutError(ValueError):
    """Input files whose content does not have the documented layout."""


def action_class(action: str, where: str) -> str:
    """The action class of an action name: the take suffix stripped (``'Photo 1'`` -> ``'Photo'``).

    Args:
      action: action name as stored in the npz files.
      where: description of the sequence, for the error message.

    Returns:
      One of :data:`H36M_ACTIONS`.

    Raises:
      DataLayoutError: if the stripped name is not one of the 15 classes.
    """
    base = str(action).split(" ")[0]
    base = _ACTION_ALIASES.get(base, base)
    if base not in H36M_ACTIONS:
        raise DataLayoutError(
            f"{where}: action {action!r} has class {base!r}, which is not one of the 15 "
            f"Human3.6M action classes {H36M_ACTIONS}."
        )
    return base


def load_npz_dict(path: epath.PathLike, key: str, layout: str, who: str) -> Any:
    """Loads ``np.load(path)[key]`` where the entry is a pickled 0-d object array.

    Args:
      path: the ``.npz`` file.
      key: the entry to read.
      layout: human description of the expected layout, quoted in errors.
      who: builder name, for messages.

    Returns:
      The unpickled object (usually a dict).

    Raises:
      FileNotFoundError: naming the file and the expected layout.
      DataLayoutError: if the key is missing or is not a 0-d object array.
    """
    path = epath.Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{who}: missing file {os.fspath(path)!r}. Expected {layout}. "
            "See the builder's MANUAL_DOWNLOAD_INSTRUCTIONS."
        )
    with path.open("rb") as f, np.load(f, allow_pickle=True) as npz:
        if key not in npz.files:
            raise DataLayoutError(
                f"{who}: file {os.fspath(path)!r} has keys {sorted(npz.files)}; expected key "
                f"{key!r} holding {layout}."
            )
        value = npz[key]
    if value.dtype != object or value.ndim != 0:
        raise DataLayoutError(
            f"{who}: file {os.fspath(path)!r} key {key!r} is an array of shape {value.shape} "
            f"and dtype {value.dtype}; expected a 0-d object array holding {layout}."
        )
    return value.item()


def check_mapping(value: Any, where: str, what: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise DataLayoutError(f"{where}: expected {what} (a dict); got {type(value).__name__}.")
    return value


def check_keypoints(
    x: Any, where: str, *, joints: int = NUM_JOINTS, dims: int, name: str
) -> np.ndarray:
    """Refuses keypoint arrays that are not ``(T, joints, dims)``, empty, or non-finite.

    Args:
      x: the array as read from the file.
      where: the sequence (file, subject, action, camera), for messages.
      joints: expected joint count.
      dims: expected coordinate count (2 or 3).
      name: what the array is ('3D', '2D'), for messages.

    Returns:
      The array as float32.
    """
    arr = np.asarray(x)
    if arr.ndim != 3 or arr.shape[1] != joints or arr.shape[2] != dims:
        raise DataLayoutError(
            f"{where}: {name} keypoints have shape {arr.shape}; expected (T, {joints}, {dims})."
        )
    if arr.shape[0] == 0:
        raise DataLayoutError(f"{where}: {name} keypoints hold no frames.")
    if not np.issubdtype(arr.dtype, np.number):
        raise DataLayoutError(f"{where}: {name} keypoints have dtype {arr.dtype}; expected floats.")
    bad = ~np.isfinite(arr)
    if bad.any():
        frames = np.unique(np.nonzero(bad)[0])
        raise DataLayoutError(
            f"{where}: {name} keypoints hold {int(bad.sum())} non-finite value(s) (NaN/inf) in "
            f"{len(frames)} frame(s), first at frame {int(frames[0])}; refusing the sequence "
            "rather than dropping frames silently."
        )
    return arr.astype(np.float32)


def float_tensor(*shape: int | None) -> tfds.features.Tensor:
    return tfds.features.Tensor(shape=tuple(shape), dtype=np.float32)


def h36m_like_features() -> tfds.features.FeaturesDict:
    """Features of ``h36m_pose`` and ``synthetic_pose`` (one example per subject/action/camera).

    ==================  ===============  =========================================================
    key                 shape / dtype    meaning
    ==================  ===============  =========================================================
    pose_3d             [T, 17, 3] f32   camera frame, metres, absolute (not root-relative)
    pose_2d             [T, 17, 2] f32   pixels
    num_frames          [] int32         T
    subject             text             'S1' ... 'S11'
    action              text             with take suffix, e.g. 'Directions 1'
    action_class        ClassLabel       one of the 15 classes of H36M_ACTIONS
    camera_index        [] int32         0..3, in the order of pose_jax.camera.H36M_CAMERA_IDS
    camera_id           text             '54138969', ...
    res_w, res_h        [] int32         image size in pixels
    intrinsics          [9] f32          [fx, fy, cx, cy, k1, k2, k3, p1, p2], normalised units
    intrinsics_px       [9] f32          the same in pixels
    orientation         [4] f32          camera-to-world quaternion (w, x, y, z)
    translation         [3] f32          camera centre in world coordinates, metres
    ==================  ===============  =========================================================
    """
    return tfds.features.FeaturesDict(
        {
            "pose_3d": float_tensor(None, NUM_JOINTS, 3),
            "pose_2d": float_tensor(None, NUM_JOINTS, 2),
            "num_frames": np.int32,
            "subject": tfds.features.Text(),
            "action": tfds.features.Text(),
            "action_class": tfds.features.ClassLabel(names=H36M_ACTIONS),
            "camera_index": np.int32,
            "camera_id": tfds.features.Text(),
            "res_w": np.int32,
            "res_h": np.int32,
            "intrinsics": float_tensor(9),
            "intrinsics_px": float_tensor(9),
            "orientation": float_tensor(4),
            "translation": float_tensor(3),
        }
    )


def camera_fields(cam: Any, camera_index: int) -> dict[str, Any]:
    """The camera part of an example from a :class:`pose_jax.camera.Camera`."""
    if cam.has_extrinsics:
        orientation = np.asarray(cam.orientation, np.float32)
        translation = np.asarray(cam.translation, np.float32)
    else:  # Keypoints already in the camera frame: the identity transform.
        orientation = np.array([1, 0, 0, 0], np.float32)
        translation = np.zeros(3, np.float32)
    return {
        "camera_index": np.int32(camera_index),
        "camera_id": str(cam.id),
        "res_w": np.int32(cam.res_w),
        "res_h": np.int32(cam.res_h),
        "intrinsics": cam.intrinsics(normalized=True),
        "intrinsics_px": cam.intrinsics(normalized=False),
        "orientation": orientation,
        "translation": translation,
    }


def check_validation_subjects(config_name: str, subjects: Sequence[str]) -> tuple[str, ...]:
    """Refuses validation subjects that are not Human3.6M training subjects."""
    subjects = tuple(subjects)
    for s in subjects:
        if s not in H36M_TRAIN_SUBJECTS:
            raise ValueError(
                f"config {config_name!r}: validation subject {s!r} is not a training subject; "
                f"expected a subset of {H36M_TRAIN_SUBJECTS} (the validation split must never "
                f"look at the test subjects {H36M_TEST_SUBJECTS})."
            )
    if set(subjects) == set(H36M_TRAIN_SUBJECTS):
        raise ValueError(
            f"config {config_name!r}: validation_subjects {subjects} would leave no training "
            "subject."
        )
    return subjects


def h36m_split_subjects(validation_subjects: Sequence[str] = ()) -> dict[str, tuple[str, ...]]:
    """Subjects of each non-empty split: train, test and (if any are held out) validation."""
    out = {
        "train": tuple(s for s in H36M_TRAIN_SUBJECTS if s not in validation_subjects),
        "test": H36M_TEST_SUBJECTS,
    }
    if validation_subjects:
        out["validation"] = tuple(validation_subjects)
    return out


def h36m_like_example(
    *,
    subject: str,
    action: str,
    action_class_name: str,
    camera_index: int,
    cam: Any,
    pose_world: np.ndarray,
    pose_2d: np.ndarray,
) -> dict[str, Any]:
    """One example of :func:`h36m_like_features`: world 3D moved into ``cam``'s frame.

    Args:
      subject, action, action_class_name: sequence identity.
      camera_index: 0..3.
      cam: a :class:`pose_jax.camera.Camera` with extrinsics.
      pose_world: ``[T, 17, 3]`` world coordinates, metres.
      pose_2d: ``[T, 17, 2]`` pixels.
    """
    pose_cam = camera_lib.world_to_camera(
        np.asarray(pose_world, np.float32), cam.orientation, cam.translation
    )
    example = {
        "pose_3d": np.asarray(pose_cam, np.float32),
        "pose_2d": np.asarray(pose_2d, np.float32),
        "num_frames": np.int32(pose_world.shape[0]),
        "subject": subject,
        "action": action,
        "action_class": action_class_name,
    }
    example.update(camera_fields(cam, camera_index))
    return example


@dataclasses.dataclass
class BuildReport:
    """What a build did to its input beyond copying it, logged and saved as metadata.

    Attributes:
      truncated_frames: ``'S1/Walking/cam0' -> n`` 2D frames cut to the 3D length.
      ignored: human-readable notes on input that is not part of any split
        (e.g. the unlabeled subjects S2-S4 of detector files).
      examples: split name -> number of examples written.
      frames: split name -> number of frames written.
    """

    truncated_frames: dict[str, int] = dataclasses.field(default_factory=dict)
    ignored: list[str] = dataclasses.field(default_factory=list)
    examples: dict[str, int] = dataclasses.field(default_factory=dict)
    frames: dict[str, int] = dataclasses.field(default_factory=dict)

    def add_split(self, split: str, lengths: Sequence[int]) -> None:
        self.examples[split] = len(lengths)
        self.frames[split] = int(sum(lengths))

    def as_dict(self) -> dict[str, Any]:
        return {
            "truncated_frames": dict(self.truncated_frames),
            "truncated_frames_total": int(sum(self.truncated_frames.values())),
            "ignored": list(self.ignored),
            "examples": dict(self.examples),
            "frames": dict(self.frames),
        }

    def log(self, who: str) -> None:
        d = self.as_dict()
        logging.info(
            "%s: examples per split %s, frames per split %s", who, d["examples"], d["frames"]
        )
        if self.truncated_frames:
            items = list(self.truncated_frames.items())
            shown = ", ".join(f"{k}: {v}" for k, v in items[:8]) + (
                " ..." if len(items) > 8 else ""
            )
            logging.warning(
                "%s: cut %d 2D frame(s) beyond the 3D length in %d sequence(s), as the references "
                "do (all listed in metadata.json 'build_report'): %s",
                who, d["truncated_frames_total"], len(items), shown,
            )  # fmt: skip
        for note in self.ignored:
            logging.warning("%s: %s", who, note)


class PoseBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the pose builders: array_record by default, no TensorFlow needed.

    Subclasses set ``self._report`` (a :class:`BuildReport`) in ``_split_generators``;
    it is logged and written to the dataset's ``metadata.json``
    (``builder.info.metadata['build_report']``).
    """

    # tfds (4.9.x) resolves a builder's source file through ``importlib_resources``,
    # a back-port that only Python < 3.9 installs; plain ``inspect`` gives the same
    # path for builders that live in ordinary packages, as these do.
    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path | None:
        try:
            return epath.Path(inspect.getfile(cls))
        except (TypeError, OSError):
            return None

    def __init__(self, *, file_format: Any = None, **kwargs: Any):
        # tfds defaults to tfrecord, which needs TensorFlow to read; array_record does not.
        super().__init__(file_format=file_format or "array_record", **kwargs)

    def _make_info(self, *, description: str, features, homepage: str | None, citation: str | None):
        return tfds.core.DatasetInfo(
            builder=self,
            description=description,
            features=features,
            homepage=homepage,
            citation=citation,
            metadata=tfds.core.MetadataDict(),
            supervised_keys=None,
        )

    def _finish_report(self, report: BuildReport, splits: Mapping[str, Sequence[int]]) -> None:
        for split, lengths in splits.items():
            report.add_split(split, lengths)
        report.log(self.name)
        self.info.metadata["build_report"] = report.as_dict()
