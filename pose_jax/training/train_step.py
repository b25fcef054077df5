"""One jitted update: loss, gradient (optionally D3DP's L*grad L), optimizer, EMA."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from pose_jax import _checks, model_state
from pose_jax.training.train_state import TrainState

# loss_fn(params, batch, rng) -> (scalar loss, dict of scalar metrics)
LossFn = Callable[[Any, dict, jax.Array], tuple[jax.Array, dict]]

GRADIENT_MODES = ("standard", "loss_times_grad")


def _tree_norm(tree: Any) -> jax.Array:
    """Global L2 norm of a pytree (``optax.global_norm`` is deprecated in recent optax)."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


def make_train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    *,
    ema_decay: float | None = None,
    gradient_mode: str = "standard",
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """Builds ``train_step(state, batch) -> (state, metrics)`` (pure; jit it with donation).

    Args:
      loss_fn: ``(params, batch, rng) -> (loss, metrics)``.
      optimizer: the optax transformation the state was created with.
      ema_decay: when set, ``ema <- decay * ema + (1 - decay) * params`` after each update.
      gradient_mode: ``'standard'`` or ``'loss_times_grad'``: D3DP/FinePOSE call
        ``loss.backward(loss.detach())``, i.e. the gradient is ``L * grad L``
        (D3DP main.py); this option reproduces it exactly.

    Returns:
      The update function. ``metrics`` holds ``loss``, ``grad_norm``, ``lr``-free
      scalars from ``loss_fn`` and ``step`` (the step *before* the update).

    Stateful params (``{'params', 'batch_stats'}``, :mod:`pose_jax.model_state`): only
    the weights are differentiated and updated; the running statistics become what
    the loss's training-mode forward pass recorded (unchanged when it recorded none).
    """
    _checks.check_choice("make_train_step", "gradient_mode", gradient_mode, GRADIENT_MODES)

    def objective(weights, running, batch, rng):
        with model_state.collect() as recorded:
            loss, aux = loss_fn(model_state.join(weights, running), batch, rng)
        return loss, (aux, recorded.state)

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        rng = jax.random.fold_in(state.rng, state.step)
        weights, running = model_state.split(state.params)
        (loss, (aux, new_running)), grads = jax.value_and_grad(objective, has_aux=True)(
            weights, running, batch, rng
        )
        if gradient_mode == "loss_times_grad":
            grads = jax.tree.map(lambda g: g * jax.lax.stop_gradient(loss), grads)
        updates, opt_state = optimizer.update(grads, state.opt_state, weights)
        weights = optax.apply_updates(weights, updates)
        if running is not None and new_running is not None:
            running = {**running, **new_running}
        params = model_state.join(weights, running)
        ema = state.ema_params
        if ema is not None:
            d = jnp.asarray(ema_decay if ema_decay is not None else 0.999, jnp.float32)
            ema = jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, ema, params)
        metrics = {"loss": loss, "grad_norm": _tree_norm(grads), "step": state.step, **aux}
        new_state = state.replace(
            step=state.step + 1, params=params, ema_params=ema, opt_state=opt_state
        )
        return new_state, metrics

    return train_step


def make_multi_step(
    train_step: Callable[[TrainState, dict], tuple[TrainState, dict]],
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """``k`` updates in one call: ``(state, batches [k, B, ...]) -> (state, metrics [k])``.

    A ``lax.scan`` of ``train_step`` over the leading axis: the same updates in the same
    order (each step's key is still ``fold_in(rng, step)``), with one dispatch, one
    input transfer and one allocation of XLA's temporary buffers per ``k`` steps.
    """

    def multi_step(state: TrainState, batches: dict) -> tuple[TrainState, dict]:
        return jax.lax.scan(train_step, state, batches)

    return multi_step
