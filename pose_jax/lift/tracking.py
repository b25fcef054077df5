"""People tracks for files that detect people per frame but give them no id.

Greedy frame-to-frame association: a detection joins the track whose last pose
(seen at most ``max_gap`` frames earlier) is nearest, measured as the mean
distance of the joints both detected divided by that pose's size (its bounding
box diagonal); pairs are taken nearest first, one detection per track, and a
detection farther than ``max_cost`` from every free track starts a new one. Track
ids are ``'0'``, ``'1'``, ... in order of first appearance.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MAX_COST = 0.5
MAX_GAP = 25


def _detected(xy: np.ndarray, scores: np.ndarray) -> np.ndarray:
    return np.isfinite(xy).all(-1) & ~(xy == 0).all(-1) & (np.nan_to_num(scores) > 0)


def _size(xy: np.ndarray, ok: np.ndarray) -> float:
    pts = xy[ok]
    if len(pts) < 2:
        return 1.0
    return float(max(np.linalg.norm(pts.max(0) - pts.min(0)), 1.0))


def _cost(a: tuple, b: tuple) -> float:
    """Mean distance of the joints detected in both, over ``a``'s size (inf: none shared)."""
    both = a[2] & b[2]
    if not both.any():
        return float("inf")
    return float(np.linalg.norm(a[0][both] - b[0][both], axis=-1).mean() / a[3])


def associate(
    per_frame: Sequence[Sequence[tuple]], *, max_cost: float = MAX_COST, max_gap: int = MAX_GAP
) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """Tracks of per-frame detections ``[(xy [K, 2], scores [K], score), ...]``.

    Returns:
      ``[(track_id, frames [N], xy [N, K, 2], scores [N, K])]`` in order of first appearance.
    """
    tracks: list[dict] = []
    for f, people in enumerate(per_frame):
        dets = []
        for xy, sc, _ in people:
            xy, sc = np.asarray(xy, np.float32), np.asarray(sc, np.float32)
            ok = _detected(xy, sc)
            dets.append((xy, sc, ok, _size(xy, ok)))
        live = [i for i, t in enumerate(tracks) if f - t["last_frame"] <= max_gap]
        pairs = sorted(
            (_cost(tracks[i]["last"], d), i, k) for i in live for k, d in enumerate(dets)
        )
        taken_t, taken_d = set(), set()
        for c, i, k in pairs:
            if c > max_cost or i in taken_t or k in taken_d:
                continue
            taken_t.add(i)
            taken_d.add(k)
            _extend(tracks[i], f, dets[k])
        for k, d in enumerate(dets):
            if k not in taken_d and d[2].any():
                tracks.append({"rows": [], "last_frame": f, "last": d})
                _extend(tracks[-1], f, d)
    return [
        (
            str(n),
            np.asarray([r[0] for r in t["rows"]]),
            np.stack([r[1] for r in t["rows"]]),
            np.stack([r[2] for r in t["rows"]]),
        )
        for n, t in enumerate(tracks)
    ]


def _extend(track: dict, frame: int, det: tuple) -> None:
    track["rows"].append((frame, det[0], det[1]))
    track["last_frame"], track["last"] = frame, det
