"""MPI-INF-3DHP tables: PCK, AUC and MPJPE per sequence, per activity and over all frames.

The MATLAB protocol of the 3DHP test set (mpii_compute_3d_pck.m, run by D3DP's
3dhp_test/test_util on the poses its main_3dhp.py selects): every real, valid frame
counts once; PCK < 150 mm and AUC over the 14 scored joints, MPJPE over all 17, in mm;
the headline is the unweighted mean of the per-sequence values (D3DP's README).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pose_jax import _checks, metrics
from pose_jax.evaluation.base import Batch, Evaluator

#: Names of the ``activity`` codes 1..7 of the 3DHP test set (0: not annotated).
MPI_INF_3DHP_ACTIVITIES = (
    "Unknown", "Standing/Walking", "Exercising", "Sitting", "Reaching/Crouching",
    "On The Floor", "Sports", "Miscellaneous",
)  # fmt: skip
_NUMBERS = ("pck", "auc", "mpjpe")


def _numbers(errors_mm: jax.Array, weights: jax.Array) -> jax.Array:
    """``[b, F, 17]`` errors, ``[b, F]`` weights -> ``[3]``: PCK, AUC, MPJPE."""
    out = metrics.metrics_3dhp_from_errors(errors_mm, weights=weights)
    return jnp.stack([out[n] for n in _NUMBERS])


# errors [M, b, K, F, 17] (M aggregations, K iterations), weights [b, F] -> [M, K, 3].
_numbers_per_iteration = jax.jit(jax.vmap(jax.vmap(_numbers, in_axes=(1, None)), in_axes=(0, None)))


def _activity_name(code: int) -> str:
    ok = 0 <= code < len(MPI_INF_3DHP_ACTIVITIES)
    return MPI_INF_3DHP_ACTIVITIES[code] if ok else str(code)


class MPI3DHPTables(Evaluator):
    """The 3DHP tables of the pose each aggregation selects, at every iteration k.

    Groups: the sequence (the windows' ``subject``, 'TS1'..'TS6'), every activity of
    the windows' ``activity [N, F]`` and all frames. A frame counts when its ``mask``
    (and ``valid``) is set, whatever the run's weighting.

    Args:
      mode: 'reference' or 'per_pose' (see ``metrics.multi_hypothesis_joint_errors``).
      root: root joint index (14 in the 3DHP-17 layout).
      project_fn: projection for JPMA (default ``camera.project_to_2d``).

    Results: ``mpi_inf_3dhp[metric]`` with ``per_sequence``, ``per_activity``,
    ``all_frames`` (each group ``{'pck': [K], 'auc': [K], 'mpjpe': [K], 'frames': n}``)
    and ``sequence_average`` (unweighted mean over the sequences).
    """

    def __init__(
        self, *, mode: str = "reference", root: int = 14, project_fn: Callable | None = None
    ) -> None:
        _checks.check_choice("MPI3DHPTables", "mode", mode, metrics.MODES)
        self.mode, self.root, self.project_fn = mode, root, project_fn
        # metric -> group -> (sum of [K, 3] numbers x frames, frames)
        self._tables: dict[str, metrics.ActionTable] = {}

    def add(self, batch: Batch) -> None:
        counted = batch.rows_of("mask").astype(bool)
        if "valid" in batch.window:
            counted &= batch.rows_of("valid").astype(bool)
        if not counted.any():
            return
        per_joint = metrics.multi_hypothesis_joint_errors(
            batch.pred,
            batch.gt,
            mode=self.mode,
            root=self.root,
            weights=counted.astype(np.float32),
            project_fn=self.project_fn,
            **batch.jpma_inputs(),
        )
        names = sorted(per_joint)
        errors_mm = jnp.stack([per_joint[m] for m in names]) * 1000.0  # [M, b, K, F, 17]
        sequence = str(batch.window.get("subject", "sequence"))
        groups = [((sequence, "All"), counted)]
        if "activity" in batch.window:
            activity = batch.rows_of("activity")
        else:
            activity = np.zeros(counted.shape, int)
        for a in np.unique(activity[counted]):
            groups.append(((f"activity:{_activity_name(int(a))}",), counted & (activity == a)))
        for labels, sel in groups:
            numbers = np.asarray(_numbers_per_iteration(errors_mm, sel.astype(np.float32)))
            for m, metric in enumerate(names):
                for label in labels:
                    self._tables[metric] = metrics.accumulate_by_action(
                        numbers[m][None],
                        [label],
                        counts=[float(sel.sum())],
                        table=self._tables.get(metric),
                    )

    def results(self) -> dict[str, Any]:
        out = {}
        for metric in sorted(self._tables):
            table = self._tables[metric]
            means, _ = metrics.action_means(table)
            groups = {
                g: {n: [float(v) for v in means[g][:, i]] for i, n in enumerate(_NUMBERS)}
                | {"frames": table[g][1]}
                for g in sorted(means)
            }
            out[metric] = _summarise(groups)
        return {"mpi_inf_3dhp": out}


def _summarise(groups: dict[str, Any]) -> dict[str, Any]:
    """Splits the groups into the blocks of the results, adding the sequence average."""
    seqs = {g: v for g, v in groups.items() if g != "All" and not g.startswith("activity:")}
    average = {}
    if seqs:
        num_k = len(next(iter(seqs.values()))["pck"])
        average = {
            n: [float(np.mean([v[n][k] for v in seqs.values()])) for k in range(num_k)]
            for n in _NUMBERS
        }
    return {
        "per_sequence": seqs,
        "per_activity": {
            g.split(":", 1)[1]: v for g, v in groups.items() if g.startswith("activity:")
        },
        "all_frames": groups.get("All"),
        "sequence_average": average,
    }
