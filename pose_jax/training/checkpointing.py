"""Orbax checkpoints holding the train state, the data iterator and the config.

A run killed at any step resumes from its last checkpoint to the same
parameters an uninterrupted run reaches: the state carries its own base key
(per-step keys are ``fold_in(rng, step)``) and the grain iterator's position is
saved beside it. Paths may be local or remote (``gs://...``) through etils; local
ones are made absolute here (orbax refuses relative paths).

A damaged newest checkpoint (truncated or zeroed array files, a broken
``_METADATA``) does not end a run: :func:`restore_newest` falls back to the newest
checkpoint that restores and reports which ones it skipped and why.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from pose_jax.errors import InputError
from pose_jax.training.train_state import TrainState


def _to_savable(state: TrainState) -> TrainState:
    # Typed PRNG keys are stored as their raw uint32 data.
    return state.replace(rng=jax.random.key_data(state.rng))


def _from_savable(state: TrainState, like: TrainState) -> TrainState:
    impl = jax.random.key_impl(like.rng)
    return state.replace(rng=jax.random.wrap_key_data(state.rng, impl=impl))


def make_checkpoint_manager(
    directory: str | epath.Path,
    *,
    max_to_keep: int | None = 3,
    save_interval_steps: int = 1,
    with_data_iterator: bool = True,
) -> ocp.CheckpointManager:
    """A CheckpointManager with items ``state``, ``config`` and (optionally) ``data_iter``."""
    names = ("state", "config") + (("data_iter",) if with_data_iterator else ())
    directory = os.fspath(directory)
    if "://" not in directory:
        directory = os.path.abspath(os.path.expanduser(directory))
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        save_interval_steps=save_interval_steps,
        create=True,
        enable_async_checkpointing=False,
    )
    return ocp.CheckpointManager(epath.Path(directory), item_names=names, options=options)


def save(
    manager: ocp.CheckpointManager,
    step: int,
    state: TrainState,
    *,
    config: dict | None = None,
    data_iter: Any = None,
    force: bool = False,
) -> bool:
    """Saves one checkpoint at ``step``; returns whether it was written."""
    items: dict[str, Any] = {
        "state": ocp.args.StandardSave(_to_savable(state)),
        "config": ocp.args.JsonSave(json.loads(json.dumps(config or {}, default=str))),
    }
    if data_iter is not None:
        import grain

        items["data_iter"] = grain.checkpoint.CheckpointSave(data_iter)
    saved = manager.save(step, args=ocp.args.Composite(**items), force=force)
    manager.wait_until_finished()
    return saved


def restore(
    manager: ocp.CheckpointManager,
    like: TrainState,
    *,
    step: int | None = None,
    data_iter: Any = None,
) -> tuple[TrainState, dict] | None:
    """Restores ``step`` (default: latest) into the structure and shardings of ``like``.

    ``data_iter``, when given, is moved to the saved position in place.

    Returns:
      ``(state, config)`` or ``None`` when the directory holds no checkpoint.
    """
    step = manager.latest_step() if step is None else step
    if step is None:
        return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _to_savable(like))
    items: dict[str, Any] = {
        "state": ocp.args.StandardRestore(abstract),
        "config": ocp.args.JsonRestore(),
    }
    if data_iter is not None:
        import grain

        items["data_iter"] = grain.checkpoint.CheckpointRestore(data_iter)
    out = manager.restore(step, args=ocp.args.Composite(**items))
    return _from_savable(out["state"], like), dict(out["config"] or {})


class CheckpointRestoreError(InputError, RuntimeError):
    """No checkpoint of a directory could be restored (each step's reason listed)."""


@dataclasses.dataclass(frozen=True)
class Restored:
    """What :func:`restore_newest` found: the state, its config and what was skipped."""

    state: TrainState
    config: dict
    step: int
    skipped: tuple[tuple[int, str], ...] = ()


def _reason(error: BaseException) -> str:
    """One line for a restore failure (orbax/tensorstore messages run to pages)."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}{'...' if len(text) > 300 else ''}"


def restore_newest(
    manager: ocp.CheckpointManager, like: TrainState, *, data_iter: Any = None
) -> Restored | None:
    """Restores the newest checkpoint that restores, newest first.

    Orbax and tensorstore raise many exception types for a damaged file, so every
    failure of one step is caught, recorded and the next older step tried.

    Returns:
      A :class:`Restored`, or ``None`` when the directory holds no checkpoint.

    Raises:
      CheckpointRestoreError: checkpoints exist but none restores; names every step
        and why it failed (never a silent start from scratch).
    """
    steps = sorted(manager.all_steps(), reverse=True)
    skipped: list[tuple[int, str]] = []
    for step in steps:
        try:
            out = restore(manager, like, step=step, data_iter=data_iter)
        except Exception as e:
            skipped.append((step, _reason(e)))
            continue
        return Restored(out[0], out[1], step, tuple(skipped))
    if not steps:
        return None
    lines = "\n".join(f"  step {s}: {r}" for s, r in skipped)
    raise CheckpointRestoreError(
        f"restore: none of the checkpoints in {manager.directory} restores:\n{lines}\n"
        "If the run's model or frame count changed, use the config it was trained with; "
        "otherwise the files are damaged (move them away to start from scratch)."
    )


def read_config(manager: ocp.CheckpointManager) -> tuple[int, dict] | None:
    """``(step, config)`` of the newest checkpoint whose config item reads, else ``None``."""
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            out = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
        except Exception:
            continue
        return step, dict(out["config"] or {})
    return None


def set_aside(manager: ocp.CheckpointManager, steps: list[int]) -> list[epath.Path]:
    """Renames damaged step directories to ``unreadable_<step>`` (nothing is deleted).

    Later saves of the resumed run would otherwise collide with the damaged steps.
    Call on one process; returns the new paths.
    """
    moved = []
    root = epath.Path(manager.directory)
    for step in steps:
        src = root / str(step)
        if src.exists():
            dst = root / f"unreadable_{step}"
            n = 1
            while dst.exists():
                dst, n = root / f"unreadable_{step}_{n}", n + 1
            src.rename(dst)
            moved.append(dst)
    manager.reload()
    return moved
