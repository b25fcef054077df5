"""Forward process, parameterisations and training losses (D3DP common/diffusionpose.py, DiffPose
runners/diffpose_frame.py, monoMotionDiff runner).

Shapes: ``x0, noise: [B, ...event]`` with one timestep per leading sample,
``t: [B]`` int. ``event`` is e.g. ``[F, J, 3]`` (D3DP) or ``[J, 5]`` (DiffPose
uvxyz). All functions are pure and jit-able.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pose_jax import _checks
from pose_jax.diffusion.schedules import Schedule


def _gather(fn: str, table: jax.Array, t: jax.Array, x: jax.Array) -> jax.Array:
    """``table[t]`` reshaped to broadcast against ``x: [B, ...]``."""
    shape = _checks.shape_of(x)
    t_shape = _checks.shape_of(t)
    if len(shape) < 1 or t_shape != shape[:1]:
        raise ValueError(
            f"{fn}: argument 't' has shape {t_shape}; expected [B] = {shape[:1]} matching the "
            f"leading axis of the state (shape {shape})."
        )
    vals = jnp.take(table, jnp.asarray(t, jnp.int32), axis=0)
    return vals.reshape(t_shape + (1,) * (len(shape) - 1)).astype(x.dtype)


def apply_noise_scale(noise: jax.Array, noise_scale: jax.Array | None) -> jax.Array:
    """``eps' = eps * scale`` with ``scale`` broadcast from the right (``[C]``, ``[J, C]``, ...).

    DiffPose's GMM forward process scales the uv channels per joint and keeps
    the xyz channels at 1; monoMotionDiff uses the constant ``[0.1, 0.1, 1, 1, 1]``.
    ``eps'`` is both the noise that is added and the epsilon-target.
    """
    if noise_scale is None:
        return noise
    ns, ss = _checks.shape_of(noise), _checks.shape_of(noise_scale)
    try:
        out = jnp.broadcast_shapes(ns, ss)
    except ValueError:
        out = None
    if out != ns:
        raise ValueError(
            f"apply_noise_scale: argument 'noise_scale' has shape {ss}; expected a shape that "
            f"broadcasts from the right against noise {ns} (e.g. [{ns[-1]}])."
        )
    return noise * jnp.asarray(noise_scale, noise.dtype)


def q_sample(
    schedule: Schedule,
    x0: jax.Array,
    t: jax.Array,
    noise: jax.Array,
    noise_scale: jax.Array | None = None,
) -> jax.Array:
    """Forward process ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps'``.

    Args:
      schedule: the :class:`Schedule`.
      x0: clean state ``[B, ...event]``.
      t: ``[B]`` integer timesteps in ``0..T-1``.
      noise: ``eps ~ N(0, I)``, same shape as ``x0``.
      noise_scale: optional per-channel scale broadcast from the right
        (``eps' = eps * noise_scale``); ``None`` means 1.

    Returns:
      ``x_t``, same shape as ``x0``. The epsilon-target for this sample is
      ``apply_noise_scale(noise, noise_scale)``.
    """
    fn = "q_sample"
    _checks.check_same_shape(fn, ("x0", "noise"), x0, noise)
    eps = apply_noise_scale(noise, noise_scale)
    return (
        _gather(fn, schedule.sqrt_alphas_cumprod, t, x0) * x0
        + _gather(fn, schedule.sqrt_one_minus_alphas_cumprod, t, x0) * eps
    )


def predict_x0_from_eps(
    schedule: Schedule, x_t: jax.Array, t: jax.Array, eps: jax.Array
) -> jax.Array:
    """``x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)``; shapes ``[B, ...]``, ``t: [B]``."""
    fn = "predict_x0_from_eps"
    _checks.check_same_shape(fn, ("x_t", "eps"), x_t, eps)
    return (x_t - _gather(fn, schedule.sqrt_one_minus_alphas_cumprod, t, x_t) * eps) / _gather(
        fn, schedule.sqrt_alphas_cumprod, t, x_t
    )


def predict_eps_from_x0(
    schedule: Schedule, x_t: jax.Array, t: jax.Array, x0: jax.Array
) -> jax.Array:
    """``eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)``; shapes ``[B, ...]``, ``t: [B]``.

    Algebraically equal to D3DP's ``(x_t / sqrt(abar_t) - x0) / sqrt(1 / abar_t - 1)``
    but free of the ``1 / sqrt(abar_t)`` blow-up at ``abar_999 ~ 2e-9`` in float32.
    """
    fn = "predict_eps_from_x0"
    _checks.check_same_shape(fn, ("x_t", "x0"), x_t, x0)
    return (x_t - _gather(fn, schedule.sqrt_alphas_cumprod, t, x_t) * x0) / _gather(
        fn, schedule.sqrt_one_minus_alphas_cumprod, t, x_t
    )


def _check_n(fn: str, n, num_steps) -> tuple[int, int]:
    for name, v, lo in (("n", n, 0), ("num_steps", num_steps, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{fn}: argument '{name}' is {v!r}; expected an int >= {lo}.")
    return n, num_steps


def uniform_timesteps(key: jax.Array, n: int, num_steps: int) -> jax.Array:
    """``n`` i.i.d. timesteps ``t ~ U{0..T-1}`` (D3DP: one per clip), int32 ``[n]``."""
    n, num_steps = _check_n("uniform_timesteps", n, num_steps)
    return jax.random.randint(key, (n,), 0, num_steps, dtype=jnp.int32)


def antithetic_timesteps(key: jax.Array, n: int, num_steps: int) -> jax.Array:
    """DiffPose's antithetic timesteps, int32 ``[n]``.

    Draws ``t ~ U{0..T-1}`` for ``n // 2 + 1`` samples, appends ``T - 1 - t`` and
    keeps the first ``n`` entries.
    """
    n, num_steps = _check_n("antithetic_timesteps", n, num_steps)
    t = jax.random.randint(key, (n // 2 + 1,), 0, num_steps, dtype=jnp.int32)
    return jnp.concatenate([t, num_steps - 1 - t])[:n]


def mpjpe_x0_loss(pred_x0: jax.Array, x0: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """D3DP's objective: MPJPE between predicted and true x0, a scalar.

    The Euclidean norm is taken over the last axis (coordinates) and averaged
    over everything else (batch, frames, joints, root included).

    Args:
      pred_x0, x0: ``[..., J, 3]`` (any leading shape).
      weights: optional per-sample weights ``[B]`` (leading axis), e.g. a
        padding mask; the mean is then ``sum(w * err) / sum(w * count)``.

    Returns:
      Scalar float32 loss (metres when poses are in metres).
    """
    fn = "mpjpe_x0_loss"
    _checks.check_same_shape(fn, ("pred_x0", "x0"), pred_x0, x0)
    err = jnp.linalg.norm(pred_x0 - x0, axis=-1)
    if weights is None:
        return jnp.mean(err)
    w = _per_sample_weights(fn, weights, err)
    return jnp.sum(err * w) / jnp.maximum(jnp.sum(w * jnp.ones_like(err)), 1e-12)


def eps_loss(pred_eps: jax.Array, eps: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """DiffPose's objective: mean over the batch of ``sum((eps' - eps_hat)^2)`` over the state dims.

    Args:
      pred_eps, eps: ``[B, ...event]``; ``eps`` is the *scaled* noise ``eps'``.
      weights: optional per-sample weights ``[B]``; the mean becomes a weighted mean.

    Returns:
      Scalar float32 loss.
    """
    fn = "eps_loss"
    _checks.check_same_shape(fn, ("pred_eps", "eps"), pred_eps, eps)
    if pred_eps.ndim < 1:
        raise ValueError(f"{fn}: arguments have shape {pred_eps.shape}; expected [B, ...].")
    per_sample = jnp.sum(jnp.square(eps - pred_eps).reshape(pred_eps.shape[0], -1), axis=-1)
    if weights is None:
        return jnp.mean(per_sample)
    w = _per_sample_weights(fn, weights, per_sample)
    return jnp.sum(per_sample * w) / jnp.maximum(jnp.sum(w), 1e-12)


def _per_sample_weights(fn: str, weights: jax.Array, like: jax.Array) -> jax.Array:
    ws, ls = _checks.shape_of(weights), _checks.shape_of(like)
    if len(ls) < 1 or ws != ls[:1]:
        raise ValueError(f"{fn}: argument 'weights' has shape {ws}; expected [B] = {ls[:1]}.")
    return jnp.asarray(weights, like.dtype).reshape(ws + (1,) * (len(ls) - 1))
