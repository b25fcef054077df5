"""What :meth:`pose_jax.lift.Lifter.lift` returns, and how it is saved (``.npz`` + ``.json``)."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np

from pose_jax.lift.keypoints import Keypoints

UNITS = "metres, camera frame, root-relative (root joint at 0), Human3.6M-17 joint order"


@dataclasses.dataclass(frozen=True)
class LiftResult:
    """One person's lifted sequence.

    Attributes:
      hypotheses: ``[T, H, 17, 3]`` every hypothesis at the last sampler iteration.
      poses_3d: ``[T, 17, 3]`` the aggregate: ``aggregation`` 'p_agg' (mean of the
        hypotheses) or 'j_agg' (JPMA: per joint the hypothesis whose projection is
        nearest the input 2D; needs camera intrinsics).
      spread: ``[T, 17]`` per joint, the mean distance of the hypotheses from their mean.
      aggregation: 'p_agg' or 'j_agg'.
      keypoints: the converted input (Human3.6M-17 pixels, gaps filled, what was missing).
      trajectory: ``[T, 3]`` camera-frame root position, when intrinsics were given
        (fitted to the 2D: the models predict root-relative poses only), else None.
      settings: how the sequence was lifted (model, H, K, seed, image size, ...).
    """

    hypotheses: np.ndarray
    poses_3d: np.ndarray
    spread: np.ndarray
    aggregation: str
    keypoints: Keypoints
    trajectory: np.ndarray | None
    settings: dict[str, Any]

    @property
    def num_frames(self) -> int:
        return int(self.poses_3d.shape[0])

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays :meth:`save` writes into the ``.npz``."""
        out = {
            "poses_3d": self.poses_3d,
            "hypotheses": self.hypotheses,
            "spread": self.spread,
            "keypoints_2d": self.keypoints.xy,
            "keypoints_missing": self.keypoints.missing,
            "keypoints_scores": self.keypoints.scores,
            "frames": self.keypoints.frames,
            "image_size": np.asarray(self.settings["image_size"], np.int64),
        }
        if self.trajectory is not None:
            out["trajectory"] = self.trajectory
        return out

    def summary(self) -> dict[str, Any]:
        """The ``.json`` beside the ``.npz``: settings, shapes, units, missing joints."""
        return {
            "units": UNITS,
            "aggregation": self.aggregation,
            "num_frames": self.num_frames,
            "track_id": self.keypoints.track_id,
            "source": self.keypoints.source,
            "source_layout": self.keypoints.layout,
            "settings": self.settings,
            "shapes": {k: list(v.shape) for k, v in self.arrays().items()},
            "mean_spread_mm": float(np.mean(self.spread) * 1000.0),
            "missing": self.keypoints.missing_report(),
        }

    def save(self, path: str | os.PathLike) -> tuple[str, str]:
        """Writes ``path`` (``.npz``) and the summary beside it (``.json``); returns both."""
        path = os.fspath(path)
        stem = path[:-4] if path.endswith(".npz") else path
        os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
        np.savez_compressed(stem + ".npz", **self.arrays())
        with open(stem + ".json", "w", encoding="utf-8") as f:
            json.dump(self.summary(), f, indent=2)
        return stem + ".npz", stem + ".json"
