"""Evaluation windows of a sequence, and their inverse (D3DP ``eval_data_prepare``).

Shared by the evaluation input pipeline (``data_pipelines.transforms`` re-exports
these) and by :mod:`pose_jax.lift`, which cuts users' sequences the same way.
"""

from __future__ import annotations

import numpy as np


def eval_windows(length: int, window: int) -> dict[str, np.ndarray]:
    """Evaluation windows of one sequence (D3DP ``eval_data_prepare``).

    ``n = ceil(L / F)`` windows: ``[i F, (i + 1) F)`` for ``i < n - 1`` and a last
    window holding the final ``F`` frames, which overlaps the one before unless
    ``F`` divides ``L``; a sequence shorter than ``F`` is one window, right-padded
    by repeating its last frame.

    Args:
      length: sequence length L (>= 1).
      window: F (>= 1).

    Returns:
      A dict with

      * ``frame_index``: ``[n, F]`` int64 source frame of every window slot;
      * ``reference_weight``: ``[n, F]`` float32 ones. The reference averages its
        errors with weight ``n F`` per sequence: frames in the overlap count twice
        and replicated padding counts too (L=1000, F=243: 5 windows, 1215 frames);
      * ``mask``: ``[n, F]`` bool, True exactly once for every real frame
        (overlaps and padding False), so ``mask.sum() == L``: exact per-frame weights,
        each frame taken from the *first* window that covers it;
      * ``reference_mask``: ``[n, F]`` bool, also True once per real frame, but from
        the *last* window covering it: D3DP's ``pose_post_process`` (main_3dhp.py)
        writes window ``i`` to frames ``[i F, (i + 1) F)`` and then the last window
        to the final ``F`` frames, over the overlap, so the per-frame predictions
        MATLAB scores on MPI-INF-3DHP are the last window's;
      * ``padding``: ``[n, F]`` bool, True on replicated slots past the end.
    """
    if length < 1 or window < 1:
        raise ValueError(f"eval_windows: need length >= 1 and window >= 1; got {length}, {window}.")
    n = -(-length // window)
    starts = np.arange(n, dtype=np.int64) * window
    starts[-1] = max(length - window, 0)
    raw = starts[:, None] + np.arange(window)[None, :]
    padding = raw >= length
    mask = ~padding
    # The last window re-covers frames the previous windows already own.
    mask[-1] &= raw[-1] >= (n - 1) * window
    # ... or the last window overwrites the frames of the earlier ones it re-covers.
    reference_mask = ~padding
    reference_mask[:-1] &= raw[:-1] < starts[-1]
    return {
        "frame_index": np.minimum(raw, length - 1),
        "reference_weight": np.ones((n, window), np.float32),
        "mask": mask,
        "reference_mask": reference_mask,
        "padding": padding,
    }


def merge_windows(
    values: np.ndarray, frame_index: np.ndarray, mask: np.ndarray, length: int
) -> np.ndarray:
    """Per-frame values ``[L, ...]`` from per-window values ``[n, F, ...]``.

    Inverse of windowing: each real frame is taken from the one window slot where
    ``mask`` is True (``eval_windows``' ``mask``: the first window covering the
    frame; its ``reference_mask``: the last one, as D3DP merges them).
    """
    values = np.asarray(values)
    out = np.zeros((length, *values.shape[2:]), values.dtype)
    out[frame_index[mask]] = values[mask]
    return out
