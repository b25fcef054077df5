"""Optimizers and learning-rate schedules of the reference systems (optax)."""

from __future__ import annotations

import optax

from pose_jax import _checks


def make_lr_schedule(
    *, base_lr: float, steps_per_epoch: int, kind: str, decay: float, decay_every_epochs: int = 1
) -> optax.Schedule:
    """Learning rate as a function of the update count.

    Args:
      base_lr: initial learning rate.
      steps_per_epoch: updates per epoch (> 0).
      kind: ``'constant'``; ``'epoch_exponential'`` (D3DP/FinePOSE: ``lr0 * decay**epoch``,
        decay 0.993); ``'epoch_step'`` (DiffPose/monoMotionDiff: ``lr0 * decay**(epoch //
        decay_every_epochs)``, 0.9 every 60 epochs).
      decay: multiplicative decay factor.
      decay_every_epochs: period of ``'epoch_step'``.
    """
    _checks.check_choice(
        "make_lr_schedule", "schedule kind", kind, ("constant", "epoch_exponential", "epoch_step")
    )
    if steps_per_epoch <= 0:
        raise ValueError(f"make_lr_schedule: steps_per_epoch must be > 0; got {steps_per_epoch}.")
    if kind == "constant":
        return optax.constant_schedule(base_lr)
    period = steps_per_epoch * (decay_every_epochs if kind == "epoch_step" else 1)
    return optax.exponential_decay(base_lr, period, decay, staircase=True)


def make_optimizer(
    *,
    name: str,
    lr_schedule: optax.Schedule,
    weight_decay: float = 0.0,
    grad_clip_norm: float | None = None,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> optax.GradientTransformation:
    """AdamW (D3DP: lr 6e-5, wd 0.1) or Adam (DiffPose: lr 1e-3, clip 1.0).

    PyTorch's AdamW decays by ``lr * wd`` per step like optax's ``adamw``.
    """
    _checks.check_choice("make_optimizer", "optimizer", name, ("adamw", "adam"))
    if name == "adamw":
        opt = optax.adamw(lr_schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
    else:
        opt = optax.adam(lr_schedule, b1=b1, b2=b2, eps=eps)
    if grad_clip_norm:
        opt = optax.chain(optax.clip_by_global_norm(grad_clip_norm), opt)
    return opt
