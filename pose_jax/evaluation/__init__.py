"""Protocol tables from predictions: per action, per iteration k, P1/P2 for every aggregation.

Modules, one job each:

* ``runner``: the sampling loop (:func:`run`): pads each sequence's windows to whole
  batches, calls ``sample_fn`` with ``fold_in(fold_in(key, s), i)``, checks its shape,
  shows the progress bar, and feeds every :class:`Batch` to the evaluators.
* ``base``: :class:`Batch` and the :class:`Evaluator` interface (``add``, ``results``).
* ``h36m``: :class:`H36MTables` (Human3.6M multi-hypothesis tables) and
  :class:`MeanPoseBaseline`.
* ``mpi_3dhp``: :class:`MPI3DHPTables` (MPI-INF-3DHP PCK/AUC/MPJPE tables as the
  official MATLAB evaluation gives them, and the 3DHP headline Protocol 1).
* ``plot_example``: :class:`PlotExample` (one window's hypotheses, for the plots).
* ``protocols``: :func:`evaluators_for` a dataset's protocol, and
  :func:`evaluate_hypotheses` (both in one call).
* ``reporting``: Markdown / CSV tables and :func:`write_results`.
"""

from pose_jax.evaluation.base import Batch, Evaluator
from pose_jax.evaluation.h36m import PROTOCOLS, H36MTables, MeanPoseBaseline
from pose_jax.evaluation.mpi_3dhp import MPI_INF_3DHP_ACTIVITIES, MPI3DHPTables
from pose_jax.evaluation.plot_example import PlotExample
from pose_jax.evaluation.protocols import DATASET_PROTOCOLS, evaluate_hypotheses, evaluators_for
from pose_jax.evaluation.reporting import csv_table, markdown_3dhp, markdown_table, write_results
from pose_jax.evaluation.runner import WEIGHTINGS, SampleFn, run, sequence_batches

__all__ = [
    "DATASET_PROTOCOLS",
    "MPI_INF_3DHP_ACTIVITIES",
    "PROTOCOLS",
    "WEIGHTINGS",
    "Batch",
    "Evaluator",
    "H36MTables",
    "MPI3DHPTables",
    "MeanPoseBaseline",
    "PlotExample",
    "SampleFn",
    "csv_table",
    "evaluate_hypotheses",
    "evaluators_for",
    "markdown_3dhp",
    "markdown_table",
    "run",
    "sequence_batches",
    "write_results",
]
