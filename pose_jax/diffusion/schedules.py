"""Noise schedules and DDIM time grids (D3DP common/diffusionpose.py; DiffPose
get_beta_schedule).

Schedules are computed in float64 numpy, as the reference repositories do, and
only then cast to float32; the result is a pytree, so it can be passed through
``jax.jit`` and indexed with traced timesteps.

Time grids are static numpy tables of ``(t, t_next)`` pairs, ``t_next = -1``
meaning "the clean sample" (``alpha_bar_{-1} = 1``). They are built on the host
because the sampler scans over them with a fixed length.
"""

from __future__ import annotations

import math

import flax.struct
import jax
import numpy as np

from pose_jax import _checks

SCHEDULES = ("cosine", "linear")
TIME_GRIDS = ("d3dp", "diffpose")

_DEFAULT_NUM_STEPS = {"cosine": 1000, "linear": 51}


@flax.struct.dataclass
class Schedule:
    """A discrete diffusion schedule; every array is ``[T]`` float32.

    Index ``t`` runs over ``0..T-1``; ``alphas_cumprod[t]`` is the
    ``alpha_bar_t`` of ``x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps``.

    Attributes:
      betas: ``beta_t``.
      alphas: ``1 - beta_t``.
      alphas_cumprod: ``alpha_bar_t = prod_{s<=t} (1 - beta_s)``.
      alphas_cumprod_prev: ``alpha_bar_{t-1}`` with ``alpha_bar_{-1} = 1``.
      sqrt_alphas_cumprod: ``sqrt(alpha_bar_t)``.
      sqrt_one_minus_alphas_cumprod: ``sqrt(1 - alpha_bar_t)``.
      sqrt_recip_alphas_cumprod: ``sqrt(1 / alpha_bar_t)``.
      sqrt_recipm1_alphas_cumprod: ``sqrt(1 / alpha_bar_t - 1)``.
      num_steps: ``T`` (static).
      name: ``'cosine'`` or ``'linear'`` (static).
    """

    betas: jax.Array
    alphas: jax.Array
    alphas_cumprod: jax.Array
    alphas_cumprod_prev: jax.Array
    sqrt_alphas_cumprod: jax.Array
    sqrt_one_minus_alphas_cumprod: jax.Array
    sqrt_recip_alphas_cumprod: jax.Array
    sqrt_recipm1_alphas_cumprod: jax.Array
    num_steps: int = flax.struct.field(pytree_node=False)
    name: str = flax.struct.field(pytree_node=False, default="custom")

    def alphas_cumprod_f64(self) -> np.ndarray:
        """Host copy of ``alpha_bar`` in float64 (needs concrete arrays)."""
        return np.asarray(self.alphas_cumprod, np.float64)


def cosine_betas(num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Nichol & Dhariwal cosine betas as D3DP builds them, float64 ``[T]``.

    ``alpha_bar(tau) = cos^2(((tau / T) + s) / (1 + s) * pi / 2) / alpha_bar(0)``
    for ``tau = 0..T``; ``beta_t = clip(1 - alpha_bar(t+1) / alpha_bar(t), 0, max_beta)``.
    """
    tau = np.linspace(0.0, num_steps, num_steps + 1, dtype=np.float64)
    f = np.cos(((tau / num_steps) + s) / (1.0 + s) * math.pi * 0.5) ** 2
    f = f / f[0]
    return np.clip(1.0 - f[1:] / f[:-1], 0.0, max_beta)


def linear_betas(
    num_steps: int = 51, beta_start: float = 1e-4, beta_end: float = 1e-3
) -> np.ndarray:
    """DiffPose's linear betas ``np.linspace(beta_start, beta_end, T)``, float64 ``[T]``."""
    return np.linspace(beta_start, beta_end, num_steps, dtype=np.float64)


def schedule_from_betas(betas: np.ndarray, name: str = "custom") -> Schedule:
    """Builds a :class:`Schedule` from float64 betas ``[T]`` (all in float64, then cast)."""
    betas = np.asarray(betas, np.float64)
    if betas.ndim != 1 or betas.size == 0:
        raise ValueError(
            f"schedule_from_betas: argument 'betas' has shape {betas.shape}; "
            "expected [T] with T >= 1."
        )
    if not (np.all(betas >= 0.0) and np.all(betas < 1.0)):
        raise ValueError(
            "schedule_from_betas: argument 'betas' must lie in [0, 1); got range "
            f"[{betas.min()}, {betas.max()}]."
        )
    alphas = 1.0 - betas
    abar = np.cumprod(alphas)
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    return Schedule(
        betas=f32(betas),
        alphas=f32(alphas),
        alphas_cumprod=f32(abar),
        alphas_cumprod_prev=f32(abar_prev),
        sqrt_alphas_cumprod=f32(np.sqrt(abar)),
        sqrt_one_minus_alphas_cumprod=f32(np.sqrt(1.0 - abar)),
        sqrt_recip_alphas_cumprod=f32(np.sqrt(1.0 / abar)),
        sqrt_recipm1_alphas_cumprod=f32(np.sqrt(1.0 / abar - 1.0)),
        num_steps=int(betas.shape[0]),
        name=name,
    )


def make_schedule(
    name: str,
    num_steps: int | None = None,
    *,
    s: float = 0.008,
    max_beta: float = 0.999,
    beta_start: float = 1e-4,
    beta_end: float = 1e-3,
) -> Schedule:
    """Builds a named schedule.

    Args:
      name: ``'cosine'`` (D3DP/FinePOSE: ``s``, ``max_beta``) or ``'linear'``
        (DiffPose/monoMotionDiff: ``beta_start``, ``beta_end``).
      num_steps: ``T``; defaults to 1000 for cosine and 51 for linear.
      s, max_beta: cosine offset and beta clip.
      beta_start, beta_end: linear end points.

    Returns:
      A :class:`Schedule` with float32 ``[T]`` arrays.

    Raises:
      ValueError: unknown ``name`` (listing the known ones) or ``num_steps < 1``.
    """
    _checks.check_choice("make_schedule", "schedule", name, SCHEDULES)
    if num_steps is None:
        num_steps = _DEFAULT_NUM_STEPS[name]
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
        raise ValueError(
            f"make_schedule: argument 'num_steps' is {num_steps!r}; expected an int >= 1."
        )
    num_steps = int(num_steps)
    if name == "cosine":
        if not 0.0 < max_beta < 1.0:
            raise ValueError(
                f"make_schedule: argument 'max_beta' is {max_beta}; expected 0 < max_beta < 1."
            )
        betas = cosine_betas(num_steps, s=s, max_beta=max_beta)
    else:
        if not 0.0 <= beta_start <= beta_end < 1.0:
            raise ValueError(
                f"make_schedule: 'beta_start'={beta_start}, 'beta_end'={beta_end}; "
                "expected 0 <= beta_start <= beta_end < 1."
            )
        betas = linear_betas(num_steps, beta_start, beta_end)
    return schedule_from_betas(betas, name=name)


# ---------------------------------------------------------------------------
# Time grids
# ---------------------------------------------------------------------------


def _torch_linspace_f32(start: float, end: float, steps: int) -> np.ndarray:
    """``torch.linspace(start, end, steps)`` (float32, CPU kernel) reproduced in numpy.

    PyTorch computes ``step = (end - start) / (steps - 1)`` in float32 and fills
    the first half as ``start + step * i`` and the second half as
    ``end - step * (steps - 1 - i)``. Exact rational arithmetic gives a different
    integer grid after truncation for some ``K`` (e.g. ``T=1000, K=26``), so the
    float32 recipe is followed literally.
    """
    f = np.float32
    start32, end32 = f(start), f(end)
    if steps == 1:
        return np.array([start32], np.float32)
    step = f(f(end32 - start32) / f(steps - 1))
    half = steps // 2
    out = np.empty(steps, np.float32)
    for i in range(steps):
        out[i] = f(start32 + f(step * f(i))) if i < half else f(end32 - f(step * f(steps - 1 - i)))
    return out


def _check_int(fn: str, name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{fn}: argument '{name}' is {value!r}; expected an int >= {minimum}.")
    return int(value)


def d3dp_time_grid(num_timesteps: int, num_steps: int) -> np.ndarray:
    """D3DP's DDIM grid: ``int(linspace(-1, T-1, K+1))`` reversed, as ``(t, t_next)`` pairs.

    Args:
      num_timesteps: training ``T`` (1000 for D3DP).
      num_steps: ``K``, number of DDIM iterations, ``1 <= K <= T``.

    Returns:
      int32 ``[K, 2]``; e.g. ``T=1000, K=2`` -> ``[[999, 499], [499, -1]]``.
    """
    fn = "d3dp_time_grid"
    T = _check_int(fn, "num_timesteps", num_timesteps, 1)
    K = _check_int(fn, "num_steps", num_steps, 1)
    if K > T:
        raise ValueError(f"{fn}: argument 'num_steps' is {K}; expected at most num_timesteps={T}.")
    times = np.trunc(_torch_linspace_f32(-1.0, T - 1.0, K + 1)).astype(np.int64)[::-1]
    grid = np.stack([times[:-1], times[1:]], axis=1).astype(np.int32)
    return validate_time_grid(grid, T, fn=fn)


def diffpose_time_grid(
    num_timesteps: int, num_steps: int, *, schedule_steps: int | None = None
) -> np.ndarray:
    """DiffPose's DDIM grid: ``seq = range(0, T_test, T_test // S)`` reversed.

    ``t_next`` is the previous entry of ``seq`` (``-1`` after ``seq[0] = 0``). The
    first step is at ``seq[-1]``, i.e. ``T_test - skip`` when ``S`` divides
    ``T_test``: ``(24, 2)`` -> t = 12, 0; ``(12, 2)`` -> 6, 0; ``(6, 1)`` -> 0.

    Args:
      num_timesteps: ``T_test`` (``test_num_diffusion_timesteps``).
      num_steps: ``S`` (``test_timesteps``), ``1 <= S <= T_test``.
      schedule_steps: optional training ``T``; when given, grid entries must be ``< T``.

    Returns:
      int32 ``[K, 2]`` pairs ``(t, t_next)``; ``K = len(seq)`` (which can exceed
      ``S`` when ``S`` does not divide ``T_test``, as in the reference).
    """
    fn = "diffpose_time_grid"
    T_test = _check_int(fn, "num_timesteps", num_timesteps, 1)
    S = _check_int(fn, "num_steps", num_steps, 1)
    if S > T_test:
        raise ValueError(
            f"{fn}: argument 'num_steps' is {S}; expected at most num_timesteps={T_test}."
        )
    seq = list(range(0, T_test, T_test // S))
    seq_next = [-1, *seq[:-1]]
    grid = np.array(list(zip(reversed(seq), reversed(seq_next), strict=True)), np.int32)
    limit = T_test if schedule_steps is None else schedule_steps
    return validate_time_grid(grid, limit, fn=fn)


def make_time_grid(kind: str, num_timesteps: int, num_steps: int) -> np.ndarray:
    """Dispatches to :func:`d3dp_time_grid` or :func:`diffpose_time_grid`.

    Args:
      kind: ``'d3dp'`` (``int(linspace(-1, T-1, K+1))``) or ``'diffpose'``
        (``range(0, T_test, T_test // S)``).
      num_timesteps: ``T`` (d3dp) or ``T_test`` (diffpose).
      num_steps: ``K`` (d3dp) or ``S`` (diffpose).

    Returns:
      int32 ``[K, 2]`` table of ``(t, t_next)``.
    """
    _checks.check_choice("make_time_grid", "time grid", kind, TIME_GRIDS)
    if kind == "d3dp":
        return d3dp_time_grid(num_timesteps, num_steps)
    return diffpose_time_grid(num_timesteps, num_steps)


def validate_time_grid(grid, num_timesteps: int, *, fn: str = "validate_time_grid") -> np.ndarray:
    """Checks a ``(t, t_next)`` table: ``0 <= t < T``, ``-1 <= t_next < t``, chained.

    Returns:
      The grid as an int32 numpy array ``[K, 2]``.
    """
    g = np.asarray(grid)
    if g.ndim != 2 or g.shape[1] != 2 or g.shape[0] < 1 or not np.issubdtype(g.dtype, np.integer):
        raise ValueError(
            f"{fn}: time grid has shape {g.shape} and dtype {g.dtype}; "
            "expected integer [K, 2] with K >= 1."
        )
    t, t_next = g[:, 0], g[:, 1]
    if t.min() < 0 or t.max() >= num_timesteps:
        raise ValueError(
            f"{fn}: time grid steps t span [{t.min()}, {t.max()}]; "
            f"expected 0 <= t < {num_timesteps}."
        )
    if np.any(t_next >= t) or np.any(t_next < -1):
        raise ValueError(
            f"{fn}: time grid {g.tolist()} must satisfy -1 <= t_next < t in every row."
        )
    if np.any(t[1:] != t_next[:-1]):
        raise ValueError(
            f"{fn}: time grid {g.tolist()} is not a chain (row k's t_next must be row k+1's t)."
        )
    return g.astype(np.int32)
