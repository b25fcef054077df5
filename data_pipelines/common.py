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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from pose_jax import camera as camera_lib
from pose_jax.errors import InputError

# The 15 Human3.6M action classes, in the order every reference prints them
# (VideoPose3D common/h36m_dataset.py). ``ClassLabel`` indices follow this order.
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


class DataLayoutError(InputError, ValueError):
    """Input files whose content does not have the documented layout.

    ``message`` keeps the text as raised, even where TFDS prefixes ``args`` on the way out.
    """

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def original_error(e: BaseException) -> BaseException:
    """The first :class:`DataLayoutError` or ``FileNotFoundError`` in ``e``'s cause chain, or ``e``.

    TFDS re-raises some exceptions from builder code as a ``RuntimeError`` whose
    cause is the original, and prefixes others' ``args`` in place (the text as
    raised stays in :attr:`DataLayoutError.message`); entry points print the
    original's message alone (:func:`error_message`).
    """
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, (DataLayoutError, FileNotFoundError)):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__  # not __context__: that may be an unrelated, handled error
    return e


def error_message(e: BaseException) -> str:
    """The message of :func:`original_error` as it was raised (without TFDS prefixes)."""
    e = original_error(e)
    return e.message if isinstance(e, DataLayoutError) else str(e)


def action_class(action: str, where: str) -> str:
    """The action class of an action name: the text before the first space, aliases applied.

    ``'Photo 1'`` -> ``'Photo'``, ``'TakingPhoto 1'`` -> ``'Photo'``, and any other
    name keeps its own class (``'jumping_jacks 2'`` -> ``'jumping_jacks'``): files
    in the VideoPose3D layout may hold a user's own motion capture.

    Args:
      action: action name as stored in the npz files.
      where: description of the sequence, for the error message.

    Returns:
      The class name; one of :data:`H36M_ACTIONS` for Human3.6M files.

    Raises:
      DataLayoutError: if the name is empty or starts with a space (no class).
    """
    base = str(action).split(" ")[0]
    if not base:
        raise DataLayoutError(
            f"{where}: action {action!r} has no class name; expected a name such as "
            "'Walking' or 'Walking 1' (the class is the text before the first space)."
        )
    return _ACTION_ALIASES.get(base, base)


def action_class_index(class_name: str) -> int:
    """Index of a class in :data:`H36M_ACTIONS`, -1 for a class that is not one of the 15."""
    return H36M_ACTIONS.index(class_name) if class_name in H36M_ACTIONS else -1


def _missing_file(path: epath.Path, layout: str, who: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{who}: missing file {os.fspath(path)!r}. Expected {layout}. "
        "See the builder's MANUAL_DOWNLOAD_INSTRUCTIONS."
    )


def _unreadable(path: epath.Path, what: str, e: BaseException, layout: str, who: str):
    return DataLayoutError(
        f"{who}: file {os.fspath(path)!r} {what} ({type(e).__name__}: {e}); expected a complete "
        f".npz archive (as written by np.savez) holding {layout}. The file may be truncated "
        "or corrupt: copy or download it again."
    )


def load_npz_objects(
    path: epath.PathLike,
    keys: Sequence[str],
    layout: str,
    who: str,
    *,
    optional: Sequence[str] = (),
) -> dict[str, Any]:
    """The pickled objects ``np.load(path)[key].item()`` of ``keys`` (and of ``optional`` if there).

    Args:
      path: the ``.npz`` file.
      keys: entries that must be present, each a pickled 0-d object array.
      layout: human description of the expected layout, quoted in errors.
      who: builder name, for messages.
      optional: entries read when present.

    Raises:
      FileNotFoundError: naming the file and the expected layout.
      DataLayoutError: naming the file if it is empty, truncated or corrupt, is not
        an ``.npz`` archive, lacks a key, or an entry is not a 0-d object array.
    """
    path = epath.Path(path)
    if not path.exists():
        raise _missing_file(path, layout, who)
    if path.stat().length == 0:
        raise DataLayoutError(
            f"{who}: file {os.fspath(path)!r} is empty (0 bytes); expected an .npz archive "
            f"holding {layout}. Copy or download it again."
        )
    with path.open("rb") as f:
        try:
            npz = np.load(f, allow_pickle=True)
        except Exception as e:  # numpy / zipfile / pickle raise many types for a bad file.
            raise _unreadable(path, "is not readable as .npz", e, layout, who) from e
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise DataLayoutError(
                f"{who}: file {os.fspath(path)!r} holds a single {type(npz).__name__}, not an "
                f".npz archive of named entries; expected {layout}."
            )
        with npz:
            return _read_entries(npz, path, keys, optional, layout, who)


def _read_entries(npz, path, keys, optional, layout: str, who: str) -> dict[str, Any]:
    missing = [k for k in keys if k not in npz.files]
    if missing:
        raise DataLayoutError(
            f"{who}: file {os.fspath(path)!r} has keys {sorted(npz.files)}; expected key "
            f"{missing[0]!r} holding {layout}."
        )
    out = {}
    for key in [*keys, *(k for k in optional if k in npz.files)]:
        try:
            value = npz[key]
        except Exception as e:  # zlib / zipfile CRC / EOF / unpickling errors.
            raise _unreadable(path, f"entry {key!r} cannot be read", e, layout, who) from e
        if value.dtype != object or value.ndim != 0:
            raise DataLayoutError(
                f"{who}: file {os.fspath(path)!r} key {key!r} is an array of shape "
                f"{value.shape} and dtype {value.dtype}; expected a 0-d object array holding "
                f"{layout}."
            )
        out[key] = value.item()
    return out


def load_npz_dict(path: epath.PathLike, key: str, layout: str, who: str) -> Any:
    """Loads ``np.load(path)[key].item()``: :func:`load_npz_objects` for one key."""
    return load_npz_objects(path, (key,), layout, who)[key]


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


# A human's median bone length (17-joint skeletons: ~0.25 m) in each unit, generously bounded.
_BONE_RANGES = (("metres", 0.02, 2.0), ("centimetres", 2.0, 20.0), ("millimetres", 20.0, 2000.0))


def median_bone_length(pose: np.ndarray, parents: Sequence[int], max_frames: int = 500) -> float:
    """Median over bones and (up to ``max_frames`` evenly spaced) frames of ``[T, J, 3]`` poses."""
    pose = np.asarray(pose, np.float64)
    frames = np.unique(
        np.linspace(0, pose.shape[0] - 1, min(pose.shape[0], max_frames)).astype(int)
    )
    child = [j for j, p in enumerate(parents) if p >= 0]
    parent = [parents[j] for j in child]
    p = pose[frames]
    return float(np.median(np.linalg.norm(p[:, child] - p[:, parent], axis=-1)))


def check_units(
    pose: np.ndarray, parents: Sequence[int], where: str, *, expected: str, layout: str
) -> None:
    """Refuses 3D keypoints whose median bone length does not fit the ``expected`` unit.

    Args:
      pose: ``[T, J, 3]`` keypoints as read from the file.
      parents: parent joint of each joint (-1 for the root).
      where: file and sequence, for messages.
      expected: ``'metres'`` or ``'millimetres'``.
      layout: the file layout that fixes the unit, quoted in messages.
    """
    m = median_bone_length(pose, parents)
    unit = next((u for u, lo, hi in _BONE_RANGES if lo <= m < hi), None)
    if unit == expected:
        return
    _, lo, hi = next(r for r in _BONE_RANGES if r[0] == expected)
    looks = f"looks like {unit}" if unit else "fits no length unit for a human body"
    raise DataLayoutError(
        f"{where}: 3D median bone length {m:.4g} {looks}; expected {expected} ({layout}; a "
        f"human's median bone length is {lo:g}..{hi:g} in {expected}). Convert the file's "
        f"3D positions to {expected}."
    )


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
    action_class        ClassLabel       one of the 15 classes of H36M_ACTIONS; -1 for a class
                                         outside them (a user's own motion capture), whose name
                                         is action_class(action): the text before the first space
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
        "action_class": action_class_index(action_class_name),
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


@dataclasses.dataclass(eq=False)
class PoseConfig(tfds.core.BuilderConfig):
    """The builder config every pose dataset's configs derive from.

    Attributes:
      keypoints: joint layout of the stored 2D (a ``pose_jax.skeleton`` name, e.g.
        ``'coco'``); empty: the dataset's own skeleton (``registry.DatasetInfo.keypoints``).
    """

    keypoints: str = ""


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

    def _with_progress(self, examples: Iterable, total: int, split: str) -> Iterator:
        """``examples`` under a progress bar with ETA, one step per example (= per sequence).

        TFDS's own bar counts examples without a total; this one knows it. Off with
        ``tfds.display_progress_bar(False)`` (``build(progress=False)``, ``--noprogress``).
        """
        bar = tfds.core.utils.tqdm(
            examples, total=total, desc=f"{self.name} {split}", unit=" examples", mininterval=1.0
        )
        yield from bar

    def _finish_report(self, report: BuildReport, splits: Mapping[str, Sequence[int]]) -> None:
        for split, lengths in splits.items():
            report.add_split(split, lengths)
        report.log(self.name)
        self.info.metadata["build_report"] = report.as_dict()
