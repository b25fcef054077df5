"""D3DP (ICCV'23): x0-predicting diffusion on 243-frame clips.

As paTRICK-swk/D3DP common/diffusionpose.py and main.py.

Training: one ``t ~ U{0..T-1}`` per clip, ``x_t = sqrt(abar) x0 + sqrt(1-abar) eps``
clamped to ``+-1.1 * scale``, loss MPJPE(x0_hat, x0) with the root joint included.
Sampling: DDIM (eta 1 by default) from N(0, I) over ``int(linspace(-1, T-1, K+1))``,
H hypotheses, flip test-time augmentation inside every step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from pose_jax import diffusion, xla_options
from pose_jax import skeleton as skeleton_lib
from pose_jax.models import ModelFns, get_model, make_model_fns
from pose_jax.systems.base import (
    SamplerInputs,
    SamplerSpec,
    System,
    input_layout,
    model_kwargs,
)

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class D3DPSystem(System):
    """Pure training and sampling functions of D3DP around a denoiser.

    Attributes:
      model: the denoiser's pure functions (``make_model_fns``).
      schedule: diffusion schedule (cosine, T = 1000 for the paper).
      scale: signal scale (``-scale``, 1.0): x0 = pose * scale.
      clip: clamp bound in units of ``scale`` (1.1): x_t and x0_hat are clamped to
        ``+-clip * scale``.
      skeleton: the 3D joint layout (flip test-time augmentation of the state).
      keypoints: the 2D input's layout (flip of the condition): the skeleton's, or
        ``'coco'`` (D3DP's in-the-wild model: COCO-17 in, Human3.6M-17 out).
    """

    model: ModelFns
    schedule: diffusion.Schedule
    scale: float = 1.0
    clip: float = 1.1
    skeleton: str = "h36m"
    keypoints: str = "h36m"
    # MixSTE's sampler runs faster with Eigen's dots than in XLA:CPU's YNNPACK fusions
    # (1.2-1.3x, BENCHMARKS.md); its training step does not (it keeps XLA's defaults).
    sampler_compiler_options: ClassVar[xla_options.PlatformOptions] = {
        "cpu": xla_options.NO_YNN_FUSIONS
    }

    @classmethod
    def from_config(
        cls, config: Any, *, skeleton: str = "h36m", keypoints: str | None = None
    ) -> D3DPSystem:
        """Builds the system from a config's ``model``, ``data`` and ``diffusion`` blocks.

        The denoiser is ``get_model(config.model.name, **config.model.kwargs)`` with the
        clip length and drop-path rate of the config added (kwargs win).
        """
        overrides = {
            "num_frames": config.data.num_frames,
            "drop_path_rate": config.model.drop_path_rate,
            **model_kwargs(config),
        }
        module = get_model(config.model.name, **overrides)
        return cls(
            make_model_fns(module),
            diffusion.make_schedule(config.diffusion.schedule, config.diffusion.num_steps),
            scale=config.diffusion.scale,
            clip=config.diffusion.clip,
            skeleton=skeleton,
            keypoints=input_layout("D3DP", skeleton, keypoints, any_layout=True),
        )

    # -- training ---------------------------------------------------------------

    def example_batch(self, num_frames: int, num_joints: int = 17) -> dict[str, np.ndarray]:
        """A one-clip batch of zeros with the training batch's shapes (for init/restore)."""
        return {
            "pose_3d": np.zeros((1, num_frames, num_joints, 3), np.float32),
            "pose_2d": np.zeros((1, num_frames, num_joints, 2), np.float32),
        }

    def init_params(self, key: Array, batch: Mapping[str, Array]) -> Any:
        """Initial denoiser parameters; only the shapes of ``batch`` matter."""
        t0 = jnp.zeros(batch["pose_3d"].shape[:1], jnp.int32)
        return self.model.init_fn(key, batch["pose_3d"], t0, {"pose_2d": batch["pose_2d"]})

    def denoise(self, params: Any, x_t: Array, t: Array, cond: Mapping[str, Array], **kw) -> Array:
        """``x_t`` (in scaled units) -> x0_hat in scaled units, as D3DP's ``model_predictions``."""
        pred = self.model.apply_fn(params, x_t / self.scale, t, {"pose_2d": cond["pose_2d"]}, **kw)
        return pred * self.scale

    def loss_fn(self, params: Any, batch: Mapping[str, Array], rng: Array):
        """D3DP loss on a batch ``{'pose_3d': [B, F, J, 3], 'pose_2d': [B, F, J, 2]}``.

        ``pose_3d`` is root-relative with the root slot at 0 (as the input
        pipeline gives it). Returns ``(loss, {'mpjpe_m': loss})``.
        """
        x0 = batch["pose_3d"] * self.scale
        b = x0.shape[0]
        k_t, k_eps, k_drop = jax.random.split(rng, 3)
        t = diffusion.uniform_timesteps(k_t, b, self.schedule.num_steps)
        eps = jax.random.normal(k_eps, x0.shape, x0.dtype)
        x_t = diffusion.q_sample(self.schedule, x0, t, eps)
        bound = self.clip * self.scale
        x_t = jnp.clip(x_t, -bound, bound)
        pred = self.denoise(params, x_t, t, batch, train=True, rng=k_drop)
        loss = diffusion.mpjpe_x0_loss(pred / self.scale, batch["pose_3d"])
        return loss, {"mpjpe_m": loss}

    # -- sampling ---------------------------------------------------------------

    def make_sampler(
        self,
        spec: SamplerSpec,
        *,
        mesh=None,
        compiler_options: Mapping[str, Any] | None = None,
    ) -> diffusion.Sampler:
        """The compiled D3DP sampler of ``spec`` (``num_timesteps`` is not used).

        Called as ``sampler(params, {'pose_2d': [B, F, J, 2], ...}, key)``; its
        ``x0_steps [B, K, H, F, J, 3]`` are in scaled units (divide by ``scale``
        for metres; :meth:`sample_poses` does). Flip TTA mirrors only ``pose_2d``;
        other cond entries (FinePOSE's prompt features) pass through unchanged; the 2D
        is mirrored in its own layout (:attr:`keypoints`), the state in the skeleton's.
        ``compiler_options``: XLA options of the jit path (``diffusion.make_sampler``),
        on top of the family's for the mesh's platform (:meth:`sampler_options`).
        """
        flip = diffusion.make_flip_fn(self.keypoints)

        def cond_flip_fn(cond):
            return {**cond, "pose_2d": flip(cond["pose_2d"])}

        def denoise_fn(params, x_t, t, cond):
            return self.denoise(params, x_t, t, cond)

        grid = diffusion.make_time_grid("d3dp", self.schedule.num_steps, spec.num_iterations)
        num_joints = skeleton_lib.get_skeleton(self.skeleton).num_joints
        platform = xla_options.platform_of(mesh)
        return diffusion.make_sampler(
            denoise_fn,
            self.schedule,
            grid,
            event_shape=(spec.num_frames, num_joints, 3),
            num_hypotheses=spec.num_hypotheses,
            eta=spec.eta,
            prediction="x0",
            clip=self.clip * self.scale,
            flip_mode="step" if spec.flip_tta else None,
            cond_flip_fn=cond_flip_fn,
            skeleton=self.skeleton,
            mesh=mesh,
            compiler_options=self.sampler_options(platform, compiler_options),
            max_denoise_rows=self.denoise_rows(platform, spec.max_denoise_rows),
        )

    def make_eval_sample_fn(self, eval_config: Any, params: Any, *, num_frames: int):
        """``sample_fn(pose_2d [b, F, J, 2], key, *, sequence=None) -> [b, K, H, F, J, 3]`` metres.

        Reads ``num_hypotheses``, ``num_iterations``, ``eta`` and ``flip_tta`` from
        ``eval_config``; ``params`` are placed on the sampler's mesh once.
        """
        sampler = self.make_sampler(
            SamplerSpec.from_eval_config(eval_config, num_frames=num_frames)
        )
        placed = sampler.place_params(params)

        def sample_fn(pose_2d, key, *, sequence=None):
            del sequence  # D3DP conditions on the 2D only
            return self.sample_poses(sampler, placed, pose_2d, key)

        return sample_fn

    def sampler_inputs(self, params: Any, pose_2d: Array, key: Array) -> SamplerInputs:
        """``{'pose_2d'}``; no ``x_init`` (D3DP starts from noise drawn by the sampler)."""
        del params, key
        event = jnp.zeros((*pose_2d.shape[:-1], 3), jnp.float32)
        return SamplerInputs({"pose_2d": pose_2d}, None, event)

    def with_compute_dtype(self, dtype: Any) -> D3DPSystem:
        """The denoiser computing in ``dtype`` (e.g. bfloat16); parameters stay float32."""
        return dataclasses.replace(self, model=make_model_fns(self.model.module.clone(dtype=dtype)))

    def sample_poses(self, sampler: diffusion.Sampler, params: Any, pose_2d: Array, key: Array):
        """Runs ``sampler`` and returns every iteration's poses ``[B, K, H, F, J, 3]`` in metres."""
        out = sampler(params, {"pose_2d": pose_2d}, key)
        return out.x0_steps / self.scale
