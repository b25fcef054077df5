"""Readers of 2D keypoint files into :class:`pose_jax.lift.keypoints.Track` records.

Formats, recognised from the path and content:

* **MMPose inferencer** JSON (``MMPoseInferencer(..., pred_out_dir=...)``,
  ``mmpose/apis/inferencers/base_mmpose_inferencer.py``): a video gives one file, a
  list of ``{"frame_id": i, "instances": [...]}``; an image gives a list of instances;
  each instance ``{"keypoints": [[x, y], ...], "keypoint_scores": [...], "bbox":
  [[x1, y1, x2, y2]], "bbox_score": s}`` (``mmpose/structures/utils.py``
  ``split_instances``). The older ``demo/topdown_demo_with_mmdet.py`` file
  ``{"meta_info": ..., "instance_info": [{"frame_id", "instances"}]}`` is read too.
  A directory of per-image files is one frame per file, in name order.
* **AlphaPose** JSON (``docs/output.md``): a flat list with one entry per person per
  image, ``{"image_id": name, "keypoints": [x, y, c] * K, "score": s, "idx": track}``;
  frames are the distinct ``image_id`` values in file order.
* **OpenPose** ``--write_json`` (``doc/02_output.md``): one file per frame,
  ``{"people": [{"pose_keypoints_2d": [x, y, c] * 25, ...}]}``; pass the directory
  (files in name order) or one file.
* **VideoPose3D / Detectron2** ``data_2d_custom_*.npz`` (``data/prepare_data_2d_custom.py``):
  ``positions_2d = {video: {"custom": [[T, 17, 2]]}}`` and ``metadata`` with
  ``layout_name`` and ``video_metadata = {video: {"w", "h"}}``; each video is a track.
* **Arrays**: ``.npy`` or ``.npz`` (key ``keypoints_2d`` or ``keypoints``, or its only
  array; optional ``image_size = (W, H)``) of ``[T, J, 2|3]`` or ``[P, T, J, 2|3]``
  (P people); ``launch.lift`` outputs read back this way.

Files without person ids (MMPose, OpenPose, AlphaPose without ``idx``) are cut into
tracks by :func:`pose_jax.lift.tracking.associate`.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from pose_jax.lift import keypoints as keypoints_lib
from pose_jax.lift import layouts as layouts_lib
from pose_jax.lift import tracking
from pose_jax.lift.errors import KeypointFileError, KeypointLayoutError, MissingKeypointsError
from pose_jax.lift.keypoints import Track

# Default layout per container when the joint count alone is ambiguous (17 joints):
# detectors write COCO-17 unless told otherwise; plain arrays could be either.
_DEFAULT_17 = {"mmpose": "coco", "alphapose": "coco", "videopose3d": "coco", "array": None}

FORMATS = ("mmpose", "alphapose", "openpose", "videopose3d", "array")


def resolve_layout(layout: str, num_joints: int, *, source: str, container: str) -> str:
    """The layout name of keypoints with ``num_joints`` joints (``layout='auto'`` infers)."""
    if layout != "auto":
        lay = layouts_lib.get_layout(layout, where=source)
        if lay.num_joints != num_joints:
            fits = layouts_lib.layouts_with(num_joints) or "none of ours"
            raise KeypointLayoutError(
                f"{source}: {num_joints} keypoints per person, but layout {lay.name!r} has "
                f"{lay.num_joints}; layouts with {num_joints}: {fits}."
            )
        return lay.name
    fits = layouts_lib.layouts_with(num_joints)
    if len(fits) == 1:
        return fits[0]
    if num_joints == 17 and _DEFAULT_17.get(container):
        return _DEFAULT_17[container]
    if not fits:
        raise KeypointLayoutError(
            f"{source}: {num_joints} keypoints per person fit no known layout; expected 17 "
            "(coco, h36m), 26 (halpe) or 25 (openpose)."
        )
    raise KeypointLayoutError(
        f"{source}: {num_joints} keypoints per person could be any of {fits}; pass the "
        "layout (--layout=coco or --layout=h36m)."
    )


def _natural_key(name: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def _load_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise KeypointFileError(f"{path}: cannot read ({e.strerror or e}).") from None
    if not text.strip():
        raise KeypointFileError(f"{path}: the file is empty; expected keypoints JSON.")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise KeypointFileError(f"{path}: not valid JSON ({e.msg}, line {e.lineno}).") from None


def _flat_people(values: Sequence[float], source: str, what: str) -> tuple[np.ndarray, ...]:
    """``[x, y, c] * K`` -> ``(xy [K, 2], scores [K])``."""
    a = np.asarray(values, np.float64).reshape(-1)
    if a.size == 0 or a.size % 3:
        raise KeypointFileError(
            f"{source}: {what} has {a.size} numbers; expected [x, y, confidence] per keypoint "
            "(a multiple of 3)."
        )
    a = a.reshape(-1, 3)
    return a[:, :2], a[:, 2]


def _mmpose_instance(inst: Any, source: str) -> tuple[np.ndarray, np.ndarray, float]:
    if not isinstance(inst, dict) or "keypoints" not in inst:
        raise KeypointFileError(
            f"{source}: an MMPose instance without 'keypoints'; expected "
            "{'keypoints': [[x, y], ...], 'keypoint_scores': [...]} per person."
        )
    xy = np.asarray(inst["keypoints"], np.float64)
    if xy.ndim != 2 or xy.shape[1] < 2:
        raise KeypointFileError(
            f"{source}: MMPose 'keypoints' of shape {xy.shape}; expected [K, 2] pixels."
        )
    k = xy.shape[0]
    scores = np.asarray(inst.get("keypoint_scores", np.ones(k)), np.float64).reshape(-1)
    if scores.shape != (k,):
        raise KeypointFileError(
            f"{source}: {scores.size} 'keypoint_scores' for {k} keypoints; expected one each."
        )
    score = float(inst.get("bbox_score", np.mean(scores)) or 0.0)
    return xy[:, :2], scores, score


def _mmpose_frames(data: Any, source: str) -> list[list[tuple]] | None:
    """MMPose per-frame instance lists, or None when ``data`` is not MMPose output."""
    if isinstance(data, dict) and "instance_info" in data:
        data = data["instance_info"]
    if not isinstance(data, list) or not data or not isinstance(data[0], dict):
        return None
    if "instances" in data[0]:
        entries = sorted(data, key=lambda e: int(e.get("frame_id", 0)))
        return [[_mmpose_instance(i, source) for i in e.get("instances") or []] for e in entries]
    if isinstance(data[0].get("keypoints"), list) and data[0]["keypoints"]:
        if isinstance(data[0]["keypoints"][0], list):  # one image: a list of instances
            return [[_mmpose_instance(i, source) for i in data]]
    return None


def _alphapose_tracks(data: list, source: str) -> tuple[list[list[tuple]], dict | None]:
    """``(per-frame people, {idx: (frames, xy, scores)} or None)`` of AlphaPose entries."""
    frame_of: dict[Any, int] = {}
    per_frame: list[list[tuple]] = []
    by_idx: dict[str, list] = {}
    for e in data:
        if not isinstance(e, dict) or "keypoints" not in e or "image_id" not in e:
            raise KeypointFileError(
                f"{source}: an AlphaPose entry without 'image_id' and 'keypoints'; expected "
                "{'image_id': ..., 'keypoints': [x, y, c, ...], 'idx': track} per person."
            )
        f = frame_of.setdefault(e["image_id"], len(frame_of))
        if f == len(per_frame):
            per_frame.append([])
        xy, sc = _flat_people(e["keypoints"], source, f"image {e['image_id']!r} keypoints")
        per_frame[f].append((xy, sc, float(e.get("score", np.mean(sc)))))
        if "idx" in e:
            idx = e["idx"][0] if isinstance(e["idx"], list) and e["idx"] else e["idx"]
            by_idx.setdefault(str(int(idx) if isinstance(idx, float) else idx), []).append(
                (f, xy, sc)
            )
    has_idx = all("idx" in e for e in data)
    return per_frame, by_idx if has_idx else None


def _openpose_people(data: Any, source: str) -> list[tuple]:
    if not isinstance(data, dict) or "people" not in data:
        raise KeypointFileError(
            f"{source}: no 'people' list; expected OpenPose --write_json output "
            "{'people': [{'pose_keypoints_2d': [x, y, c, ...]}]}."
        )
    out = []
    for p in data["people"] or []:
        xy, sc = _flat_people(p.get("pose_keypoints_2d") or [], source, "pose_keypoints_2d")
        out.append((xy, sc, float(np.mean(sc))))
    return out


def _joint_count(per_frame: list[list[tuple]], source: str) -> int:
    counts = {p[0].shape[0] for people in per_frame for p in people}
    if not counts:
        raise KeypointFileError(f"{source}: no person is detected in any frame.")
    if len(counts) > 1:
        raise KeypointLayoutError(
            f"{source}: persons with {sorted(counts)} keypoints; expected one count per file."
        )
    return counts.pop()


def _tracks_from_frames(per_frame, source, layout, container, image_size) -> list[Track]:
    layout = resolve_layout(
        layout, _joint_count(per_frame, source), source=source, container=container
    )
    return [
        Track(tid, frames, xy, sc, layout, image_size, source)
        for tid, frames, xy, sc in tracking.associate(per_frame)
    ]


def _read_json_file(path: str, layout: str, image_size) -> list[Track]:
    data = _load_json(path)
    if data in ([], {}):
        raise KeypointFileError(f"{path}: the JSON holds no entries; expected keypoints.")
    frames = _mmpose_frames(data, path)
    if frames is not None:
        return _tracks_from_frames(frames, path, layout, "mmpose", image_size)
    if isinstance(data, list) and isinstance(data[0], dict) and "image_id" in data[0]:
        per_frame, by_idx = _alphapose_tracks(data, path)
        if by_idx is None:
            return _tracks_from_frames(per_frame, path, layout, "alphapose", image_size)
        name = resolve_layout(
            layout, _joint_count(per_frame, path), source=path, container="alphapose"
        )
        return [_stack_track(tid, rows, name, image_size, path) for tid, rows in by_idx.items()]
    if isinstance(data, dict) and "people" in data:
        return _tracks_from_frames(
            [_openpose_people(data, path)], path, layout, "openpose", image_size
        )
    raise KeypointFileError(
        f"{path}: JSON in no known layout; expected MMPose inferencer output (a list of "
        "{'frame_id', 'instances'}), AlphaPose results (a list of {'image_id', 'keypoints'}) "
        "or an OpenPose frame ({'people': [...]})."
    )


def _stack_track(tid: str, rows: list, layout: str, image_size, source: str) -> Track:
    """A track from ``(frame, xy, scores)`` rows; a frame seen twice keeps its first row."""
    seen: dict[int, tuple] = {}
    for f, xy, sc in rows:
        seen.setdefault(f, (xy, sc))
    frames = np.asarray(sorted(seen))
    xy = np.stack([seen[f][0] for f in frames]).astype(np.float32)
    sc = np.stack([seen[f][1] for f in frames]).astype(np.float32)
    return Track(tid, frames, xy, sc, layout, image_size, source)


def _read_json_dir(path: str, layout: str, image_size) -> list[Track]:
    names = sorted((n for n in os.listdir(path) if n.endswith(".json")), key=_natural_key)
    if not names:
        raise KeypointFileError(
            f"{path}: no .json files in the directory; expected one OpenPose (or MMPose "
            "per-image) JSON file per frame."
        )
    per_frame, container = [], "openpose"
    for n in names:
        file = os.path.join(path, n)
        data = _load_json(file)
        mm = _mmpose_frames(data, file) if isinstance(data, list) else None
        if mm is not None:
            per_frame.append(mm[0] if mm else [])
            container = "mmpose"
        elif data == []:
            per_frame.append([])
        else:
            per_frame.append(_openpose_people(data, file))
    return _tracks_from_frames(per_frame, path, layout, container, image_size)


# --------------------------------------------------------------------------- npz / npy

# What the pickled dicts of a VideoPose3D npz may hold: numpy arrays, scalars and dtypes.
_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


def _safe_object(zf: zipfile.ZipFile, member: str, source: str) -> Any:
    """An object array member of an npz, unpickled allowing only numpy arrays and builtins."""
    import pickle

    class _Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) in _SAFE_GLOBALS:
                return super().find_class(module, name)
            raise KeypointFileError(
                f"{source}: {member} holds a Python object of type {module}.{name}; expected "
                "only dicts, lists and numpy arrays (as VideoPose3D writes them)."
            )

    with zf.open(member) as f:
        version = np.lib.format.read_magic(f)
        header = (
            np.lib.format.read_array_header_1_0(f)
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0(f)
        )
        if header[2] != np.dtype(object):
            f.seek(0)
            return np.lib.format.read_array(f, allow_pickle=False)
        obj = _Unpickler(f, encoding="latin1").load()
    return obj.item() if isinstance(obj, np.ndarray) and obj.shape == () else obj


def _read_videopose3d(path: str, zf: zipfile.ZipFile, layout: str) -> list[Track]:
    positions = _safe_object(zf, "positions_2d.npy", path)
    meta = _safe_object(zf, "metadata.npy", path) if "metadata.npy" in zf.namelist() else {}
    if not isinstance(positions, dict) or not positions:
        raise KeypointFileError(
            f"{path}: 'positions_2d' holds no videos; expected "
            "{video: {'custom': [[T, 17, 2]]}}."
        )
    videos = (meta or {}).get("video_metadata", {})
    hint = (meta or {}).get("layout_name")
    tracks = []
    for name, by_cam in positions.items():
        arrays = next(iter(by_cam.values())) if isinstance(by_cam, dict) else by_cam
        kp = np.asarray(arrays[0] if isinstance(arrays, (list, tuple)) else arrays, np.float32)
        if kp.ndim != 3 or kp.shape[-1] < 2:
            raise KeypointFileError(
                f"{path}: video {name!r} keypoints of shape {kp.shape}; expected [T, J, 2]."
            )
        lay = resolve_layout(
            layout if layout != "auto" else (hint or "auto"),
            kp.shape[1],
            source=path,
            container="videopose3d",
        )
        vm = videos.get(name) or {}
        size = (int(vm["w"]), int(vm["h"])) if "w" in vm and "h" in vm else None
        scores = kp[..., 2] if kp.shape[-1] > 2 else np.ones(kp.shape[:2], np.float32)
        frames = np.arange(kp.shape[0])
        tracks.append(Track(str(name), frames, kp[..., :2], scores, lay, size, path))
    return tracks


_ARRAY_KEYS = ("keypoints_2d", "keypoints")


def _array_tracks(arr: np.ndarray, path: str, layout: str, image_size) -> list[Track]:
    arr = np.asarray(arr, np.float32)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] not in (2, 3) or arr.shape[1] == 0:
        raise KeypointLayoutError(
            f"{path}: an array of shape {arr.shape}; expected [frames, joints, 2 or 3] or "
            "[people, frames, joints, 2 or 3] (x, y[, confidence]) pixels."
        )
    lay = resolve_layout(layout, arr.shape[2], source=path, container="array")
    tracks = []
    for p in range(arr.shape[0]):
        scores = arr[p, ..., 2] if arr.shape[-1] == 3 else np.ones(arr.shape[1:3], np.float32)
        frames = np.arange(arr.shape[1])
        tracks.append(Track(str(p), frames, arr[p, ..., :2], scores, lay, image_size, path))
    return tracks


def _read_npz(path: str, layout: str) -> list[Track]:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise KeypointFileError(f"{path}: not a readable .npz ({e}).") from None
    with zf:
        names = [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
        if "positions_2d" in names:
            return _read_videopose3d(path, zf, layout)
        keys = [k for k in _ARRAY_KEYS if k in names] or (names if len(names) == 1 else [])
        if not keys:
            raise KeypointFileError(
                f"{path}: arrays {sorted(names)}; expected 'positions_2d' (VideoPose3D), "
                f"one of {list(_ARRAY_KEYS)}, or a single array."
            )
        arr = _safe_object(zf, f"{keys[0]}.npy", path)
        size = None
        if "image_size" in names:
            w, h = np.asarray(_safe_object(zf, "image_size.npy", path)).reshape(-1)[:2]
            size = (int(w), int(h))
    return _array_tracks(arr, path, layout, size)


def read_tracks(path: str | os.PathLike, layout: str = "auto") -> list[Track]:
    """Every person in a keypoint file or OpenPose directory, in the file's layout.

    Args:
      path: a ``.json`` file, a directory of per-frame ``.json`` files, ``.npz`` or ``.npy``.
      layout: ``'coco'``, ``'halpe'``, ``'openpose'``, ``'h36m'`` or ``'auto'`` (from the
        joint count and the file; 17 joints in a plain array needs the layout).

    Raises:
      KeypointFileError, KeypointLayoutError: the file names what it expected.
    """
    path = os.fspath(path)
    if layout != "auto":
        layouts_lib.get_layout(layout, where=path)
    if os.path.isdir(path):
        return _read_json_dir(path, layout, None)
    if not os.path.exists(path):
        raise KeypointFileError(f"{path}: no such file or directory.")
    if os.path.getsize(path) == 0:
        raise KeypointFileError(f"{path}: the file is empty; expected keypoints.")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".json":
        return _read_json_file(path, layout, None)
    if ext == ".npz":
        return _read_npz(path, layout)
    if ext == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise KeypointFileError(f"{path}: not a readable numeric .npy ({e}).") from None
        return _array_tracks(arr, path, layout, None)
    raise KeypointFileError(
        f"{path}: unknown file type {ext!r}; expected .json (MMPose, AlphaPose, OpenPose), "
        "a directory of OpenPose .json files, .npz (VideoPose3D data_2d_custom, arrays) or .npy."
    )


def select_tracks(tracks: Sequence[Track], track: str | int | None, *, source: str) -> list[Track]:
    """``track=None``: the person seen on the most frames; ``'all'``: everyone; else that id."""
    if not tracks:
        raise MissingKeypointsError(
            f"{source}: no person is detected in any frame (every keypoint is NaN, (0, 0) or "
            "of confidence 0); expected at least one detection."
        )
    if track is None:
        return [max(tracks, key=lambda t: len(t.frames))]
    if str(track) == "all":
        return list(tracks)
    found = [t for t in tracks if t.track_id == str(track)]
    if not found:
        ids = [t.track_id for t in tracks]
        raise KeypointFileError(
            f"{source}: no person with track id {str(track)!r}; the file has {ids[:20]}"
            f"{' ...' if len(ids) > 20 else ''} (or pass 'all')."
        )
    return found


def read_keypoints(
    path: str | os.PathLike,
    layout: str = "auto",
    *,
    track: str | int | None = None,
    threshold: float = keypoints_lib.DEFAULT_THRESHOLD,
    target: str = "h36m",
) -> list[keypoints_lib.Keypoints]:
    """The chosen people of a keypoint file as :class:`Keypoints` in ``target``, gaps filled.

    ``track``: None (the person seen on the most frames), a track id, or ``'all'``;
    ``threshold``: confidences below it count as missing (interpolated and reported);
    ``target``: the model's input layout (``Lifter.keypoints``: ``'h36m'`` or ``'coco'``).
    """
    tracks = read_tracks(path, layout)
    chosen = select_tracks(tracks, track, source=os.fspath(path))
    return [keypoints_lib.prepare(t, threshold=threshold, target=target) for t in chosen]
