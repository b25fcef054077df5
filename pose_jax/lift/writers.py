"""Writers of the keypoint files :mod:`pose_jax.lift.formats` reads (demos and tests).

Each takes ``xy [P, T, J, 2]`` pixels and ``scores [P, T, J]`` for P people over T
frames, in the target layout; a person whose keypoints on a frame are all NaN is
not detected there (left out of that frame).
"""

from __future__ import annotations

import json
import os

import numpy as np


def _people(xy: np.ndarray, scores: np.ndarray, frame: int):
    """``(person index, xy [J, 2], scores [J])`` of the people detected on ``frame``."""
    for p in range(xy.shape[0]):
        if not np.isnan(xy[p, frame]).all():
            yield p, np.nan_to_num(xy[p, frame]), np.nan_to_num(scores[p, frame])


def _bbox(xy: np.ndarray) -> list[float]:
    lo, hi = xy.min(0), xy.max(0)
    return [float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])]


def write_mmpose_json(path: str, xy: np.ndarray, scores: np.ndarray) -> None:
    """An MMPose inferencer video file: ``[{"frame_id", "instances": [...]}]``."""
    frames = []
    for f in range(xy.shape[1]):
        instances = [
            {
                "keypoints": pts.tolist(),
                "keypoint_scores": sc.tolist(),
                "bbox": [_bbox(pts)],  # MMPose writes a one-element list of boxes
                "bbox_score": float(sc.mean()),
            }
            for _, pts, sc in _people(xy, scores, f)
        ]
        frames.append({"frame_id": f, "instances": instances})
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(frames, fh)


def _flat(pts: np.ndarray, sc: np.ndarray) -> list[float]:
    return np.concatenate([pts, sc[:, None]], axis=1).reshape(-1).tolist()


def write_alphapose_json(path: str, xy: np.ndarray, scores: np.ndarray, *, idx=True) -> None:
    """AlphaPose results: one ``{"image_id", "keypoints", "score", "idx"}`` per person per image."""
    entries = []
    for f in range(xy.shape[1]):
        for p, pts, sc in _people(xy, scores, f):
            e = {"image_id": f"{f}.jpg", "category_id": 1, "keypoints": _flat(pts, sc)}
            e["score"] = float(sc.mean())
            if idx:
                e["idx"] = p + 1
            entries.append(e)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(entries, fh)


def write_openpose_dir(path: str, xy: np.ndarray, scores: np.ndarray) -> None:
    """OpenPose ``--write_json``: ``<path>/frame_<f>_keypoints.json`` per frame."""
    os.makedirs(path, exist_ok=True)
    for f in range(xy.shape[1]):
        people = [
            {"person_id": [-1], "pose_keypoints_2d": _flat(pts, sc), "face_keypoints_2d": []}
            for _, pts, sc in _people(xy, scores, f)
        ]
        with open(os.path.join(path, f"frame_{f:012d}_keypoints.json"), "w") as fh:
            json.dump({"version": 1.3, "people": people}, fh)


def write_videopose3d_npz(path: str, videos: dict, sizes: dict) -> None:
    """``data_2d_custom_*.npz``: ``{video: xy [T, 17, 2]}`` and ``{video: (w, h)}``, COCO."""
    metadata = {
        "layout_name": "coco",
        "num_joints": 17,
        "keypoints_symmetry": [[1, 3, 5, 7, 9, 11, 13, 15], [2, 4, 6, 8, 10, 12, 14, 16]],
        "video_metadata": {v: {"w": int(w), "h": int(h)} for v, (w, h) in sizes.items()},
    }
    positions = {v: {"custom": [np.asarray(a, np.float32)]} for v, a in videos.items()}
    np.savez_compressed(path, positions_2d=positions, metadata=metadata)
