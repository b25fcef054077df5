"""The sampling loop: runs ``sample_fn`` over evaluation windows, feeding evaluators.

Windows are dicts as ``data_pipelines.input_pipeline.make_eval_windows`` yields them
(any iterable of such dicts works) and ``sample_fn`` maps 2D windows to hypotheses,
so the loop is independent of the model family and of the tables built.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from pose_jax import _checks, metrics
from pose_jax import sharding as sharding_lib
from pose_jax.evaluation.base import Batch, Evaluator

# sample_fn(pose_2d [b, F, J, 2], key, *, sequence) -> poses [b, K, H, F, J, 3] in metres;
# ``sequence`` is the window dict of the sequence being sampled (its metadata, e.g. the
# action class FinePOSE conditions on), so sample functions stay stateless.
SampleFn = Callable[[np.ndarray, jax.Array], Any]

#: ``weighting`` values: frames counted as the reference counts them, or each once.
WEIGHTINGS = ("reference", "exact")

# Per-window weights: zero on the copies that pad a sequence to whole batches.
_ZERO_WHEN_PADDED = ("reference_weight", "mask", "reference_mask", "valid")
# results.json has always listed the protocol block in this order.
_PROTOCOL_ORDER = ("num_hypotheses", "num_iterations", "mode", "weighting", "batch_size")


def _pad_windows(w: Mapping[str, Any], batch_size: int) -> dict[str, Any]:
    """Pads a sequence's windows to a multiple of ``batch_size`` with zero-weight copies.

    Every sampler and metric call then sees one batch shape, so each compiles once
    instead of once per distinct remainder; padded windows count for nothing. Every
    per-frame entry (an array shaped ``[N, F, ...]`` like ``pose_2d``, ``frame_index``
    included) is padded with copies of the last window; the weights with zeros.
    """
    n, f = (int(d) for d in np.shape(w["pose_2d"])[:2])
    extra = -n % batch_size
    if extra == 0:
        return dict(w)
    out = dict(w)
    for k, v in w.items():
        if isinstance(v, str) or np.shape(v)[:2] != (n, f):
            continue
        v = np.asarray(v)
        pad = np.repeat(v[-1:], extra, axis=0)
        if k in _ZERO_WHEN_PADDED:
            pad = np.zeros_like(pad)
        out[k] = np.concatenate([v, pad], axis=0)
    return out


def _window_weights(w: Mapping[str, Any], weighting: str) -> np.ndarray:
    base = w["reference_weight"] if weighting == "reference" else w["mask"]
    weights = np.asarray(base, np.float32)
    if "valid" in w:
        weights = weights * np.asarray(w["valid"], np.float32)
    return weights


def _progress_bar(show: bool, total: int | None):
    """A tqdm bar over sequences (stderr), or ``None`` when not shown."""
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="evaluate", unit="seq", dynamic_ncols=True, mininterval=1.0)


def _check_prediction(pred: np.ndarray, pose_2d: np.ndarray, gt: np.ndarray) -> None:
    if pred.ndim != 6 or pred.shape[0] != pose_2d.shape[0] or pred.shape[3:] != gt.shape[1:]:
        raise ValueError(
            f"evaluation.run: sample_fn returned shape {pred.shape}; expected "
            f"[b, K, H, F, J, 3] with b, F, J, 3 = {pose_2d.shape[0]}, "
            f"{', '.join(map(str, gt.shape[1:]))}."
        )


def sequence_batches(
    sample_fn: SampleFn,
    window: Mapping[str, Any],
    *,
    key: jax.Array,
    sequence_index: int,
    batch_size: int,
    weighting: str,
) -> Iterator[Batch]:
    """Samples one sequence's windows, ``batch_size`` clips per call; yields the batches.

    Batch ``i`` is sampled with ``fold_in(key, i)``; batches whose frames all have zero
    weight are skipped (not sampled, but they keep their index).
    """
    action = window.get("action_class_name") or metrics.canonical_action(window["action_name"])
    w = _pad_windows(window, batch_size)
    n = int(np.shape(w["pose_2d"])[0])
    weights_all = _window_weights(w, weighting)
    intrinsics = np.asarray(w["intrinsics"], np.float32)
    for i, lo in enumerate(range(0, n, batch_size)):
        rows = slice(lo, min(lo + batch_size, n))
        weights = weights_all[rows]
        if not weights.any():
            continue
        pose_2d = np.asarray(w["pose_2d"][rows], np.float32)
        gt = np.asarray(w["pose_3d"][rows], np.float32)
        pred = sample_fn(pose_2d, jax.random.fold_in(key, i), sequence=w)
        pred = sharding_lib.to_host(pred).astype(np.float32, copy=False)
        _check_prediction(pred, pose_2d, gt)
        yield Batch(
            window=w,
            rows=rows,
            sequence_index=sequence_index,
            batch_index=i,
            action=action,
            pose_2d=pose_2d,
            gt=gt,
            traj=np.asarray(w["traj"][rows], np.float32),
            intrinsics=np.broadcast_to(intrinsics, (pose_2d.shape[0], 9)),
            weights=weights,
            pred=pred,
            weighting=weighting,
        )


def run(
    sample_fn: SampleFn,
    windows: Iterable[Mapping[str, Any]],
    *,
    evaluators: Sequence[Evaluator],
    key: jax.Array,
    batch_size: int = 4,
    weighting: str = "reference",
    max_sequences: int = 0,
    progress: bool = False,
    total_sequences: int | None = None,
) -> dict[str, Any]:
    """Runs ``sample_fn`` over every window and collects the evaluators' results.

    Args:
      sample_fn: ``(pose_2d [b, F, J, 2], key, *, sequence) -> [b, K, H, F, J, 3]``
        metres; ``sequence`` is the current window dict (metadata such as ``action``).
      windows: per-sequence dicts with ``pose_2d [N, F, J, 2]``, ``pose_3d [N, F, J, 3]``
        (root-relative), ``traj [N, F, 1, 3]``, ``intrinsics [9]``, ``action_name``,
        ``reference_weight [N, F]``, ``mask [N, F]`` and optionally ``valid [N, F]``
        (and, for the 3DHP tables, ``subject`` and ``activity [N, F]``).
      evaluators: fresh evaluators (e.g. :func:`evaluators_for`); each gets every batch.
      key: base PRNG key; sequence ``s``, batch ``i`` uses ``fold_in(fold_in(key, s), i)``.
      batch_size: clips per ``sample_fn`` call (the reference's ``-b``; P-Best in
        'reference' mode is chosen once per such batch).
      weighting: 'reference' (frames of overlapping/padded windows counted as the
        reference does) or 'exact' (every frame once): the batches' ``weights``.
      max_sequences: evaluate only the first ones (0: all).
      progress: show a progress bar with ETA (sequences; ``total_sequences`` of them).
      total_sequences: how many sequences ``windows`` yields, for the bar's ETA.

    Returns:
      ``protocol`` (H, K, weighting, batch size and the evaluators' entries),
      ``num_sequences``, then every evaluator's :meth:`Evaluator.results` in order.
    """
    _checks.check_choice("evaluation.run", "weighting", weighting, WEIGHTINGS)
    if batch_size < 1:
        raise ValueError(f"evaluation.run: batch_size is {batch_size}; expected >= 1.")
    last, num_sequences = None, 0
    bar = _progress_bar(progress, total_sequences)
    try:
        for s, w in enumerate(windows):
            if max_sequences and s >= max_sequences:
                break
            for batch in sequence_batches(
                sample_fn,
                w,
                key=jax.random.fold_in(key, s),
                sequence_index=s,
                batch_size=batch_size,
                weighting=weighting,
            ):
                for evaluator in evaluators:
                    evaluator.add(batch)
                last = batch
            num_sequences += 1
            if bar is not None:
                bar.set_postfix_str(f"{w.get('subject', '')} {w['action_name']}", refresh=False)
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if last is None:
        raise ValueError("evaluation.run: no evaluation windows with non-zero weight were given.")
    return _collect(evaluators, last, num_sequences, weighting=weighting, batch_size=batch_size)


def _collect(
    evaluators: Sequence[Evaluator], last: Batch, num_sequences: int, **settings: Any
) -> dict[str, Any]:
    """The results dict: the protocol block, then each evaluator's entries."""
    protocol = {"num_hypotheses": last.pred.shape[2], "num_iterations": last.pred.shape[1]}
    protocol |= settings
    for evaluator in evaluators:
        protocol |= evaluator.protocol()
    rank = {k: i for i, k in enumerate(_PROTOCOL_ORDER)}
    protocol = dict(sorted(protocol.items(), key=lambda kv: rank.get(kv[0], len(rank))))
    results: dict[str, Any] = {"protocol": protocol, "num_sequences": num_sequences}
    for evaluator in evaluators:
        clash = _merge(results, evaluator.results())
        if clash:
            raise ValueError(
                f"evaluation.run: {type(evaluator).__name__} returns {clash}, which an "
                "earlier evaluator (or the run) already returned; pass each kind once."
            )
    return results


def _merge(into: dict[str, Any], block: Mapping[str, Any], path: str = "") -> list[str]:
    """Merges ``block`` into ``into``, dicts key by key; returns the clashing entries.

    Two evaluators may fill different keys of one dict (e.g. ``per_action[a]``: the
    3DHP tables' ``mpjpe_mm``, the Human3.6M tables' ``p_mpjpe_mm``), never the same one.
    """
    clash = []
    for key, value in block.items():
        name = f"{path}{key}"
        if key not in into:
            into[key] = value
        elif isinstance(into[key], dict) and isinstance(value, Mapping):
            clash += _merge(into[key], value, f"{name}.")
        else:
            clash.append(name)
    return sorted(clash)
