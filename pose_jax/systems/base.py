"""The interface every system implements; code outside ``pose_jax/systems`` uses only this.

A system turns a config into pure functions: the training loop sees
:meth:`System.init_params` and :meth:`System.loss_fn`, evaluation sees the
``sample_fn`` of :meth:`System.make_eval_sample_fn`, and the entry points call
the optional steps (:meth:`System.with_data_statistics`,
:meth:`System.protocol_info`, :meth:`System.sampler_conditioning`) whose defaults
here do nothing, so no caller ever probes a system for what it can do.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, NamedTuple

import jax
import numpy as np

from pose_jax import skeleton as skeleton_lib
from pose_jax import xla_options
from pose_jax.errors import ConfigError

Array = jax.Array
# ``sample_fn(pose_2d [b, F, J, 2], key, *, sequence=None) -> [b, K, H, F, J, 3]`` metres.
SampleFn = Callable[..., Any]


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
    """What a sampler computes, the same fields for every family.

    Attributes:
      num_frames: F, frames per clip (1: single frames).
      num_hypotheses: H, hypotheses drawn per input.
      num_iterations: K (D3DP, FinePOSE) or S (the refiners): sampler iterations.
      eta: DDIM stochasticity (D3DP 1.0; the refiners 0.0).
      flip_tta: flip test-time augmentation (each family's own kind).
      num_timesteps: the refiners' T_test (their chain starts below it); ignored by
        families that sample from pure noise.
      max_denoise_rows: at most this many rows per device in one denoiser call, larger
        calls running in parts (``diffusion.make_sampler``); 0: one call; None: the
        family's default for the platform (:meth:`System.denoise_rows`).
    """

    num_frames: int = 1
    num_hypotheses: int = 1
    num_iterations: int = 1
    eta: float = 1.0
    flip_tta: bool = True
    num_timesteps: int | None = None
    max_denoise_rows: int | None = None

    @classmethod
    def from_eval_config(cls, eval_config: Any, *, num_frames: int) -> SamplerSpec:
        """The spec an evaluation block (``config.eval``) describes."""
        steps = eval_config.get("num_timesteps")
        rows = eval_config.get("max_denoise_rows")
        return cls(
            num_frames=int(num_frames),
            num_hypotheses=int(eval_config.num_hypotheses),
            num_iterations=int(eval_config.num_iterations),
            eta=float(eval_config.eta),
            flip_tta=bool(eval_config.flip_tta),
            num_timesteps=None if steps is None else int(steps),
            max_denoise_rows=None if rows is None else int(rows),
        )


class SamplerInputs(NamedTuple):
    """A raw sampler call's inputs: ``sampler(params, cond, key, x_init)``.

    ``event`` is an array of the sampler's event shape (``x_init`` or zeros), for
    cost analysis of one denoiser call (:meth:`System.denoise`).
    """

    cond: dict[str, Array]
    x_init: Array | None
    event: Array


def set_entries(block: Any) -> dict[str, Any]:
    """The entries of a config block (ConfigDict or mapping) that are set (not None)."""
    if block is None:
        return {}
    return {k: v for k, v in dict(block.items()).items() if v is not None}


def input_layout(family: str, skeleton: str, keypoints: str | None, *, any_layout: bool) -> str:
    """The 2D input layout of a system: ``keypoints`` (default ``skeleton``), checked.

    ``any_layout``: the family's denoiser reads 2D joints as independent tokens, so the
    input may be in another layout than the 3D (COCO-17 in, Human3.6M-17 out); graph
    models (DiffPose's GCN, KTPFormer's priors) share one skeleton graph and need both
    the same.
    """
    keypoints = skeleton if keypoints is None else keypoints
    known = skeleton_lib.keypoint_layouts()
    if keypoints not in known:
        raise ConfigError(f"{family}: 2D keypoint layout {keypoints!r}; expected one of {known}.")
    if keypoints == "coco" and skeleton != "h36m":
        raise ConfigError(
            f"{family}: COCO-17 2D input needs the Human3.6M-17 skeleton (its J-Agg compares "
            f"the 2D converted to Human3.6M-17); got the {skeleton!r} skeleton."
        )
    if keypoints != skeleton and not any_layout:
        raise ConfigError(
            f"{family}: the dataset's 2D keypoints are in the {keypoints!r} layout and its 3D "
            f"in {skeleton!r}; this family's graph joins 2D and 3D joint by joint, so it needs "
            "both in one layout (COCO-17 input is supported by D3DP and FinePOSE)."
        )
    return keypoints


def model_kwargs(config: Any) -> dict[str, Any]:
    """``config.model.kwargs``: the overrides every family passes to ``get_model``."""
    return set_entries(config.model.get("kwargs"))


class System(abc.ABC):
    """A model family's training and sampling, as pure functions of its parameters.

    Attributes:
      skeleton: the 3D joint layout it predicts (``pose_jax.skeleton`` name).
      keypoints: the 2D input's joint layout: the skeleton's own, or ``'coco'`` for a
        family that takes COCO-17 input (D3DP and FinePOSE; flip test-time augmentation
        then mirrors the 2D with COCO's left/right lists and the 3D with the skeleton's).
      sampler_compiler_options: the XLA options of the family's samplers per platform
        (``{'cpu': {...}}``, :mod:`pose_jax.xla_options`); default none.
      small_batch_sampler_options: ``(max_rows, {platform: options})``: the options of
        sampler calls of at most ``max_rows`` inputs per device instead; default none.
      sampler_denoise_rows: ``{platform: rows}``: the most rows per device the family's
        samplers give the denoiser in one call there (larger calls run in parts);
        default none (one call everywhere).
    """

    skeleton: str
    keypoints: str
    sampler_compiler_options: ClassVar[xla_options.PlatformOptions] = {}
    small_batch_sampler_options: ClassVar[xla_options.SmallBatchOptions | None] = None
    sampler_denoise_rows: ClassVar[Mapping[str, int]] = {}

    @classmethod
    @abc.abstractmethod
    def from_config(
        cls, config: Any, *, skeleton: str = "h36m", keypoints: str | None = None
    ) -> System:
        """Builds the system from a config's ``model``, ``data`` and ``diffusion`` blocks.

        ``skeleton``: the 3D layout; ``keypoints``: the 2D input layout (None: the same).
        """

    @abc.abstractmethod
    def example_batch(self, num_frames: int) -> dict[str, np.ndarray]:
        """A batch of zeros with the training batch's keys and shapes (for init/restore)."""

    @abc.abstractmethod
    def init_params(self, key: Array, batch: Mapping[str, Array]) -> Any:
        """Initial trainable parameters; only the shapes of ``batch`` matter.

        A model with running state (BatchNorm) returns the Flax variables
        ``{'params', 'batch_stats'}``; the training step trains only the weights and
        stores the statistics its forward pass recorded (:mod:`pose_jax.model_state`).
        """

    @abc.abstractmethod
    def loss_fn(self, params: Any, batch: Mapping[str, Array], rng: Array) -> tuple[Array, dict]:
        """``(loss, metrics)`` of one training batch (pure, jit-able)."""

    @abc.abstractmethod
    def make_sampler(self, spec: SamplerSpec, *, mesh=None, compiler_options=None) -> Any:
        """The compiled sampler (``pose_jax.diffusion.Sampler``) of ``spec``.

        Called as ``sampler(params, cond, key, x_init)`` with the inputs of
        :meth:`sampler_inputs`; ``mesh`` splits the batch over devices.
        """

    @abc.abstractmethod
    def sampler_inputs(self, params: Any, pose_2d: Array, key: Array) -> SamplerInputs:
        """The raw sampler's inputs for clips ``pose_2d [B, F, J, 2]`` (benchmarks).

        ``key`` draws what the family starts from when it has no trained initialiser.
        """

    @abc.abstractmethod
    def denoise(self, params: Any, x_t: Array, t: Array, cond: Mapping[str, Array]) -> Array:
        """One denoiser call, in the sampler's units (for cost analysis and tests)."""

    @abc.abstractmethod
    def with_compute_dtype(self, dtype: Any) -> System:
        """The system with its denoiser computing in ``dtype`` (parameters unchanged)."""

    @abc.abstractmethod
    def make_eval_sample_fn(self, eval_config: Any, params: Any, *, num_frames: int) -> SampleFn:
        """The evaluation sampler: ``sample_fn(pose_2d, key, *, sequence=None)``.

        ``eval_config`` is the config's ``eval`` block (hypotheses, iterations, eta,
        flip); ``sequence`` is the evaluation window's metadata (e.g. its action).
        """

    # -- What the input pipeline must give (defaults: D3DP's). -----------------------

    @property
    def batch_keys(self) -> tuple[str, ...]:
        """The batch entries :meth:`loss_fn` reads (the loop places only these on devices)."""
        return ("pose_3d", "pose_2d")

    @property
    def single_frame(self) -> bool:
        """Whether training batches are single frames ``[B, J, ...]`` instead of clips."""
        return False

    def sampler_options(
        self, platform: str, given: Mapping[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """XLA options of a sampler on ``platform``: the family's, updated with ``given``."""
        return xla_options.resolve(self.sampler_compiler_options, platform, given)

    def small_batch_options(
        self, platform: str, given: Mapping[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]] | None:
        """``(max_rows, options)`` of small sampler calls on ``platform``, or None."""
        return xla_options.resolve_small_batch(self.small_batch_sampler_options, platform, given)

    def denoise_rows(self, platform: str, given: int | None = None) -> int | None:
        """Rows per device in one denoiser call on ``platform``: ``given`` (0: one call), else
        the family's :attr:`sampler_denoise_rows`; None means one call."""
        rows = self.sampler_denoise_rows.get(platform) if given is None else given
        return rows or None

    # -- Optional steps: the defaults are what a system without them does. ----------

    def with_data_statistics(self, batches: Iterable[Mapping[str, Any]]) -> System:
        """The system after fitting what it fits to the training split (default: nothing)."""
        del batches
        return self

    def protocol_info(self, eval_config: Any) -> dict[str, Any]:
        """Entries the evaluation protocol block reports for this system (default: none)."""
        del eval_config
        return {}
