"""One jitted update: loss, gradient (optionally D3DP's L*grad L), optimizer, EMA."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from pose_jax import _checks, model_state
from pose_jax import sharding as sharding_lib
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
    microbatches: int = 1,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """Builds ``train_step(state, batch) -> (state, metrics)`` (pure; jit it with donation).

    Args:
      loss_fn: ``(params, batch, rng) -> (loss, metrics)``.
      optimizer: the optax transformation the state was created with.
      ema_decay: when set, ``ema <- decay * ema + (1 - decay) * params`` after each update.
      gradient_mode: ``'standard'`` or ``'loss_times_grad'``: D3DP/FinePOSE call
        ``loss.backward(loss.detach())``, i.e. the gradient is ``L * grad L``
        (D3DP main.py); this option reproduces it exactly.
      microbatches: compute the batch's loss and gradient in this many equal chunks
        (:func:`accumulated_value_and_grad`): the same gradient of the same batch, with
        each chunk's working set a fraction of the batch's (on a CPU, whose caches then
        hold it, the update is faster). The noise each chunk draws differs from the
        whole batch's draw (``fold_in(rng, chunk)``); 1 (default) is the plain step.

    Returns:
      The update function. ``metrics`` holds ``loss``, ``grad_norm``, ``lr``-free
      scalars from ``loss_fn`` and ``step`` (the step *before* the update).

    Stateful params (``{'params', 'batch_stats'}``, :mod:`pose_jax.model_state`): only
    the weights are differentiated and updated; the running statistics become what
    the loss's training-mode forward pass recorded (unchanged when it recorded none).
    """
    _checks.check_choice("make_train_step", "gradient_mode", gradient_mode, GRADIENT_MODES)
    if not isinstance(microbatches, int) or microbatches < 1:
        raise ValueError(f"make_train_step: microbatches={microbatches!r}; expected an int >= 1.")

    def objective(weights, running, batch, rng):
        with model_state.collect() as recorded:
            loss, aux = loss_fn(model_state.join(weights, running), batch, rng)
        return loss, (aux, recorded.state)

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        rng = jax.random.fold_in(state.rng, state.step)
        weights, running = model_state.split(state.params)
        if microbatches == 1:
            (loss, (aux, new_running)), grads = jax.value_and_grad(objective, has_aux=True)(
                weights, running, batch, rng
            )
        else:
            loss, aux, grads = accumulated_value_and_grad(
                objective, weights, running, batch, rng, microbatches
            )
            new_running = None
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


def accumulated_value_and_grad(
    objective: Callable, weights: Any, running: Any, batch: dict, rng: jax.Array, chunks: int
) -> tuple[jax.Array, dict, Any]:
    """``(loss, aux, grads)`` of ``objective`` on ``batch`` as the mean over ``chunks`` equal parts.

    ``objective(weights, running, batch, rng) -> (loss, (aux, recorded))`` with the loss a
    mean over the batch's samples (every system's is), so the mean of the parts' losses
    and gradients is the batch's. Part ``i`` holds samples ``i, i + chunks, ...`` (a
    device's shard of the batch splits into its own parts, no data moves between
    devices) and draws with ``fold_in(rng, i)``; a ``lax.scan`` over the parts sums the
    gradients. Models with running statistics (BatchNorm) are refused: their batch
    statistics would be the parts', not the batch's.
    """
    if running is not None:
        raise ValueError(
            f"make_train_step: microbatches={chunks}, but the model keeps running "
            f"statistics ({sorted(running)}, BatchNorm), whose batch statistics would be "
            "each chunk's, not the batch's; expected microbatches=1 for it."
        )
    sizes = {k: v.shape[0] for k, v in batch.items()}
    if any(size % chunks for size in sizes.values()):
        raise ValueError(
            f"make_train_step: microbatches={chunks} must divide the batch; its leading "
            f"sizes are {sizes}."
        )
    parts = sharding_lib.split_strided(batch, chunks)
    grad_fn = jax.value_and_grad(objective, has_aux=True)

    def part(i, chunk):
        (loss, (aux, _)), grads = grad_fn(weights, running, chunk, jax.random.fold_in(rng, i))
        return loss, aux, grads

    def add(total, xs):
        return jax.tree.map(jnp.add, total, part(*xs)), None

    first = jax.tree.map(lambda a: a[0], parts)
    zeros = jax.tree.map(
        lambda x: jnp.zeros(x.shape, x.dtype), jax.eval_shape(part, jnp.int32(0), first)
    )
    total, _ = jax.lax.scan(add, zeros, (jnp.arange(chunks, dtype=jnp.int32), parts))
    return jax.tree.map(lambda x: x / chunks, total)


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
