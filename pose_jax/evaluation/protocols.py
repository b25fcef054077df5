"""Which evaluators a dataset's protocol gets, and the one-call entry point.

'h36m': the Human3.6M multi-hypothesis tables. '3dhp': the MPI-INF-3DHP tables
(``results['mpi_inf_3dhp']``), which also give the headline Protocol 1
(``mpjpe_mm``: the MATLAB protocol's sequence-average MPJPE), plus the Human3.6M
tables' Protocol 2 over the same frames. Both keep an example for the plots and,
given a mean training pose, the mean-pose baseline.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import numpy as np

from pose_jax import _checks, skeleton
from pose_jax.evaluation.base import Evaluator
from pose_jax.evaluation.h36m import H36MTables, MeanPoseBaseline
from pose_jax.evaluation.mpi_3dhp import MPI3DHPTables, counted_frames
from pose_jax.evaluation.plot_example import PlotExample
from pose_jax.evaluation.runner import SampleFn, run

#: Protocols of :func:`evaluators_for`: the skeleton layouts of our datasets.
DATASET_PROTOCOLS = ("h36m", "3dhp")


def evaluators_for(
    protocol: str,
    *,
    mode: str = "reference",
    root: int | None = None,
    baseline_pose: np.ndarray | None = None,
    project_fn: Callable | None = None,
    keypoints: str = "h36m",
) -> list[Evaluator]:
    """Fresh evaluators for one run under a dataset's protocol.

    Args:
      protocol: 'h36m' or '3dhp' (``input_pipeline.dataset_skeleton`` of the dataset).
      mode: 'reference' (D3DP-exact) or 'per_pose' (see ``metrics.multi_hypothesis_errors``).
      root: root joint index; default the protocol's skeleton root (0 or 14).
      baseline_pose: optional ``[J, 3]`` mean training pose; its MPJPE is reported
        as ``baseline_mean_pose_mpjpe_mm``.
      project_fn: projection for JPMA (default ``camera.project_to_2d``).
      keypoints: the layout of the model's 2D input (``'coco'``: converted for JPMA).

    Returns:
      ``[H36MTables, (MeanPoseBaseline,) (MPI3DHPTables,) PlotExample]``; for '3dhp'
      the H36MTables compute Protocol 2 only, over the frames the 3DHP tables count.
    """
    _checks.check_choice("evaluators_for", "protocol", protocol, DATASET_PROTOCOLS)
    if root is None:
        root = skeleton.get_skeleton(protocol).root
    tables: dict[str, Any] = {"mode": mode, "root": root, "project_fn": project_fn}
    if protocol == "3dhp":
        tables |= {"protocols": ("p_mpjpe_mm",), "frame_weights": counted_frames}
    evaluators: list[Evaluator] = [H36MTables(**tables, keypoints=keypoints)]
    if baseline_pose is not None:
        evaluators.append(MeanPoseBaseline(baseline_pose, root=root))
    if protocol == "3dhp":
        evaluators.append(MPI3DHPTables(mode=mode, root=root, project_fn=project_fn))
    evaluators.append(PlotExample())
    return evaluators


def evaluate_hypotheses(
    sample_fn: SampleFn,
    windows: Iterable[Mapping[str, Any]],
    *,
    key: jax.Array,
    batch_size: int = 4,
    mode: str = "reference",
    weighting: str = "reference",
    root: int = 0,
    max_sequences: int = 0,
    baseline_pose: np.ndarray | None = None,
    project_fn: Callable | None = None,
    progress: bool = False,
    total_sequences: int | None = None,
    joint_tables: bool = False,
) -> dict[str, Any]:
    """:func:`run` with :func:`evaluators_for` ('3dhp' if ``joint_tables`` else 'h36m').

    The arguments are those of the two; ``joint_tables`` adds the MPI-INF-3DHP tables.

    Returns:
      A JSON-able dict: ``mpjpe_mm`` / ``p_mpjpe_mm`` map ``j_best``, ``p_best``,
      ``p_agg``, ``j_agg`` to the action-averaged value at the last iteration;
      ``per_iteration`` holds every k; ``per_action`` every action; plus
      ``protocol`` (H, K, mode, weighting, which metrics are oracles), optionally
      ``baseline_mean_pose_mpjpe_mm`` and ``mpi_inf_3dhp``, and an ``example`` (one
      window's hypotheses, for plots; not JSON-written).
    """
    evaluators = evaluators_for(
        "3dhp" if joint_tables else "h36m",
        mode=mode,
        root=root,
        baseline_pose=baseline_pose,
        project_fn=project_fn,
    )
    return run(
        sample_fn,
        windows,
        evaluators=evaluators,
        key=key,
        batch_size=batch_size,
        weighting=weighting,
        max_sequences=max_sequences,
        progress=progress,
        total_sequences=total_sequences,
    )
