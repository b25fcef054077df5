"""The train state: a pytree of arrays only (no functions, no optimizer objects)."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training.

    Attributes:
      step: scalar int32, number of updates applied.
      params: model parameters.
      ema_params: exponential moving average of ``params`` (or ``None``).
      opt_state: optax state.
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
    """Builds the initial state from initialised params."""
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        ema_params=jax.tree.map(jnp.copy, params) if use_ema else None,
        opt_state=optimizer.init(params),
        rng=rng,
    )
