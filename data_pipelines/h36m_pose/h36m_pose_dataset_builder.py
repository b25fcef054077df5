"""``h36m_pose``: Human3.6M keypoints in VideoPose3D's layout, one example per sequence and camera.

Reads ``data_3d_h36m.npz`` (world-frame 32-joint mocap, metres) and
``data_2d_h36m_<source>.npz`` (17-joint 2D per camera, pixels: Human3.6M-17, or
COCO-17 for ``detectron_pt_coco``, the input of D3DP's in-the-wild model) from the manual
directory, moves the 3D into each camera's frame with that subject's
extrinsics, and stores raw absolute camera-frame 3D, pixel 2D and the camera.
Actions need not be the 15 Human3.6M classes (a user's own capture in this
layout): a class outside them is stored as ``action_class = -1`` and named by
the action text before its first space. 3D whose median bone length is not in
metres (e.g. millimetres) is refused, naming the sequence.
Root-centering, screen normalisation, windowing and flips are grain transforms
(``data_pipelines/transforms.py``), so they never force a rebuild.

Splits (every reference): ``train`` = S1, S5, S6, S7, S8; ``test`` = S9, S11;
``validation`` = the training subjects named in ``H36mConfig.validation_subjects``
(moved out of ``train``; empty, hence absent, by default; never a test subject).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from data_pipelines import common
from pose_jax import camera as camera_lib
from pose_jax import skeleton as skeleton_lib

NAME = "h36m_pose"
FILE_3D = "data_3d_h36m.npz"

LAYOUT_3D = (
    "VideoPose3D's data_3d_h36m.npz: key 'positions_3d' = 0-d object array holding "
    "dict subject ('S1', 'S5', 'S6', 'S7', 'S8', 'S9', 'S11') -> action name (e.g. "
    "'Directions 1'; the action class is the text before the first space, the 15 Human3.6M "
    "classes or any other) -> float32 array (T, 32, 3), world coordinates in metres"
)
LAYOUT_2D = (
    "VideoPose3D's data_2d_h36m_<source>.npz: key 'positions_2d' = 0-d object array holding "
    "dict subject -> action name -> list of 4 float32 arrays (T_cam, 17, 2) in pixels, one per "
    "camera in the order 54138969, 55011271, 58860488, 60457274 (a detector's extra score "
    "channels, (T_cam, 17, 3 or 4), are dropped); optional key 'metadata' = 0-d object dict "
    "with 'num_joints': 17 and 'layout_name' ('h36m', or 'coco' for COCO-17 keypoints)"
)

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
Put VideoPose3D's Human3.6M files, unchanged, directly in the manual directory
(`--manual_dir`, default `<data_dir>/downloads/manual/`):

  <manual_dir>/{FILE_3D}                        3D mocap (all configs)
  <manual_dir>/data_2d_h36m_gt.npz                   config `gt`
  <manual_dir>/data_2d_h36m_cpn_ft_h36m_dbb.npz      config `cpn_ft_h36m_dbb`
  <manual_dir>/data_2d_h36m_detectron_ft_h36m.npz    config `detectron_ft_h36m`
  <manual_dir>/data_2d_h36m_detectron_pt_coco.npz    config `detectron_pt_coco` (COCO-17 2D)

Only the 3D file and the 2D file of the config being built are needed.
`{FILE_3D}` and `data_2d_h36m_gt.npz` are written by VideoPose3D's
`data/prepare_data_h36m.py` from the Human3.6M release (the original
D3_Positions CDF files, or the h5 archive of Martinez et al.); the detector
files are the pre-computed ones linked from VideoPose3D's DATASETS.md. Layouts:
  * {LAYOUT_3D}.
  * {LAYOUT_2D}.
"""

_SOURCES = {
    "gt": "ground-truth 2D: the 3D mocap projected through each camera with distortion",
    "cpn_ft_h36m_dbb": "CPN detections fine-tuned on Human3.6M (D3DP/FinePOSE default input)",
    "detectron_ft_h36m": "Detectron (Mask R-CNN) detections fine-tuned on Human3.6M",
    "detectron_pt_coco": (
        "Detectron detections pre-trained on COCO, in the COCO-17 layout (the input of D3DP's "
        "in-the-wild model, which predicts Human3.6M-17 3D)"
    ),
}
# 2D sources whose keypoints are not in the Human3.6M-17 layout.
_KEYPOINTS = {"detectron_pt_coco": "coco"}


@dataclasses.dataclass(eq=False)
class H36mConfig(common.PoseConfig):
    """One 2D source, and optionally training subjects held out as ``validation``.

    Attributes:
      source: the ``<source>`` of ``data_2d_h36m_<source>.npz``.
      validation_subjects: training subjects moved from ``train`` to a
        ``validation`` split, e.g. ``('S8',)``. Test subjects are refused.
    """

    source: str = "gt"
    validation_subjects: tuple[str, ...] = ()

    def __post_init__(self):
        self.validation_subjects = common.check_validation_subjects(
            self.name, self.validation_subjects
        )


def make_config(source: str, validation_subjects: tuple[str, ...] = (), name: str | None = None):
    """A config for ``source``; named ``<source>`` or ``<source>_val_<S..>`` when holding out."""
    if name is None:
        name = source
        if validation_subjects:
            name += "_val_" + "_".join(validation_subjects)
    desc = _SOURCES.get(source, f"2D keypoints from data_2d_h36m_{source}.npz")
    if validation_subjects:
        desc += f"; validation split = {', '.join(validation_subjects)}"
    return H36mConfig(
        name=name,
        source=source,
        validation_subjects=tuple(validation_subjects),
        description=desc,
        keypoints=_KEYPOINTS.get(source, "h36m"),
    )


@dataclasses.dataclass(frozen=True)
class _Sequence:
    subject: str
    action: str
    action_class: str
    camera_index: int
    pose_world: np.ndarray  # [T, 17, 3], metres
    pose_2d: np.ndarray  # [T, 17, 2], pixels, already cut to T (the config's 2D layout)


_PARENTS = skeleton_lib.get_skeleton("h36m").parents
_UNITS = f"VideoPose3D's {FILE_3D} holds world positions in metres"


def _reduce_3d(arr: Any, where: str) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[1] == 32 and a.shape[2] == 3:
        a = skeleton_lib.reduce_h36m_32_to_17(a)
    elif not (a.ndim == 3 and a.shape[1] == common.NUM_JOINTS and a.shape[2] == 3):
        raise common.DataLayoutError(
            f"{where}: 3D keypoints have shape {a.shape}; expected (T, 32, 3) (or already "
            "reduced (T, 17, 3))."
        )
    return common.check_keypoints(a, where, dims=3, name="3D")


def _read_views(
    views: Any, num_frames: int, cams: list, where: str, file_2d: str
) -> list[tuple[np.ndarray, int]]:
    """``(2D cut to the 3D length, frames cut)`` per camera of one sequence's 2D entry."""
    if not isinstance(views, (list, tuple)) or len(views) != len(cams):
        got = len(views) if isinstance(views, (list, tuple)) else type(views).__name__
        raise common.DataLayoutError(
            f"{where} in {file_2d}: expected a list of {len(cams)} camera arrays "
            f"(T_cam, 17, 2); got {got}."
        )
    out = []
    for ci, view in enumerate(views):
        w = f"{where} camera {ci} ({cams[ci].id}) in {file_2d}"
        view = np.asarray(view)
        if view.ndim == 3 and view.shape[-1] in (3, 4):
            view = view[..., :2]  # detector scores: the models read coordinates only
        kp = common.check_keypoints(view, w, dims=2, name="2D")
        n2 = kp.shape[0]
        if n2 < num_frames:
            raise common.DataLayoutError(
                f"{w}: 2D has {n2} frames, fewer than the {num_frames} frames of 3D; the "
                "references require len(2D) >= len(3D)."
            )
        out.append((kp[:num_frames], n2 - num_frames))
    return out


def _check_subjects(
    pos3d: Mapping, pos2d: Mapping, file_3d: str, file_2d: str, report: common.BuildReport, who: str
) -> None:
    """Refuses 3D files without exactly the 7 mocap subjects; notes 2D-only subjects."""
    unknown = sorted(set(map(str, pos3d)) - set(common.H36M_SUBJECTS))
    if unknown:
        raise common.DataLayoutError(
            f"{who}: {file_3d} holds subject(s) {unknown}, which are not Human3.6M mocap "
            f"subjects; expected {common.H36M_SUBJECTS}."
        )
    missing = [s for s in common.H36M_SUBJECTS if s not in pos3d]
    if missing:
        raise common.DataLayoutError(
            f"{who}: {file_3d} lacks subject(s) {missing}; expected all of {common.H36M_SUBJECTS}."
        )
    extra_2d = sorted(set(map(str, pos2d)) - set(common.H36M_SUBJECTS))
    if extra_2d:
        report.ignored.append(
            f"{file_2d}: subject(s) {extra_2d} have no 3D mocap (unlabeled) and are not "
            "part of any split."
        )


def _check_metadata(meta: Any, file_2d: str, keypoints: str, who: str) -> None:
    """Refuses a 2D file whose metadata names another joint count or layout than the config's."""
    if not isinstance(meta, dict):
        return
    if meta.get("num_joints", 17) != 17:
        raise common.DataLayoutError(
            f"{who}: {file_2d} metadata says num_joints={meta['num_joints']}; expected 17 "
            f"(the {keypoints} layout)."
        )
    layout = str(meta.get("layout_name", keypoints)).lower()
    if layout in ("h36m", "coco") and layout != keypoints:
        raise common.DataLayoutError(
            f"{who}: {file_2d} metadata says layout_name={layout!r}, but this config reads "
            f"{keypoints!r} 2D keypoints; expected a {keypoints} file (COCO-17 keypoints are "
            "config `detectron_pt_coco`)."
        )


def read_sequences(
    manual_dir: epath.PathLike, source: str, who: str = NAME, keypoints: str = "h36m"
) -> tuple[dict[str, list[_Sequence]], common.BuildReport]:
    """Reads and validates both npz files; groups (subject, action, camera) sequences by subject.

    Args:
      manual_dir: directory holding the npz files.
      source: 2D source name.
      who: builder name for messages.
      keypoints: the 2D layout the config expects (``'h36m'`` or ``'coco'``).

    Returns:
      ``(subject -> list of sequences, report)``.

    Raises:
      FileNotFoundError / DataLayoutError: naming the file and sequence at fault.
    """
    manual_dir = epath.Path(manual_dir)
    path_3d = manual_dir / FILE_3D
    path_2d = manual_dir / f"data_2d_h36m_{source}.npz"
    pos3d = common.load_npz_dict(path_3d, "positions_3d", LAYOUT_3D, who)
    files_2d = common.load_npz_objects(
        path_2d, ("positions_2d",), LAYOUT_2D, who, optional=("metadata",)
    )
    pos3d = common.check_mapping(
        pos3d, f"{who}: {path_3d.name} 'positions_3d'", "subject -> action"
    )
    pos2d = common.check_mapping(
        files_2d["positions_2d"], f"{who}: {path_2d.name} 'positions_2d'", "subject -> action"
    )
    _check_metadata(files_2d.get("metadata"), path_2d.name, keypoints, who)

    report = common.BuildReport()
    _check_subjects(pos3d, pos2d, path_3d.name, path_2d.name, report, who)

    out: dict[str, list[_Sequence]] = {}
    for subject in common.H36M_SUBJECTS:
        actions = common.check_mapping(
            pos3d[subject], f"{who}: {path_3d.name} subject {subject}", "action -> array"
        )
        if subject not in pos2d:
            raise common.DataLayoutError(
                f"{who}: {path_2d.name} has no subject {subject!r}, which {path_3d.name} has; "
                f"expected {LAYOUT_2D}."
            )
        actions_2d = common.check_mapping(
            pos2d[subject], f"{who}: {path_2d.name} subject {subject}", "action -> list"
        )
        extra = sorted(set(actions_2d) - set(actions))
        if extra:
            report.ignored.append(
                f"{path_2d.name}: {subject} action(s) {extra} have no 3D mocap and are not part "
                "of any split."
            )
        cams = camera_lib.h36m_cameras(subject)
        seqs = []
        for action in sorted(actions):
            where = f"{who}: sequence {subject}/{action!r}"
            klass = common.action_class(action, where)
            world = _reduce_3d(actions[action], f"{where} in {path_3d.name}")
            common.check_units(
                world, _PARENTS, f"{where} in {path_3d.name}", expected="metres", layout=_UNITS
            )
            if action not in actions_2d:
                raise common.DataLayoutError(
                    f"{where}: missing from {path_2d.name} (it is in {path_3d.name})."
                )
            views = _read_views(actions_2d[action], world.shape[0], cams, where, path_2d.name)
            for ci, (kp, extra_frames) in enumerate(views):
                if extra_frames:
                    report.truncated_frames[f"{subject}/{action}/{ci}"] = extra_frames
                seqs.append(_Sequence(subject, action, klass, ci, world, kp))
        out[subject] = seqs
    return out, report


def example_key(subject: str, action: str, camera_index: int) -> str:
    return f"{subject}/{action}/{camera_index}"


class Builder(common.PoseBuilder):
    """Human3.6M sequences (VideoPose3D files); see the module docstring."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    BUILDER_CONFIGS: ClassVar[list[tfds.core.BuilderConfig]] = [make_config(s) for s in _SOURCES]
    DEFAULT_CONFIG_NAME = "cpn_ft_h36m_dbb"

    def _info(self) -> tfds.core.DatasetInfo:
        return self._make_info(
            description=(
                "Human3.6M 17-joint 3D (camera frame, metres, absolute) and 2D (pixels) "
                "keypoints with camera parameters, one example per subject/action/camera. "
                + (self.builder_config.description or "")
            ),
            features=common.h36m_like_features(),
            homepage="http://vision.imar.ro/human3.6m/",
            citation=(
                "@article{h36m_pami, author={Ionescu, Catalin and Papava, Dragos and Olaru, "
                "Vlad and Sminchisescu, Cristian}, title={Human3.6M: Large Scale Datasets and "
                "Predictive Methods for 3D Human Sensing in Natural Environments}, "
                "journal={IEEE TPAMI}, year={2014}}"
            ),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        cfg = self.builder_config
        by_subject, report = read_sequences(
            dl_manager.manual_dir, cfg.source, self.name, keypoints=cfg.keypoints
        )
        splits = {
            split: [seq for s in subjects for seq in by_subject[s]]
            for split, subjects in common.h36m_split_subjects(cfg.validation_subjects).items()
        }
        self._finish_report(
            report, {k: [v.pose_world.shape[0] for v in seqs] for k, seqs in splits.items()}
        )
        return {
            split: self._with_progress(self._generate_examples(seqs), len(seqs), split)
            for split, seqs in splits.items()
        }

    def _generate_examples(self, seqs: list[_Sequence]) -> Iterator[tuple[str, dict[str, Any]]]:
        for seq in seqs:
            cam = camera_lib.h36m_camera(seq.subject, seq.camera_index)
            yield (
                example_key(seq.subject, seq.action, seq.camera_index),
                common.h36m_like_example(
                    subject=seq.subject,
                    action=seq.action,
                    action_class_name=seq.action_class,
                    camera_index=seq.camera_index,
                    cam=cam,
                    pose_world=seq.pose_world,
                    pose_2d=seq.pose_2d,
                ),
            )
