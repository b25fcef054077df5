"""The train state: a pytree of arrays only (no functions, no optimizer objects)."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from pose_jax import model_state


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training.

    Attributes:
      step: scalar int32, number of updates applied.
      params: model parameters; for a model with running state (BatchNorm), the
        stateful params ``{'params', 'batch_stats'}`` (:mod:`pose_jax.model_state`).
      ema_params: exponential moving average of ``params`` (or ``None``); running
        statistics are averaged too.
      opt_state: optax state of the trained weights (``model_state.weights(params)``).
      rng: typed base key; the key of update ``s`` is ``fold_in(rng, s)``, so a
        resumed run draws exactly what an uninterrupted one would.
    """

    step: jax.Array
    params: Any
    ema_params: Any
    opt_state: Any
    rng: jax.Array


def create_train_state(
    params: Any, optimizer: optax.GradientTransformation, rng: jax.Array, *, use_ema: bool
) -> TrainState:
    """Builds the initial state from initialised params (the optimizer sees only the weights)."""
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        ema_params=jax.tree.map(jnp.copy, params) if use_ema else None,
        opt_state=optimizer.init(model_state.weights(params)),
        rng=rng,
    )
