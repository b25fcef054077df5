"""MPI-INF-3DHP tables: PCK, AUC and MPJPE per sequence, per activity and over all frames.

The protocol is that of the test set's MATLAB evaluation (``mpii_test_predictions*.m``,
``mpii_evaluate_errors.m``, ``mpii_compute_3d_pck.m``), run by D3DP's 3dhp_test/test_util
on the per-frame poses its main_3dhp.py writes: every *valid* frame counts once, GT =
``annot3`` minus its pelvis (joint 14), PCK = share of the 14 scored joints (head_top,
neck, shoulders, elbows, wrists, hips, knees, ankles) with error strictly below 150 mm,
AUC = mean PCK over the thresholds 0, 5, ..., 150 mm (strict ``<``), MPJPE over all 17
joints, in mm; a sequence or activity table pools its frames; the headline is the
unweighted mean of the six per-sequence values.

What each setting reproduces (``mode`` = ``eval.hypothesis_aggregation``, the batch's
``weighting`` = ``eval.frame_weighting``):

* Frames. 'reference': a frame covered by two windows is scored with the *last*
  window's prediction (``reference_mask``; D3DP's ``pose_post_process`` writes the last
  window over the overlap). 'exact': with the first window's (``mask``). Either way
  each valid frame counts once.
* P-Best. mode 'reference' with weighting 'reference' (D3DP): per DDIM iteration one
  hypothesis for the whole evaluation batch (``eval.batch_size``, 2 in D3DP), the one
  with the lowest error averaged over *every* slot of the batch's windows -- invalid
  frames, the overlap and the right padding of a short sequence included. mode
  'reference' with weighting 'exact': per batch, averaged over the counted (valid,
  once-counted) frames only. mode 'per_pose': the best hypothesis of every frame.
* J-Best (per joint the nearest hypothesis), P-Agg (the mean over hypotheses) and
  J-Agg (JPMA, ``metrics.jpma_select``) do not depend on these settings.

Errors are computed and compared with the thresholds in float64 millimetres from the
float32 poses, so that an error exactly at a threshold never counts as below it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from pose_jax import _checks, metrics
from pose_jax.evaluation.base import Batch, Evaluator

#: Names of the ``activity`` codes 1..7 of the 3DHP test set (0: not annotated).
MPI_INF_3DHP_ACTIVITIES = (
    "Unknown", "Standing/Walking", "Exercising", "Sitting", "Reaching/Crouching",
    "On The Floor", "Sports", "Miscellaneous",
)  # fmt: skip
_NUMBERS = ("pck", "auc", "mpjpe")
_THRESHOLDS = np.asarray(metrics.AUC_THRESHOLDS_MM, np.float64)  # 150 mm is the last one
_SCORED = list(metrics.PCK_JOINTS_3DHP)


def _activity_name(code: int) -> str:
    ok = 0 <= code < len(MPI_INF_3DHP_ACTIVITIES)
    return MPI_INF_3DHP_ACTIVITIES[code] if ok else str(code)


def counted_frames(batch: Batch) -> np.ndarray:
    """``[b, F]`` bool: the frames the 3DHP tables score (valid, each frame once).

    Weighting 'reference': from the last window covering the frame (the window dict's
    ``reference_mask``); 'exact': from the first (``mask``).
    """
    key = "reference_mask" if batch.weighting == "reference" else "mask"
    if key not in batch.window:
        raise ValueError(
            f"MPI-INF-3DHP tables: the windows of sequence {batch.action!r} have no {key!r} "
            f"(keys {sorted(batch.window)}); expected the [N, F] bool masks of "
            "pose_jax.windows.eval_windows (data_pipelines.input_pipeline.make_eval_windows)."
        )
    counted = batch.rows_of(key).astype(bool)
    if "valid" in batch.window:
        counted &= batch.rows_of("valid").astype(bool)
    return counted


def _pick_weights(batch: Batch, mode_is_reference: bool, counted: np.ndarray) -> np.ndarray:
    """``[b, F]`` weights P-Best's batch-wide choice averages over (see the module doc)."""
    if mode_is_reference and batch.weighting == "reference":
        return batch.rows_of("reference_weight").astype(np.float64)  # every real slot
    return counted.astype(np.float64)


def hypothesis_errors_mm(pred: np.ndarray, gt: np.ndarray, root: int) -> np.ndarray:
    """float64 per-joint errors (mm, roots zeroed): ``[b, K, H, F, J, 3]`` m -> ``[b, K, H, F, J]``.

    The ground truth ``gt [b, F, J, 3]`` in metres too; mm = float64(m) * 1000, as the
    MATLAB evaluation gets them when the poses are written in mm.
    """
    p = np.asarray(pred, np.float64) * 1000.0
    g = np.asarray(gt, np.float64) * 1000.0
    p[..., root, :] = 0.0
    g[..., root, :] = 0.0
    d = p - g[:, None, None]
    return np.sqrt(np.sum(d * d, axis=-1))


def _pose_errors_mm(pose: np.ndarray, gt: np.ndarray, root: int) -> np.ndarray:
    """float64 per-joint errors in mm of ``[b, K, F, J, 3]`` poses (metres or float64 mm/1000)."""
    return hypothesis_errors_mm(pose[:, :, None], gt, root)[:, :, 0]


def _p_best(per_joint: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    """P-Best's ``[b, K, F, J]``: per k one hypothesis for the batch, or per frame.

    ``weights [b, F]``: the slots the batch-wide choice averages over; None: per frame.
    """
    per_pose = per_joint.mean(axis=-1)  # [b, K, H, F]
    if weights is None:
        pick = per_pose.argmin(axis=2)[:, :, None, :, None]  # [b, K, 1, F, 1]
        return np.take_along_axis(per_joint, pick, axis=2)[:, :, 0]
    w = weights[:, None, None, :]
    total = max(float(weights.sum()), np.finfo(np.float64).tiny)
    score = (per_pose * w).sum(axis=(0, 3)) / total  # [K, H]
    pick = score.argmin(axis=1)  # [K]
    return per_joint[:, np.arange(per_joint.shape[1]), pick]


def _j_agg(batch: Batch, root: int, project_fn: Callable | None) -> np.ndarray:
    """J-Agg's ``[b, K, F, J]`` errors: the JPMA pose of every (clip, k), measured in float64."""
    b, k, h, f, j, _ = batch.pred.shape
    hyps = batch.pred.copy()
    hyps[..., root, :] = 0.0
    inputs = batch.jpma_inputs()
    pose = metrics.jpma_select(
        hyps.reshape(b * k, h, f, j, 3),
        np.repeat(inputs["inputs_2d"], k, axis=0),
        np.repeat(inputs["traj"], k, axis=0),
        np.repeat(inputs["intrinsics"], k, axis=0),
        project_fn=project_fn,
    )
    return _pose_errors_mm(np.asarray(pose).reshape(b, k, f, j, 3), batch.gt, root)


def selected_errors_mm(
    batch: Batch,
    *,
    mode: str,
    root: int,
    counted: np.ndarray,
    project_fn: Callable | None = None,
) -> dict[str, np.ndarray]:
    """Per-joint float64 errors (mm) of the pose each aggregation selects: ``{m: [b, K, F, J]}``."""
    per_joint = hypothesis_errors_mm(batch.pred, batch.gt, root)  # [b, K, H, F, J]
    reference = mode == "reference"
    weights = _pick_weights(batch, reference, counted) if reference else None
    mean_pose = batch.pred.astype(np.float64).mean(axis=2)  # [b, K, F, J, 3]
    return {
        "j_best": per_joint.min(axis=2),
        "p_best": _p_best(per_joint, weights),
        "p_agg": _pose_errors_mm(mean_pose, batch.gt, root),
        "j_agg": _j_agg(batch, root, project_fn),
    }


class _Totals:
    """Per group: counted frames, per-joint error sums ``[K, 17]``, PCK-curve hits ``[K, 31]``."""

    def __init__(self, num_k: int) -> None:
        self.frames = 0
        self.error_sum = np.zeros((num_k, 17), np.float64)
        self.hits = np.zeros((num_k, len(_THRESHOLDS)), np.int64)

    def add(self, errors: np.ndarray, sel: np.ndarray) -> None:
        """``errors [b, K, F, 17]`` mm of the frames ``sel [b, F]``."""
        e = np.moveaxis(errors, 1, 0)[:, sel]  # [K, n, 17]
        self.frames += int(sel.sum())
        self.error_sum += e.sum(axis=1)
        scored = e[:, :, _SCORED, None]  # [K, n, 14, 1]
        self.hits += (scored < _THRESHOLDS).sum(axis=(1, 2))

    def numbers(self) -> dict[str, Any]:
        """MATLAB's numbers: PCK/AUC pooled over the 14 joints, MPJPE = mean of per-joint means."""
        curve = self.hits / float(len(_SCORED) * self.frames)  # [K, 31]
        mpjpe = (self.error_sum / self.frames).mean(axis=1)
        return {
            "pck": [float(v) for v in 100.0 * curve[:, -1]],
            "auc": [float(v) for v in 100.0 * curve.mean(axis=1)],
            "mpjpe": [float(v) for v in mpjpe],
            "frames": self.frames,
        }


class MPI3DHPTables(Evaluator):
    """The 3DHP tables of the pose each aggregation selects, at every iteration k.

    Groups: the sequence (the windows' ``subject``, 'TS1'..'TS6'), every activity of
    the windows' ``activity [N, F]`` (groups without a counted frame are left out) and
    all frames. Which frames count and how P-Best chooses: see the module docstring.

    Args:
      mode: 'reference' or 'per_pose' (``eval.hypothesis_aggregation``).
      root: root joint index (14 in the 3DHP-17 layout).
      project_fn: projection for JPMA (default ``camera.project_to_2d``).

    Results: ``mpi_inf_3dhp[metric]`` with ``per_sequence``, ``per_activity``,
    ``all_frames`` (each group ``{'pck': [K], 'auc': [K], 'mpjpe': [K], 'frames': n}``)
    and ``sequence_average`` (unweighted mean over the sequences: the paper's numbers);
    and the headline Protocol-1 entries: ``mpjpe_mm[metric]`` (the sequence average at
    the last iteration), ``per_iteration['mpjpe_mm']`` and ``per_action[a]['mpjpe_mm']``
    (the sequences' MPJPE; an action is the sequence's action class, 'TS1'..'TS6').
    """

    def __init__(
        self, *, mode: str = "reference", root: int = 14, project_fn: Callable | None = None
    ) -> None:
        _checks.check_choice("MPI3DHPTables", "mode", mode, metrics.MODES)
        self.mode, self.root, self.project_fn = mode, root, project_fn
        self._totals: dict[tuple[str, str], dict[str, _Totals]] = {}  # group -> metric -> totals

    def _groups(self, batch: Batch, counted: np.ndarray) -> list[tuple[tuple[str, str], Any]]:
        sequence = str(batch.window.get("subject", "sequence"))
        groups = [(("sequence", sequence), counted), (("action", batch.action), counted)]
        groups.append((("all", "All"), counted))
        if "activity" in batch.window:
            activity = batch.rows_of("activity")
        else:
            activity = np.zeros(counted.shape, int)
        for a in np.unique(activity[counted]):
            groups.append((("activity", _activity_name(int(a))), counted & (activity == a)))
        return groups

    def add(self, batch: Batch) -> None:
        counted = counted_frames(batch)
        if not counted.any():
            return
        errors = selected_errors_mm(
            batch, mode=self.mode, root=self.root, counted=counted, project_fn=self.project_fn
        )
        for group, sel in self._groups(batch, counted):
            per_metric = self._totals.setdefault(group, {})
            for metric, e in errors.items():
                per_metric.setdefault(metric, _Totals(e.shape[1])).add(e, sel)

    def results(self) -> dict[str, Any]:
        if not self._totals:
            return {}
        kinds: dict[str, dict[str, dict[str, Any]]] = {}
        for (kind, name), per_metric in sorted(self._totals.items()):
            for metric, totals in per_metric.items():
                kinds.setdefault(metric, {}).setdefault(kind, {})[name] = totals.numbers()
        tables = {metric: _summarise(groups) for metric, groups in sorted(kinds.items())}
        return {"mpi_inf_3dhp": tables, **_headline(kinds)}


def _mean_over(groups: dict[str, dict[str, Any]], number: str) -> list[float]:
    """Unweighted mean over the groups of one ``[K]`` number."""
    return [float(v) for v in np.mean([g[number] for g in groups.values()], axis=0)]


def _summarise(groups: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One metric's blocks of ``results['mpi_inf_3dhp']``, adding the sequence average."""
    seqs = groups.get("sequence", {})
    return {
        "per_sequence": seqs,
        "per_activity": groups.get("activity", {}),
        "all_frames": groups.get("all", {}).get("All"),
        "sequence_average": {n: _mean_over(seqs, n) for n in _NUMBERS} if seqs else {},
    }


def _headline(kinds: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """``mpjpe_mm``, ``per_iteration['mpjpe_mm']``, ``per_action[a]['mpjpe_mm']`` (paper MPJPE)."""
    out: dict[str, Any] = {"mpjpe_mm": {}, "per_iteration": {"mpjpe_mm": {}}, "per_action": {}}
    for metric, groups in kinds.items():
        actions = groups["action"]
        average = _mean_over(actions, "mpjpe")
        out["per_iteration"]["mpjpe_mm"][metric] = average
        out["mpjpe_mm"][metric] = average[-1]
        for action, numbers in actions.items():
            entry = out["per_action"].setdefault(action, {"mpjpe_mm": {}})
            entry["mpjpe_mm"][metric] = numbers["mpjpe"]
    return out
