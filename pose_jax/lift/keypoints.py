"""One person's 2D keypoints: as read (:class:`Track`) and ready to lift (:class:`Keypoints`).

A :class:`Track` holds what a file says about one person, in the file's layout, on the
frames where the person was detected. :func:`prepare` converts it to the model's input
layout (Human3.6M-17, or COCO-17 for a COCO-input model) and fills every gap: a joint is
*missing* where its coordinates are NaN, exactly (0, 0) (how OpenPose and AlphaPose
write an undetected joint), or its confidence is below ``threshold``, and a frame is
missing where the person was not detected at all. Missing values are linearly
interpolated over time per joint and coordinate (held constant before the first and
after the last detection, as VideoPose3D's ``data/prepare_data_2d_custom.py`` fills
frames without a detection) and reported (:meth:`Keypoints.missing_report`); they are
never given to a model as zeros. A joint never seen, or a person never seen, is an
error.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from pose_jax import skeleton as skeleton_lib
from pose_jax.lift import layouts as layouts_lib
from pose_jax.lift.errors import KeypointLayoutError, MissingKeypointsError

DEFAULT_THRESHOLD = 0.3


@dataclasses.dataclass(frozen=True)
class Track:
    """One person in a file, in the file's layout.

    Attributes:
      track_id: the file's id of the person (a string).
      frames: ``[N]`` increasing frame numbers where the person was detected.
      xy: ``[N, J, 2]`` pixels.
      scores: ``[N, J]`` confidences (ones when the file has none).
      layout: the source layout name.
      image_size: ``(W, H)`` when the file records it, else None.
      source: the file read.
    """

    track_id: str
    frames: np.ndarray
    xy: np.ndarray
    scores: np.ndarray
    layout: str
    image_size: tuple[int, int] | None
    source: str


@dataclasses.dataclass(frozen=True)
class Keypoints:
    """One person's keypoints in a model's input layout on consecutive frames, gaps filled.

    Attributes:
      xy: ``[T, 17, 2]`` float32 pixels, in the ``target`` layout.
      scores: ``[T, 17]`` float32 confidences (0 where the joint was filled in).
      missing: ``[T, 17]`` bool: joints that were missing and are interpolated.
      frames: ``[T]`` the source's frame numbers (consecutive).
      track_id, layout, image_size, source: as in :class:`Track`.
      target: the layout of ``xy``: ``'h36m'`` (Human3.6M-17) or ``'coco'`` (COCO-17).
    """

    xy: np.ndarray
    scores: np.ndarray
    missing: np.ndarray
    frames: np.ndarray
    track_id: str
    layout: str
    image_size: tuple[int, int] | None
    source: str
    target: str = "h36m"

    @property
    def num_frames(self) -> int:
        return int(self.xy.shape[0])

    def xy_h36m(self) -> np.ndarray:
        """``[T, 17, 2]`` pixels in Human3.6M-17 (``xy`` converted when the target is COCO)."""
        return skeleton_lib.keypoints_to_h36m(self.xy, self.target)

    def missing_report(self) -> dict[str, Any]:
        """Which joints were interpolated on which frames (source frame numbers, ranges)."""
        names = skeleton_lib.get_skeleton(self.target).joint_names
        joints = {
            names[j]: _ranges(self.frames[self.missing[:, j]])
            for j in range(self.missing.shape[1])
            if self.missing[:, j].any()
        }
        return {
            "num_frames": self.num_frames,
            "frames_with_missing_joints": int(self.missing.any(axis=1).sum()),
            "frames_all_missing": _ranges(self.frames[self.missing.all(axis=1)]),
            "joints": joints,
        }


def _ranges(frames: np.ndarray) -> list[list[int]]:
    """Consecutive runs of ``frames`` as ``[first, last]`` pairs."""
    frames = np.asarray(frames, np.int64)
    if frames.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(frames) != 1)
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [frames.size - 1]])
    return [[int(frames[s]), int(frames[e])] for s, e in zip(starts, ends, strict=True)]


def source_valid(xy: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """``[..., J]``: finite, not exactly (0, 0), and confidence >= ``threshold``."""
    finite = np.isfinite(xy).all(axis=-1) & np.isfinite(scores)
    zero = (xy == 0).all(axis=-1)
    return finite & ~zero & (np.nan_to_num(scores, nan=-1.0) >= threshold)


def _where(track: Track) -> str:
    return f"{track.source}: person {track.track_id!r}"


def prepare(
    track: Track, *, threshold: float = DEFAULT_THRESHOLD, target: str = "h36m"
) -> Keypoints:
    """Converts ``track`` to ``target`` (the model's input layout) on consecutive frames
    and fills its gaps.

    Raises:
      KeypointLayoutError: the track's joint count is not its layout's, or the layout
        cannot give ``target`` (Human3.6M-17 keypoints for a COCO-input model).
      MissingKeypointsError: no valid keypoint at all, or a joint valid on no frame.
    """
    layout = layouts_lib.get_layout(track.layout, where=track.source)
    if track.xy.ndim != 3 or track.xy.shape[1:] != (layout.num_joints, 2):
        raise KeypointLayoutError(
            f"{_where(track)}: keypoints of shape {track.xy.shape}; expected "
            f"[frames, {layout.num_joints}, 2] for layout {layout.name!r}."
        )
    valid = source_valid(track.xy, track.scores, threshold)
    if not valid.any():
        raise MissingKeypointsError(
            f"{_where(track)}: every keypoint of all {len(track.frames)} frames is NaN, (0, 0) "
            f"or below the confidence threshold {threshold}; expected at least one detection."
        )
    try:
        xy, ok, scores = layouts_lib.convert(layout, target, track.xy, valid, track.scores)
    except KeypointLayoutError as e:
        raise KeypointLayoutError(f"{_where(track)}: {e}") from None
    frames = np.arange(track.frames[0], track.frames[-1] + 1)
    dense_xy = np.full((len(frames), layouts_lib.NUM_H36M, 2), np.nan, np.float32)
    dense_ok = np.zeros((len(frames), layouts_lib.NUM_H36M), bool)
    dense_scores = np.zeros((len(frames), layouts_lib.NUM_H36M), np.float32)
    rows = track.frames - track.frames[0]
    dense_xy[rows], dense_ok[rows], dense_scores[rows] = xy, ok, np.where(ok, scores, 0.0)
    filled = _interpolate(dense_xy, dense_ok, where=_where(track), layout=layout, target=target)
    return Keypoints(
        xy=filled,
        scores=dense_scores,
        missing=~dense_ok,
        frames=frames,
        track_id=track.track_id,
        layout=layout.name,
        image_size=track.image_size,
        source=track.source,
        target=target,
    )


def _interpolate(xy: np.ndarray, ok: np.ndarray, *, where: str, layout, target) -> np.ndarray:
    """Linear interpolation over time of every joint's invalid frames ``[T, 17, 2]``."""
    t = np.arange(xy.shape[0])
    out = xy.copy()
    for j in range(xy.shape[1]):
        have = ok[:, j]
        if not have.any():
            name = skeleton_lib.get_skeleton(target).joint_names[j]
            srcs = ", ".join(layout.joint_names[i] for i in layout.target_sources(target)[j])
            raise MissingKeypointsError(
                f"{where}: {target} joint {name!r} (from {layout.name} {srcs}) is missing on "
                f"all {xy.shape[0]} frames; expected it detected on at least one frame."
            )
        if have.all():
            continue
        for c in range(2):
            out[:, j, c] = np.interp(t, t[have], xy[have, j, c])
    return out


def from_array(
    keypoints: Any,
    *,
    layout: str = "h36m",
    threshold: float = DEFAULT_THRESHOLD,
    image_size: tuple[int, int] | None = None,
    source: str = "<array>",
    target: str = "h36m",
) -> Keypoints:
    """:class:`Keypoints` from ``[T, J, 2]`` pixels or ``[T, J, 3]`` with confidences."""
    arr = np.asarray(keypoints, np.float32)
    lay = layouts_lib.get_layout(layout, where=source)
    if arr.ndim != 3 or arr.shape[-1] not in (2, 3) or arr.shape[1] != lay.num_joints:
        raise KeypointLayoutError(
            f"{source}: keypoints of shape {arr.shape}; expected [frames, {lay.num_joints}, 2] "
            f"or [frames, {lay.num_joints}, 3] (x, y, confidence) for layout {lay.name!r}."
        )
    if arr.shape[0] == 0:
        raise MissingKeypointsError(f"{source}: no frames; expected at least one.")
    scores = arr[..., 2] if arr.shape[-1] == 3 else np.ones(arr.shape[:2], np.float32)
    track = Track("0", np.arange(arr.shape[0]), arr[..., :2], scores, lay.name, image_size, source)
    return prepare(track, threshold=threshold, target=target)
