"""The evaluator that keeps one window's hypotheses for the plots."""

from __future__ import annotations

from typing import Any

from pose_jax.evaluation.base import Batch, Evaluator


class PlotExample(Evaluator):
    """The first clip of the first batch: ``results['example']`` (not written to JSON)."""

    def __init__(self) -> None:
        self._example: dict[str, Any] | None = None

    def add(self, batch: Batch) -> None:
        if self._example is None:
            self._example = {
                "pred": batch.pred[0],
                "gt": batch.gt[0],
                "pose_2d": batch.pose_2d[0],
                "action": batch.action,
            }

    def results(self) -> dict[str, Any]:
        return {"example": self._example}
