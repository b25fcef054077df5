"""Orbax checkpoints holding the train state, the data iterator and the config.

A run killed at any step resumes from its last checkpoint to the same
parameters an uninterrupted run reaches: the state carries its own base key
(per-step keys are ``fold_in(rng, step)``) and the grain iterator's position is
saved beside it. Paths may be local or remote (``gs://...``) through etils.
"""

from __future__ import annotations

import json
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

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
