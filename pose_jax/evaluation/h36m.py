"""Human3.6M tables: per action and DDIM iteration, P1/P2 of every aggregation.

As D3DP's main.py reports them: per batch the J-Best, P-Best, P-Agg and J-Agg errors
(``metrics.multi_hypothesis_errors``), frame-weighted within an action, then the plain
mean over actions. Also the mean-pose baseline, a sanity floor for a trained model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pose_jax import _checks, metrics
from pose_jax.evaluation.base import Batch, Evaluator

#: Result keys of Protocol 1 (MPJPE) and 2 (P-MPJPE), with whether each aligns poses.
PROTOCOLS = (("mpjpe_mm", False), ("p_mpjpe_mm", True))


class H36MTables(Evaluator):
    """Per-action, per-iteration P1 and P2 of J-Best, P-Best, P-Agg and J-Agg (mm).

    Args:
      mode: 'reference' (D3DP-exact) or 'per_pose' (see ``metrics.multi_hypothesis_errors``).
      root: root joint index (0 for Human3.6M, 14 for 3DHP).
      project_fn: projection for JPMA (default ``camera.project_to_2d``).
      keypoints: the layout of the model's 2D input (``'coco'``: converted for JPMA).
      protocols: the result keys to compute, of ``'mpjpe_mm'`` and ``'p_mpjpe_mm'``
        (the 3DHP protocol takes Protocol 1 from :class:`MPI3DHPTables`).
      frame_weights: ``batch -> [b, F]`` weights the errors average over (and P-Best in
        mode 'reference' chooses over); default the batch's ``weights``.

    Results: ``mpjpe_mm`` / ``p_mpjpe_mm`` map ``j_best``, ``p_best``, ``p_agg``,
    ``j_agg`` to the action-averaged value at the last iteration; ``per_iteration``
    holds every k, ``per_action`` every action (with its weighted frame count), and
    ``num_frames_weighted`` the frames counted. Frames count with the batches' weights.
    """

    def __init__(
        self,
        *,
        mode: str = "reference",
        root: int = 0,
        project_fn: Callable | None = None,
        keypoints: str = "h36m",
        protocols: Sequence[str] = tuple(p for p, _ in PROTOCOLS),
        frame_weights: Callable[[Batch], np.ndarray] | None = None,
    ) -> None:
        _checks.check_choice("H36MTables", "mode", mode, metrics.MODES)
        for p in protocols:
            _checks.check_choice("H36MTables", "protocol", p, tuple(dict(PROTOCOLS)))
        self.mode, self.root, self.project_fn = mode, root, project_fn
        self.protocols = tuple((p, a) for p, a in PROTOCOLS if p in protocols)
        self.frame_weights = frame_weights
        self.keypoints = keypoints
        self._tables: dict[tuple[str, str], metrics.ActionTable] = {}
        self._frames = 0.0

    def protocol(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "oracle_metrics": list(metrics.ORACLE_METRICS),
            "labels": {m: metrics.metric_label(m) for m in metrics.HYPOTHESIS_METRICS},
        }

    def add(self, batch: Batch) -> None:
        weights = batch.weights
        if self.frame_weights is not None:
            weights = np.asarray(self.frame_weights(batch), np.float32)
            if not weights.any():
                return
        for protocol, procrustes in self.protocols:
            he = metrics.multi_hypothesis_errors(
                batch.pred,
                batch.gt,
                mode=self.mode,
                procrustes=procrustes,
                root=self.root,
                weights=weights,
                project_fn=self.project_fn,
                **batch.jpma_inputs(self.keypoints),
            )
            frames = float(he.num_frames)
            for metric, err in he.errors.items():
                key = (protocol, metric)
                self._tables[key] = metrics.accumulate_by_action(
                    np.asarray(np.asarray(err) * 1000.0, np.float64)[None],
                    [batch.action],
                    counts=[frames],
                    table=self._tables.get(key),
                )
        self._frames += float(weights.sum())

    def results(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "num_frames_weighted": self._frames,
            "per_iteration": {},
            "per_action": {},
        }
        for (protocol, metric), table in sorted(self._tables.items()):
            means, avg = metrics.action_means(table)
            out["per_iteration"].setdefault(protocol, {})[metric] = [float(v) for v in avg]
            out.setdefault(protocol, {})[metric] = float(avg[-1])
            for action, vals in means.items():
                entry = out["per_action"].setdefault(action, {"frames": float(table[action][1])})
                entry.setdefault(protocol, {})[metric] = [float(v) for v in vals]
        return out


class MeanPoseBaseline(Evaluator):
    """MPJPE (mm) of one fixed pose, e.g. the training split's mean, action-averaged.

    Args:
      pose: ``[J, 3]`` root-relative pose in metres, predicted for every frame.
      root: root joint index; the ground truth's root slot is zeroed.

    Results: ``baseline_mean_pose_mpjpe_mm`` (absent when no batch was added).
    """

    def __init__(self, pose: np.ndarray, *, root: int = 0) -> None:
        self.pose = np.asarray(pose, np.float32)
        self.root = root
        self._table: metrics.ActionTable = {}

    def add(self, batch: Batch) -> None:
        base = np.broadcast_to(self.pose, batch.gt.shape)
        gt = batch.gt.copy()
        gt[..., self.root, :] = 0.0
        err = float(metrics.mpjpe(base, gt, weights=batch.weights)) * 1000.0
        self._table = metrics.accumulate_by_action(
            [err], [batch.action], counts=[float(batch.weights.sum())], table=self._table
        )

    def results(self) -> dict[str, Any]:
        if not self._table:
            return {}
        _, avg = metrics.action_means(self._table)
        return {"baseline_mean_pose_mpjpe_mm": float(np.asarray(avg).reshape(-1)[0])}
