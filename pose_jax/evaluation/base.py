"""The contract between the sampling loop and the evaluators.

:func:`pose_jax.evaluation.run` turns every ``sample_fn`` call into a :class:`Batch`
and hands it to each :class:`Evaluator`; an evaluator accumulates what it needs and,
at the end, returns its block of the results dict.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from pose_jax import skeleton as skeleton_lib


@dataclasses.dataclass(frozen=True)
class Batch:
    """One ``sample_fn`` call: its clips, their ground truth and the predictions (numpy).

    Attributes:
      window: the sequence's window dict, padded to a multiple of the batch size
        (padded windows have zero ``reference_weight``, ``mask`` and ``valid``).
      rows: the windows of ``window`` this batch holds.
      sequence_index: position of the sequence in the evaluated stream.
      batch_index: position of the batch in its sequence.
      action: the sequence's action class (the per-action tables group by it).
      pose_2d: ``[b, F, J, 2]`` the model's input.
      gt: ``[b, F, J, 3]`` ground truth (its root slot may hold the absolute root).
      traj: ``[b, F, 1, 3]`` ground-truth root position in camera coordinates.
      intrinsics: ``[b, 9]`` the clips' camera.
      weights: ``[b, F]`` frame weights under the run's weighting (times ``valid``).
      pred: ``[b, K, H, F, J, 3]`` hypotheses at every DDIM iteration, metres.
      weighting: the run's frame weighting, 'reference' or 'exact' (``evaluation.run``).
    """

    window: Mapping[str, Any]
    rows: slice
    sequence_index: int
    batch_index: int
    action: str
    pose_2d: np.ndarray
    gt: np.ndarray
    traj: np.ndarray
    intrinsics: np.ndarray
    weights: np.ndarray
    pred: np.ndarray
    weighting: str = "reference"

    def rows_of(self, key: str) -> np.ndarray:
        """The batch's rows of a per-window field of ``window`` (e.g. ``'mask'``)."""
        return np.asarray(self.window[key][self.rows])

    def jpma_inputs(self, keypoints: str = "") -> dict[str, np.ndarray]:
        """The J-Agg (JPMA) arguments of ``metrics.multi_hypothesis_errors``.

        ``keypoints``: the layout of ``pose_2d`` (empty: the skeleton's); COCO-17 input
        is compared with the reprojected Human3.6M-17 joints after
        ``skeleton.keypoints_to_h36m`` (D3DP's main_in_the_wild.py compares COCO and
        Human3.6M joints index by index).
        """
        inputs_2d = self.pose_2d
        if keypoints == "coco":  # the only 2D layout that differs from its 3D skeleton's
            inputs_2d = skeleton_lib.keypoints_to_h36m(inputs_2d, "coco")
        return {"inputs_2d": inputs_2d, "traj": self.traj, "intrinsics": self.intrinsics}


class Evaluator(abc.ABC):
    """Accumulates results over batches; one instance per evaluation run."""

    @abc.abstractmethod
    def add(self, batch: Batch) -> None:
        """Takes one batch of predictions into account."""

    @abc.abstractmethod
    def results(self) -> dict[str, Any]:
        """This evaluator's top-level entries of the results dict."""

    def protocol(self) -> dict[str, Any]:
        """Entries this evaluator adds to ``results['protocol']`` (default: none)."""
        return {}
