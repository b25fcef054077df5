"""DDIM / DDPM-like samplers as one ``lax.scan`` (D3DP common/diffusionpose.py
ddim_sample; DiffPose / monoMotionDiff generalized_steps).

One step function, :func:`ddim_step`, covers every reference system:

* D3DP / FinePOSE (x0-prediction, ``eta=1``, ``clip=1.1``, generation from
  ``N(0, I)`` on the grid of :func:`~pose_jax.diffusion.schedules.d3dp_time_grid`,
  flip TTA inside every step);
* DiffPose / monoMotionDiff (epsilon-prediction, ``eta=0``, no clamping,
  refinement of a given ``x`` starting at ``t_start`` without adding noise, on
  the grid of :func:`~pose_jax.diffusion.schedules.diffpose_time_grid`;
  monoMotionDiff's flip TTA runs the whole chain twice: ``flip_mode='chain'``).

The denoiser is an argument with the signature::

    denoise_fn(params, x_t [N, *event], t [N] int32, cond {name: [N, ...]}) -> [N, *event]

``N = B * H`` (clips times hypotheses, clip-major: row ``b * H + h``); with flip
TTA the sampler calls it once per step on ``2N`` rows (original and mirrored
copies interleaved), or, with ``max_denoise_rows``, on parts of those rows
(:mod:`pose_jax.diffusion.chunking`), so a model must treat rows independently (no
batch statistics at inference). ``params`` are passed straight through, so one
compiled sampler serves every checkpoint of the same structure.

Randomness: the noise of clip ``b`` at step ``k`` is drawn from
``fold_in(fold_in(key, k + 1), clip_id[b])`` (``k + 1 = 0`` is the start noise),
so a clip's samples do not depend on the batch it was put in, on padding, or on
how the batch is split over devices: single-device, ``NamedSharding`` and
``pmap`` runs give the same numbers. Both kinds of noise can be given instead of
drawn (e.g. numbers recorded from a reference implementation): the start noise as
``x_init`` and the per-step ``z`` as ``step_noise [B, K, H, *event]``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from pose_jax import _checks
from pose_jax import sharding as sharding_lib
from pose_jax import skeleton as skeleton_lib
from pose_jax.diffusion import chunking
from pose_jax.diffusion.schedules import Schedule, validate_time_grid

PREDICTIONS = ("x0", "eps")
FLIP_MODES = (None, "step", "chain")

DenoiseFn = Callable[[Any, jax.Array, jax.Array, Mapping[str, jax.Array]], jax.Array]
ModelFn = Callable[[jax.Array, jax.Array], jax.Array]
FlipFn = Callable[[jax.Array], jax.Array]
CondFlipFn = Callable[[Mapping[str, jax.Array]], Mapping[str, jax.Array]]


# ---------------------------------------------------------------------------
# Coefficients and the one step
# ---------------------------------------------------------------------------


@flax.struct.dataclass
class StepCoefficients:
    """Per-step DDIM scalars; in the table of :func:`ddim_coefficients` every field is ``[K]``.

    ``x_next = sqrt_abar_next * x0_hat + c * eps_hat + sigma * z`` with
    ``sigma = eta * sqrt((1 - abar_t / abar_next) (1 - abar_next) / (1 - abar_t))``,
    ``c = sqrt(1 - abar_next - sigma^2)`` and ``abar_{-1} = 1``.
    """

    t: jax.Array
    t_next: jax.Array
    sqrt_abar: jax.Array
    sqrt_one_minus_abar: jax.Array
    sqrt_abar_next: jax.Array
    c: jax.Array
    sigma: jax.Array


def ddim_coefficients(schedule: Schedule, time_grid: np.ndarray, eta: float) -> StepCoefficients:
    """Host-side table of DDIM coefficients for a ``(t, t_next)`` grid.

    Computed in float64 from the schedule's ``alpha_bar`` (D3DP keeps its buffers
    in float64 too) and cast to float32 once.

    Args:
      schedule: a concrete :class:`Schedule`.
      time_grid: int ``[K, 2]`` pairs ``(t, t_next)``.
      eta: ``>= 0``; 0 is deterministic DDIM, 1 is D3DP's DDPM-like update.

    Returns:
      :class:`StepCoefficients` of numpy arrays ``[K]``.
    """
    fn = "ddim_coefficients"
    if not _checks.is_concrete(schedule.alphas_cumprod):
        raise ValueError(
            f"{fn}: the schedule must hold concrete arrays (build the sampler outside jit)."
        )
    eta = _check_eta(fn, eta)
    grid = validate_time_grid(time_grid, schedule.num_steps, fn=fn)
    abar_all = np.asarray(schedule.alphas_cumprod, np.float64)
    t, t_next = grid[:, 0], grid[:, 1]
    abar = abar_all[t]
    abar_next = np.where(t_next >= 0, abar_all[np.maximum(t_next, 0)], 1.0)
    if np.any(abar >= 1.0):
        raise ValueError(
            f"{fn}: alpha_bar is 1 at grid step(s) t={t[abar >= 1.0].tolist()}; the noise "
            "level there is 0 and epsilon is undefined. Use a grid without those steps."
        )
    var = eta**2 * (1.0 - abar / abar_next) * (1.0 - abar_next) / (1.0 - abar)
    var = np.maximum(var, 0.0)
    c2 = 1.0 - abar_next - var
    if np.any(c2 < -1e-9):
        raise ValueError(
            f"{fn}: eta={eta} makes 1 - abar_next - sigma^2 negative at "
            f"t={t[c2 < -1e-9].tolist()}; "
            "expected eta small enough (eta <= 1 always works)."
        )
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    return StepCoefficients(
        t=t.astype(np.int32),
        t_next=t_next.astype(np.int32),
        sqrt_abar=f32(np.sqrt(abar)),
        sqrt_one_minus_abar=f32(np.sqrt(1.0 - abar)),
        sqrt_abar_next=f32(np.sqrt(abar_next)),
        c=f32(np.sqrt(np.maximum(c2, 0.0))),
        sigma=f32(np.sqrt(var)),
    )


def ddim_step(
    model_fn: ModelFn,
    x_t: jax.Array,
    coeffs: StepCoefficients,
    noise: jax.Array | None = None,
    *,
    prediction: str = "x0",
    clip: float | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One DDIM step (``eta`` is folded into ``coeffs.sigma``/``coeffs.c``).

    Order of operations (D3DP, ``prediction='x0'``): the model sees
    ``clamp(x_t, +-clip)``; its output is clamped to give ``x0_hat``; ``eps_hat``
    is derived from the *unclamped* ``x_t``:
    ``eps_hat = (x_t - sqrt(abar_t) x0_hat) / sqrt(1 - abar_t)``, which equals
    D3DP's ``(x_t / sqrt(abar_t) - x0_hat) / sqrt(1 / abar_t - 1)``.

    DiffPose (``prediction='eps'``): ``x0_hat = (x_t - sqrt(1 - abar_t) eps_hat) /
    sqrt(abar_t)``, no clamping when ``clip is None``; with ``clip`` set, the
    model input and ``x0_hat`` are clamped and ``eps_hat`` is re-derived from
    the clamped ``x0_hat`` (as for x0-prediction).

    Args:
      model_fn: ``(x_in [N, *event], t [N] int32) -> prediction [N, *event]``
        (x0 or eps, per ``prediction``); flip TTA lives inside it.
      x_t: state ``[N, *event]``.
      coeffs: scalar :class:`StepCoefficients` of this step.
      noise: ``z ~ N(0, I)`` like ``x_t``; ``None`` when ``sigma`` is 0.
      prediction: ``'x0'`` or ``'eps'``.
      clip: clamp bound (D3DP: 1.1 x scale) or ``None``.

    Returns:
      ``(x_next, x0_hat, eps_hat)``, each ``[N, *event]``.
    """
    n = x_t.shape[0]
    x_in = x_t if clip is None else jnp.clip(x_t, -clip, clip)
    t_vec = jnp.full((n,), coeffs.t, jnp.int32)
    out = model_fn(x_in, t_vec)
    if out.shape != x_t.shape:
        raise ValueError(
            f"ddim_step: the denoiser returned shape {out.shape}; "
            f"expected the state's shape {x_t.shape}."
        )
    out = out.astype(x_t.dtype)
    sa, s1a = coeffs.sqrt_abar, coeffs.sqrt_one_minus_abar
    if prediction == "x0":
        x0_hat = out if clip is None else jnp.clip(out, -clip, clip)
        eps_hat = (x_t - sa * x0_hat) / s1a
    else:
        eps_hat = out
        x0_hat = (x_t - s1a * eps_hat) / sa
        if clip is not None:
            x0_hat = jnp.clip(x0_hat, -clip, clip)
            eps_hat = (x_t - sa * x0_hat) / s1a
    x_next = coeffs.sqrt_abar_next * x0_hat + coeffs.c * eps_hat
    if noise is not None:
        x_next = x_next + coeffs.sigma * noise
    return x_next, x0_hat, eps_hat


# ---------------------------------------------------------------------------
# Flips
# ---------------------------------------------------------------------------


def make_flip_fn(
    skeleton: str | skeleton_lib.Skeleton = "h36m", negate_channels: Sequence[int] = (0,)
) -> FlipFn:
    """Mirror of ``[..., J, C]`` poses: swap left/right joints, negate ``negate_channels``.

    ``negate_channels=(0,)`` is :func:`pose_jax.skeleton.flip_pose` (2D ``u`` or 3D
    ``x``); DiffPose's uvxyz state needs ``(0, 2)``.
    """
    sk = skeleton_lib.get_skeleton(skeleton) if isinstance(skeleton, str) else skeleton
    negate = tuple(int(c) for c in negate_channels)
    if negate == (0,):
        return functools.partial(skeleton_lib.flip_pose, skeleton=sk)
    perm = sk.flip_permutation

    def flip(x):
        _checks.check_trailing("flip", "x", x, (sk.num_joints, None))
        channels = np.shape(x)[-1]
        if any(not 0 <= c < channels for c in negate):
            raise ValueError(
                f"flip: negate_channels {negate} out of range for {channels} channels "
                f"(shape {np.shape(x)})."
            )
        sign = np.ones((channels,), np.float32)
        sign[list(negate)] = -1.0
        return x[..., perm, :] * sign.astype(x.dtype)

    return flip


def _default_cond_flip(flip_fn: FlipFn) -> CondFlipFn:
    return lambda cond: jax.tree.map(flip_fn, cond)


def _pair(a: jax.Array, b: jax.Array) -> jax.Array:
    """Interleaves rows: ``[N, ...] x2 -> [2N, ...]`` (row 2i = a[i], 2i+1 = b[i]).

    Interleaving (not concatenating) keeps each device's rows local when the
    leading axis is sharded.
    """
    return jnp.stack([a, b], axis=1).reshape((-1, *a.shape[1:]))


def _unpair(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    x = x.reshape((-1, 2, *x.shape[1:]))
    return x[:, 0], x[:, 1]


# ---------------------------------------------------------------------------
# The sampler
# ---------------------------------------------------------------------------


@flax.struct.dataclass
class SampleOutput:
    """Sampler result.

    Attributes:
      x0_steps: ``[B, K, H, *event]``, the ``x0`` estimate of every iteration
        (D3DP evaluates each ``k``).
      x: ``[B, H, *event]``, the final state (equal to ``x0_steps[:, -1]`` when the
        grid ends at ``t_next = -1``).
    """

    x0_steps: jax.Array
    x: jax.Array


def _host(x) -> np.ndarray:
    """A concrete array on the host (fully addressable jax arrays and array-likes)."""
    return np.asarray(jax.device_get(x) if isinstance(x, jax.Array) else x)


def _check_eta(fn: str, eta) -> float:
    try:
        eta = float(eta)
    except (TypeError, ValueError):
        raise ValueError(f"{fn}: argument 'eta' is {eta!r}; expected a float >= 0.") from None
    if not np.isfinite(eta) or eta < 0:
        raise ValueError(f"{fn}: argument 'eta' is {eta}; expected a finite float >= 0.")
    return eta


@dataclasses.dataclass(frozen=True, eq=False)
class Sampler:
    """A configured DDIM sampler; build it with :func:`make_sampler`.

    Call forms (all return :class:`SampleOutput`):

    * ``sampler(params, cond, key, x_init=None, *, step_noise=None)`` --
      jit-compiled, batch sharded with ``NamedSharding`` over ``mesh`` (the
      default path). The batch is padded to a multiple of the mesh size and the
      padding sliced off.
    * ``sampler.pmap(params, cond, key, x_init=None, devices=None, *, step_noise=None)``
      -- the same computation under ``jax.pmap`` over local devices.
    * ``sampler.sample(params, cond, key, x_init=None, clip_ids=None, *, step_noise=None)``
      -- the pure, un-jitted function (compose it with your own ``jit``/``vmap``).

    Arguments of the call forms:
      params: the denoiser's parameters (any pytree), passed to ``denoise_fn``.
      cond: dict of per-clip arrays ``[B, ...]`` (repeated over H by the sampler).
      key: PRNG key (typed or raw); the source of every noise draw not given below.
      x_init: ``None`` to generate from ``N(0, I)`` drawn from ``key`` (D3DP); or
        the state to refine, ``[B, *event]`` (shared by the H hypotheses) or
        ``[B, H, *event]``, used as ``x`` at the grid's first ``t`` without adding
        noise (DiffPose). To generate from given start noise, pass that noise here
        (``[B, H, *event]``): generation starts from ``x_T = z_0`` unchanged.
      step_noise: keyword-only; ``None`` draws step ``k``'s ``z`` from ``key`` (see
        the module docstring); or ``[B, K, H, *event]`` float, the ``z`` that step
        ``k`` adds as ``sigma_k * z`` (``step_noise[:, k]``; same layout as
        ``SampleOutput.x0_steps``). Rows of steps with ``sigma_k = 0`` (the final
        ``t_next = -1`` step; every step when ``eta = 0``) are ignored and may hold
        anything, even NaN; the others must be finite. It is batch-sharded and
        padded like ``cond``. With ``flip_mode='chain'`` the mirrored chain adds
        ``flip(z)``, as with drawn noise. Given ``x_init`` and ``step_noise``, the
        result does not depend on ``key``.
    """

    denoise_fn: DenoiseFn
    time_grid: np.ndarray
    coeffs: StepCoefficients
    event_shape: tuple[int, ...]
    num_hypotheses: int
    eta: float
    prediction: str
    clip: float | None
    flip_mode: str | None
    flip_fn: FlipFn | None
    cond_flip_fn: CondFlipFn | None
    mesh: Mesh
    compiler_options: Mapping[str, Any] | None = None
    small_batch_options: tuple[int, Mapping[str, Any]] | None = None
    max_denoise_rows: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "_jit_cache", {})
        object.__setattr__(self, "_pmap_cache", {})

    @property
    def num_steps(self) -> int:
        """``K``, the number of DDIM iterations."""
        return int(self.time_grid.shape[0])

    @property
    def stochastic(self) -> bool:
        return bool(np.any(self.coeffs.sigma > 0))

    # -- validation ---------------------------------------------------------

    def _check_inputs(self, fn: str, cond, x_init, key, step_noise=None) -> int:
        """Validates the call arguments and returns the batch size ``B``."""
        key_dtype = getattr(key, "dtype", None)
        typed = key_dtype is not None and jax.dtypes.issubdtype(key_dtype, jax.dtypes.prng_key)
        raw = key_dtype == np.uint32 and _checks.shape_of(key) == (2,)
        if not (typed or raw):
            raise ValueError(
                f"{fn}: argument 'key' is {type(key).__name__} with shape "
                f"{_checks.shape_of(key) if key is not None else None}; expected one PRNG key "
                "(jax.random.key(seed), or a raw uint32[2] jax.random.PRNGKey)."
            )
        if not isinstance(cond, Mapping):
            raise ValueError(
                f"{fn}: argument 'cond' is a {type(cond).__name__}; "
                "expected a dict of [B, ...] arrays."
            )
        leaves = jax.tree_util.tree_leaves_with_path(cond)
        batch = None
        for path, leaf in leaves:
            shape = _checks.shape_of(leaf)
            name = "cond" + jax.tree_util.keystr(path)
            if len(shape) < 1:
                raise ValueError(f"{fn}: argument '{name}' has shape {shape}; expected [B, ...].")
            if batch is None:
                batch = (name, shape[0])
            elif shape[0] != batch[1]:
                raise ValueError(
                    f"{fn}: argument '{name}' has shape {shape}; expected leading batch {batch[1]} "
                    f"like '{batch[0]}'."
                )
        E, H = self.event_shape, self.num_hypotheses
        if x_init is not None:
            shape = _checks.shape_of(x_init)
            ok_shapes = (len(shape) == 1 + len(E) and shape[1:] == E) or (
                len(shape) == 2 + len(E) and shape[1:] == (H, *E)
            )
            if not ok_shapes:
                raise ValueError(
                    f"{fn}: argument 'x_init' has shape {shape}; expected [B, *event] = "
                    f"[B, {', '.join(map(str, E))}] "
                    f"or [B, H, *event] with H={H}."
                )
            if batch is not None and shape[0] != batch[1]:
                raise ValueError(
                    f"{fn}: argument 'x_init' has shape {shape} (batch {shape[0]}) "
                    f"but '{batch[0]}' has batch "
                    f"{batch[1]}; expected the same leading batch."
                )
            batch = ("x_init", shape[0])
            _checks.check_finite(fn, "x_init", x_init)
        if batch is None:
            raise ValueError(
                f"{fn}: cannot infer the batch size: 'cond' is empty and 'x_init' is None."
            )
        if batch[1] < 1:
            raise ValueError(f"{fn}: batch size is {batch[1]}; expected >= 1.")
        if step_noise is not None:
            self._check_step_noise(fn, step_noise, batch[1])
        return batch[1]

    def _check_step_noise(self, fn: str, step_noise, B: int) -> None:
        E, H, K = self.event_shape, self.num_hypotheses, self.num_steps
        shape = _checks.shape_of(step_noise)
        want = (B, K, H, *E)
        if shape != want:
            raise ValueError(
                f"{fn}: argument 'step_noise' has shape {shape}; expected "
                f"[B, K, H, *event] = {want} (B={B} clips, K={K} steps, H={H} hypotheses, "
                f"event {E})."
            )
        dtype = getattr(step_noise, "dtype", None)
        if dtype is None:
            dtype = np.asarray(step_noise).dtype
        if not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(
                f"{fn}: argument 'step_noise' has dtype {dtype}; expected a float array."
            )
        unused = np.asarray(self.coeffs.sigma) <= 0
        if not unused.all() and _checks.is_concrete(step_noise):
            # Only the rows that are used must be finite (indices reported in full).
            z = _host(step_noise).copy()
            z[:, unused] = 0
            _checks.check_finite(fn, "step_noise", z)

    # -- the pure computation -----------------------------------------------

    def sample(
        self, params, cond, key, x_init=None, clip_ids=None, *, step_noise=None
    ) -> SampleOutput:
        """The pure sampler; see the class docstring.

        ``clip_ids [B]`` seed each clip's drawn noise (``fold_in`` by clip id); they
        do not touch given ``x_init``/``step_noise``.
        """
        fn = "Sampler.sample"
        B = self._check_inputs(fn, cond, x_init, key, step_noise)
        if clip_ids is None:
            clip_ids = jnp.arange(B, dtype=jnp.int32)
        elif _checks.shape_of(clip_ids) != (B,):
            raise ValueError(
                f"{fn}: argument 'clip_ids' has shape {_checks.shape_of(clip_ids)}; "
                f"expected [B] = ({B},)."
            )
        return self._core(params, cond, key, x_init, step_noise, jnp.asarray(clip_ids, jnp.int32))

    def _core(
        self, params, cond, key, x_init, step_noise, clip_ids, devices: int = 1
    ) -> SampleOutput:
        E, H = self.event_shape, self.num_hypotheses
        B = clip_ids.shape[0]
        N = B * H
        dtype = jnp.float32

        def clip_normal(k):
            draw = lambda c: jax.random.normal(jax.random.fold_in(k, c), (H, *E), dtype)  # noqa: E731
            return jax.vmap(draw)(clip_ids).reshape((N, *E))

        if x_init is None:
            x = clip_normal(jax.random.fold_in(key, 0))
        else:
            x = jnp.asarray(x_init, dtype)
            if x.ndim == 1 + len(E):
                x = jnp.repeat(x, H, axis=0)
            else:
                x = x.reshape((N, *E))

        cond_rep = jax.tree.map(lambda a: jnp.repeat(jnp.asarray(a), H, axis=0), cond)
        flip = self.flip_fn
        if self.flip_mode is not None:
            cond_flip = jax.tree.map(
                lambda a: jnp.repeat(jnp.asarray(a), H, axis=0), self.cond_flip_fn(cond)
            )
            cond_pair = jax.tree.map(_pair, cond_rep, cond_flip)

        denoise = functools.partial(self.denoise_fn, params)
        call = chunking.chunked_call(denoise, self.max_denoise_rows, devices)

        if self.flip_mode is None:
            model_fn = lambda x_in, t: call(x_in, t, cond_rep)  # noqa: E731
        elif self.flip_mode == "step":

            def model_fn(x_in, t):
                # D3DP: denoise x_t and its mirror, un-mirror, average the predictions
                # (x0 for x0-prediction, eps for eps-prediction) before anything else.
                out = call(_pair(x_in, flip(x_in)), _pair(t, t), cond_pair)
                direct, mirrored = _unpair(out)
                return 0.5 * (direct + flip(mirrored))

        else:  # chain: the state carries both copies; the mirrored chain sees mirrored noise.
            model_fn = lambda x_in, t: call(x_in, t, cond_pair)  # noqa: E731
            x = _pair(x, flip(x))

        def merge(a):
            if self.flip_mode != "chain":
                return a
            direct, mirrored = _unpair(a)
            return 0.5 * (direct + flip(mirrored))

        stochastic = self.stochastic
        table = jax.tree.map(jnp.asarray, self.coeffs)
        K = self.num_steps
        steps = jnp.arange(K, dtype=jnp.int32)
        given = stochastic and step_noise is not None
        if given:  # [B, K, H, *E] -> [K, N, *E], scanned alongside the steps
            step_noise = jnp.moveaxis(jnp.asarray(step_noise, dtype), 1, 0).reshape((K, N, *E))

        def body(x, inputs):
            k, row, z_given = inputs
            z = None
            if given:
                # Rows of sigma = 0 steps are documented as ignored: keep NaN out.
                z = jnp.where(row.sigma > 0, z_given, jnp.zeros((), dtype))
            elif stochastic:
                z = clip_normal(jax.random.fold_in(key, k + 1))
            if z is not None and self.flip_mode == "chain":
                z = _pair(z, flip(z))
            x_next, x0_hat, _ = ddim_step(
                model_fn, x, row, z, prediction=self.prediction, clip=self.clip
            )
            return x_next, merge(x0_hat)

        x, x0s = jax.lax.scan(body, x, (steps, table, step_noise if given else None))
        x0_steps = jnp.moveaxis(x0s.reshape((K, B, H, *E)), 0, 1)
        return SampleOutput(x0_steps=x0_steps, x=merge(x).reshape((B, H, *E)))

    # -- compiled entry points -----------------------------------------------

    def place_params(self, params):
        """Replicates ``params`` over the sampler's mesh (do it once, outside the loop)."""
        return sharding_lib.put(params, sharding_lib.replicated(self.mesh))

    def _is_small(self, size: int) -> bool:
        """Whether a call of ``size`` (padded) inputs uses :attr:`small_batch_options`."""
        rule = self.small_batch_options
        return rule is not None and size // self.mesh.size <= rule[0]

    def _jitted(self, small: bool = False):
        name = "small" if small else "fn"
        if name not in self._jit_cache:
            out = sharding_lib.batch_sharding(self.mesh)
            options = self.small_batch_options[1] if small else self.compiler_options
            self._jit_cache[name] = jax.jit(
                functools.partial(self._core, devices=self.mesh.size),
                out_shardings=SampleOutput(x0_steps=out, x=out),
                compiler_options=None if options is None else dict(options),
            )
        return self._jit_cache[name]

    def _padded_size(self, B: int) -> int:
        """``B`` padded to the mesh and, when denoiser calls are chunked, to equal parts."""
        D = self.mesh.size
        size = sharding_lib.padded_size(B, D)
        rows_per_clip = self.num_hypotheses * (1 if self.flip_mode is None else 2)
        while not chunking.fits(size // D * rows_per_clip, self.max_denoise_rows):
            size += D
        return size

    def __call__(self, params, cond, key, x_init=None, *, step_noise=None) -> SampleOutput:
        """The jit path; see the class docstring."""
        fn = "Sampler.__call__"
        B = self._check_inputs(fn, cond, x_init, key, step_noise)
        size = self._padded_size(B)
        batch_sh = sharding_lib.batch_sharding(self.mesh)
        rep = sharding_lib.replicated(self.mesh)
        batched = sharding_lib.pad_batch((cond, x_init, step_noise), size)
        cond_p, x_p, z_p, ids = sharding_lib.put(
            (*batched, np.arange(size, dtype=np.int32)), batch_sh
        )
        params, key = sharding_lib.put((params, key), rep)
        out = self._jitted(self._is_small(size))(params, cond_p, key, x_p, z_p, ids)
        return out if size == B else jax.tree.map(lambda a: a[:B], out)

    def pmap(
        self,
        params,
        cond,
        key,
        x_init=None,
        devices: Sequence[jax.Device] | None = None,
        *,
        step_noise=None,
    ) -> SampleOutput:
        """Runs the sampler under ``jax.pmap``; same numbers as the jit path.

        Per-clip arguments (``cond``, ``x_init``, ``step_noise``) are padded and
        split along ``B`` over ``devices``.
        """
        fn = "Sampler.pmap"
        B = self._check_inputs(fn, cond, x_init, key, step_noise)
        devices = tuple(jax.local_devices() if devices is None else devices)
        D = len(devices)
        if D < 1:
            raise ValueError(f"{fn}: argument 'devices' is empty; expected at least one device.")
        cache_key = tuple(d.id for d in devices)
        if cache_key not in self._pmap_cache:
            # One packed argument: jax 0.12's pmap takes a fast path that misreads a
            # per-argument in_axes tuple when the flat leaf count happens to equal the
            # argument count (e.g. 2-leaf params and x_init=None), so it is avoided.
            self._pmap_cache[cache_key] = jax.pmap(
                lambda args: self._core(*args),
                in_axes=((None, 0, None, 0, 0, 0),),
                devices=list(devices),
            )
        size = sharding_lib.padded_size(B, D)
        batched = sharding_lib.pad_batch((cond, x_init, step_noise), size)
        ids = jnp.arange(size, dtype=jnp.int32)
        split = lambda a: jnp.reshape(a, (D, size // D, *a.shape[1:]))  # noqa: E731
        cond_p, x_p, z_p, ids = jax.tree.map(split, (*batched, ids))
        out = self._pmap_cache[cache_key]((params, cond_p, key, x_p, z_p, ids))
        out = jax.tree.map(lambda a: a.reshape((size, *a.shape[2:]))[:B], out)
        return out


def _check_sampler_args(fn, denoise_fn, schedule, num_hypotheses, event_shape, clip):
    """Validates :func:`make_sampler`'s arguments; returns ``(event_shape, clip)`` normalised."""
    if not callable(denoise_fn):
        raise ValueError(
            f"{fn}: argument 'denoise_fn' is {type(denoise_fn).__name__}; expected a callable."
        )
    if not isinstance(schedule, Schedule):
        raise ValueError(
            f"{fn}: argument 'schedule' is {type(schedule).__name__}; expected a Schedule."
        )
    if (
        isinstance(num_hypotheses, bool)
        or not isinstance(num_hypotheses, (int, np.integer))
        or num_hypotheses < 1
    ):
        raise ValueError(
            f"{fn}: argument 'num_hypotheses' is {num_hypotheses!r}; expected an int >= 1."
        )
    try:
        event_shape = tuple(int(d) for d in event_shape)
    except TypeError:
        raise ValueError(
            f"{fn}: argument 'event_shape' is {event_shape!r}; expected a tuple of ints."
        ) from None
    if not event_shape or any(d < 1 for d in event_shape):
        raise ValueError(
            f"{fn}: argument 'event_shape' is {event_shape}; "
            "expected a non-empty tuple of ints >= 1."
        )
    if clip is not None:
        clip = float(clip)
        if not clip > 0:
            raise ValueError(f"{fn}: argument 'clip' is {clip}; expected > 0 or None.")
    return event_shape, clip


def make_sampler(
    denoise_fn: DenoiseFn,
    schedule: Schedule,
    time_grid: np.ndarray,
    *,
    event_shape: Sequence[int],
    num_hypotheses: int = 1,
    eta: float = 1.0,
    prediction: str = "x0",
    clip: float | None = None,
    flip_mode: str | None = None,
    flip_fn: FlipFn | None = None,
    cond_flip_fn: CondFlipFn | None = None,
    skeleton: str | skeleton_lib.Skeleton = "h36m",
    mesh: Mesh | None = None,
    compiler_options: Mapping[str, Any] | None = None,
    small_batch_options: tuple[int, Mapping[str, Any]] | None = None,
    max_denoise_rows: int | None = None,
) -> Sampler:
    """Builds a :class:`Sampler`.

    Args:
      denoise_fn: ``(params, x_t [N, *event], t [N] int32, cond dict [N, ...]) -> [N, *event]``.
      schedule: concrete :class:`~pose_jax.diffusion.schedules.Schedule`.
      time_grid: int ``[K, 2]`` ``(t, t_next)`` table from
        :func:`~pose_jax.diffusion.schedules.make_time_grid`.
      event_shape: shape of one sample, e.g. ``(243, 17, 3)`` or ``(17, 5)``.
      num_hypotheses: ``H``, independent samples per clip (own noise each).
      eta: 0 deterministic DDIM; 1 D3DP's stochastic update.
      prediction: ``'x0'`` (D3DP/FinePOSE) or ``'eps'`` (DiffPose/monoMotionDiff).
      clip: clamp bound for x_t (model input) and x0_hat, or ``None`` (no clamping).
        D3DP: ``1.1 * scale``.
      flip_mode: ``None``; ``'step'`` (mirror inside every step and average the
        predictions, D3DP); ``'chain'`` (run the chain on the mirrored input too
        and average the un-mirrored results, monoMotionDiff).
      flip_fn: mirror of the state ``[..., *event]``; default
        ``make_flip_fn(skeleton)`` (negates channel 0). For uvxyz use
        ``make_flip_fn(skeleton, negate_channels=(0, 2))``.
      cond_flip_fn: mirror of the cond dict (arrays ``[M, ...]``); default applies
        ``make_flip_fn(skeleton)`` to every leaf, so pass your own when cond
        holds non-pose entries.
      skeleton: layout used by the default flips.
      mesh: device mesh for the jit path; default: all devices on one ``'data'`` axis.
      compiler_options: XLA options for the jit path, e.g.
        ``{'xla_backend_optimization_level': 0}`` compiles several times faster on
        CPU at some run-time cost (the test suite uses it). Not applied to ``pmap``.
      small_batch_options: ``(max_rows, options)``: calls of at most ``max_rows``
        inputs per device compile with ``options`` instead (a second program; on
        XLA:CPU per-op overheads, not arithmetic, bound tiny calls). Jit path only.
      max_denoise_rows: at most this many rows per device in one denoiser call; a
        step's larger call runs as a ``lax.map`` over strided parts
        (:mod:`pose_jax.diffusion.chunking`; the same numbers up to float rounding,
        faster where a big call's activations overflow the caches). ``None`` or 0:
        one call. The jit path pads ``B`` so that the parts are equal.

    Returns:
      A :class:`Sampler`.

    Raises:
      ValueError: unknown prediction or flip mode, ``eta < 0``, a grid that does
        not fit the schedule, ``num_hypotheses < 1``, a non-positive ``clip``.
    """
    fn = "make_sampler"
    _checks.check_choice(fn, "prediction", prediction, PREDICTIONS)
    _checks.check_choice(fn, "flip_mode", flip_mode, FLIP_MODES)
    eta = _check_eta(fn, eta)
    event_shape, clip = _check_sampler_args(
        fn, denoise_fn, schedule, num_hypotheses, event_shape, clip
    )
    grid = validate_time_grid(time_grid, schedule.num_steps, fn=fn)
    coeffs = ddim_coefficients(schedule, grid, eta)
    if flip_mode is not None:
        if flip_fn is None:
            flip_fn = make_flip_fn(skeleton)
        if cond_flip_fn is None:
            cond_flip_fn = _default_cond_flip(make_flip_fn(skeleton))
    return Sampler(
        denoise_fn=denoise_fn,
        time_grid=grid,
        coeffs=coeffs,
        event_shape=event_shape,
        num_hypotheses=int(num_hypotheses),
        eta=eta,
        prediction=prediction,
        clip=clip,
        flip_mode=flip_mode,
        flip_fn=flip_fn,
        cond_flip_fn=cond_flip_fn,
        mesh=sharding_lib.make_mesh() if mesh is None else mesh,
        compiler_options=None if compiler_options is None else dict(compiler_options),
        small_batch_options=_check_small_batch(fn, small_batch_options),
        max_denoise_rows=chunking.check_max_rows(fn, max_denoise_rows),
    )


def _check_small_batch(fn: str, rule) -> tuple[int, dict[str, Any]] | None:
    if rule is None:
        return None
    try:
        max_rows, options = rule
        max_rows, options = int(max_rows), dict(options)
    except (TypeError, ValueError):
        raise ValueError(
            f"{fn}: small_batch_options={rule!r}; expected (max_rows, options dict)."
        ) from None
    if max_rows < 1:
        raise ValueError(f"{fn}: small_batch_options max_rows={max_rows}; expected >= 1.")
    return max_rows, options
