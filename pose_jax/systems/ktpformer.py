"""KTPFormer (CVPR'24) as a deterministic 2D -> 3D lifter of 243-frame clips.

As JihuaPeng/KTPFormer ``run_ktpformer.py`` (the network: :mod:`pose_jax.models.ktpformer`).

Training: regression of the root-relative pose of every frame (root slot at 0), with

  ``L = wMPJPE + 0.5 * L_tc + 2.0 * MPJVE``

* ``wMPJPE = mean_{b,t,j} w_j ||p - g||``, joint weights
  ``[1, 1, 2.5, 2.5, 1, 2.5, 2.5, 1, 1, 1, 1.5, 1.5, 4, 4, 1.5, 4, 4]`` (H36M order);
* ``L_tc = mean_{b,t,j,xyz} w_j (p_{t+1} - p_t)^2`` (the prediction only);
* ``MPJVE = mean ||(p_{t+1} - p_t) - (g_{t+1} - g_t)||``.

The reference calls ``loss.backward(loss)``, so its gradient is ``L * grad L``
(``config.optim.gradient_mode='loss_times_grad'`` in ``configs/ktpformer_h36m.py``).
On MPI-INF-3DHP (which the reference does not train) the H36M weights go to the
3DHP joints of the same meaning (``skeleton.MPI_INF_3DHP_TO_H36M``).

Evaluation: one prediction per clip, averaged with the un-mirrored prediction of
the mirrored 2D (flip test-time augmentation, as the reference always does). The
sampler returns it as ``[B, K=1, H=1, F, J, 3]``: with one hypothesis the four
aggregations of the tables (J-Best, P-Best, P-Agg, J-Agg) are all the prediction's
error. The prediction's root is not zeroed (its root error counts, as in the reference).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pose_jax import diffusion
from pose_jax import sharding as sharding_lib
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

# run_ktpformer.py's per-joint weights of wMPJPE and L_tc (Human3.6M-17 order).
H36M_JOINT_WEIGHTS = (1, 1, 2.5, 2.5, 1, 2.5, 2.5, 1, 1, 1, 1.5, 1.5, 4, 4, 1.5, 4, 4)


def joint_weights(skeleton: str) -> tuple[float, ...]:
    """The loss's joint weights in the layout of ``skeleton`` (3DHP: by joint meaning)."""
    if skeleton_lib.get_skeleton(skeleton).name == "h36m":
        return tuple(float(w) for w in H36M_JOINT_WEIGHTS)
    w = np.zeros(17, np.float64)
    w[list(skeleton_lib.MPI_INF_3DHP_TO_H36M)] = H36M_JOINT_WEIGHTS
    return tuple(float(v) for v in w)


def _norm(x: Array) -> Array:
    """Euclidean norm over the last axis with a zero (not NaN) gradient at 0, as torch's.

    Edge-padded clip frames repeat, so their velocities (and errors) can be exactly 0.
    """
    sq = jnp.sum(x * x, axis=-1)
    pos = sq > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def ktpformer_losses(pred: Array, gt: Array, weights: Array) -> dict[str, Array]:
    """The three terms of the loss on ``[B, F, J, 3]`` poses (metres) and ``[J]`` weights."""
    w = jnp.asarray(weights, jnp.float32)
    err = _norm(pred - gt)
    dp = pred[:, 1:] - pred[:, :-1]
    dg = gt[:, 1:] - gt[:, :-1]
    return {
        "wmpjpe_m": jnp.mean(w * err),
        "temporal_consistency": jnp.mean(w[:, None] * jnp.square(dp)),
        "mpjve_m": jnp.mean(_norm(dp - dg)),
        "mpjpe_m": jnp.mean(err),
    }


@dataclasses.dataclass(frozen=True)
class LifterSampler:
    """A deterministic lifter behind the sampler interface: one network pass per call.

    Called as ``sampler(params, {'pose_2d': [B, F, J, 2]}, key, x_init=None)``; returns a
    :class:`~pose_jax.diffusion.SampleOutput` with ``x0_steps [B, 1, 1, F, J, 3]`` (``key``
    and ``x_init`` are not used). The batch is padded to a multiple of the mesh size
    and split over it, as the diffusion samplers do.
    """

    predict_fn: Any  # (params, pose_2d [B, F, J, 2]) -> [B, F, J, 3]
    mesh: Any
    compiler_options: Mapping[str, Any] | None = None

    def __post_init__(self):
        def core(params, pose_2d):
            out = self.predict_fn(params, pose_2d)[:, None, None]
            return diffusion.SampleOutput(x0_steps=out, x=out[:, 0])

        out_sh = sharding_lib.batch_sharding(self.mesh)
        opts = None if self.compiler_options is None else dict(self.compiler_options)
        jitted = jax.jit(
            core,
            out_shardings=diffusion.SampleOutput(x0_steps=out_sh, x=out_sh),
            compiler_options=opts,
        )
        object.__setattr__(self, "_jitted", jitted)

    def place_params(self, params):
        """Replicates ``params`` over the mesh (once, outside the loop)."""
        return sharding_lib.put(params, sharding_lib.replicated(self.mesh))

    def __call__(self, params, cond, key=None, x_init=None) -> diffusion.SampleOutput:
        del key, x_init  # deterministic: nothing to draw, nothing to refine
        pose_2d = cond["pose_2d"]
        b = int(np.shape(pose_2d)[0])
        size = sharding_lib.padded_size(b, self.mesh.size)
        x = sharding_lib.put(
            sharding_lib.pad_batch(pose_2d, size), sharding_lib.batch_sharding(self.mesh)
        )
        params = sharding_lib.put(params, sharding_lib.replicated(self.mesh))
        out = self._jitted(params, x)
        return out if size == b else jax.tree.map(lambda a: a[:b], out)


@dataclasses.dataclass(frozen=True)
class KTPFormerSystem(System):
    """KTPFormer's training and evaluation as pure functions of its (stateful) params.

    Attributes:
      model: the network's pure functions (``make_model_fns``); its params hold the
        BatchNorm statistics beside the weights (:mod:`pose_jax.model_state`).
      skeleton: joint layout (flip TTA, joint weights).
      tc_weight: weight of the temporal-consistency term (0.5).
      velocity_weight: weight of the velocity term (2.0).
    """

    model: ModelFns
    skeleton: str = "h36m"
    tc_weight: float = 0.5
    velocity_weight: float = 2.0

    @property
    def keypoints(self) -> str:
        """The 2D input layout: always the skeleton's (the priors' graph is the skeleton's)."""
        return self.skeleton

    @classmethod
    def from_config(
        cls, config: Any, *, skeleton: str = "h36m", keypoints: str | None = None
    ) -> KTPFormerSystem:
        """``get_model(config.model.name, **config.model.kwargs)`` with the clip length and
        drop-path rate of the config added (kwargs win)."""
        input_layout("KTPFormer", skeleton, keypoints, any_layout=False)
        overrides = {
            "num_frames": config.data.num_frames,
            "drop_path_rate": config.model.drop_path_rate,
            **model_kwargs(config),
        }
        module = get_model(config.model.name, **overrides)
        return cls(
            make_model_fns(module),
            skeleton=skeleton,
            tc_weight=float(config.model.get("tc_weight", 0.5)),
            velocity_weight=float(config.model.get("velocity_weight", 2.0)),
        )

    # -- network ------------------------------------------------------------------

    def predict(self, params: Any, pose_2d: Array, *, train: bool = False, rng=None) -> Array:
        """``pose_2d [B, F, J, 2]`` -> root-relative 3D ``[B, F, J, 3]`` (one pass, no flip)."""
        b, f, j, _ = pose_2d.shape
        x_t = jnp.zeros((b, f, j, 3), jnp.float32)  # ignored by the lifter
        t = jnp.zeros((b,), jnp.int32)
        return self.model.apply_fn(params, x_t, t, {"pose_2d": pose_2d}, train=train, rng=rng)

    def predict_flip_tta(self, params: Any, pose_2d: Array) -> Array:
        """The prediction averaged with the un-mirrored prediction of the mirrored input.

        Both passes run as one batch (BatchNorm uses its running statistics here, so
        each clip is normalised alone, as in the reference's two calls).
        """
        b = pose_2d.shape[0]
        flipped = skeleton_lib.flip_pose(pose_2d, self.skeleton)
        out = self.predict(params, jnp.concatenate([pose_2d, flipped], axis=0))
        return 0.5 * (out[:b] + skeleton_lib.flip_pose(out[b:], self.skeleton))

    # -- training -----------------------------------------------------------------

    def example_batch(self, num_frames: int, num_joints: int = 17) -> dict[str, np.ndarray]:
        """A one-clip batch of zeros with the training batch's shapes (for init/restore)."""
        return {
            "pose_3d": np.zeros((1, num_frames, num_joints, 3), np.float32),
            "pose_2d": np.zeros((1, num_frames, num_joints, 2), np.float32),
        }

    def init_params(self, key: Array, batch: Mapping[str, Array]) -> Any:
        """Initial params ``{'params', 'batch_stats'}``; only the shapes of ``batch`` matter."""
        p2d = batch["pose_2d"]
        x_t = jnp.zeros((*p2d.shape[:-1], 3), jnp.float32)
        t0 = jnp.zeros(p2d.shape[:1], jnp.int32)
        return self.model.init_fn(key, x_t, t0, {"pose_2d": p2d})

    def loss_fn(self, params: Any, batch: Mapping[str, Array], rng: Array):
        """``wMPJPE + 0.5 L_tc + 2 MPJVE`` on ``{'pose_3d' [B, F, J, 3], 'pose_2d'}``.

        ``pose_3d`` is root-relative with the root slot at 0 (as the input pipeline
        gives it). BatchNorm runs in training mode; its new running statistics reach
        the training step through :mod:`pose_jax.model_state`. Returns ``(loss, metrics)``.
        """
        pred = self.predict(params, batch["pose_2d"], train=True, rng=rng)
        terms = ktpformer_losses(pred, batch["pose_3d"], joint_weights(self.skeleton))
        loss = (
            terms["wmpjpe_m"]
            + self.tc_weight * terms["temporal_consistency"]
            + self.velocity_weight * terms["mpjve_m"]
        )
        return loss, terms

    # -- evaluation ---------------------------------------------------------------

    def make_sampler(self, spec: SamplerSpec, *, mesh=None, compiler_options=None):
        """A :class:`LifterSampler` (flip TTA per ``spec.flip_tta``); H and K must be 1."""
        fn = "KTPFormerSystem.make_sampler"
        if spec.num_hypotheses != 1 or spec.num_iterations != 1:
            raise ValueError(
                f"{fn}: KTPFormer is deterministic: one hypothesis and one pass "
                f"(num_hypotheses=1, num_iterations=1); got H={spec.num_hypotheses}, "
                f"K={spec.num_iterations}."
            )
        predict = self.predict_flip_tta if spec.flip_tta else self.predict
        mesh = mesh if mesh is not None else sharding_lib.make_mesh()
        return LifterSampler(predict, mesh, compiler_options)

    def sampler_inputs(self, params: Any, pose_2d: Array, key: Array) -> SamplerInputs:
        """``{'pose_2d'}``, no ``x_init``; ``event`` is the pose shape (for MACs)."""
        del params, key
        event = jnp.zeros((*pose_2d.shape[:-1], 3), jnp.float32)
        return SamplerInputs({"pose_2d": pose_2d}, None, event)

    def denoise(self, params: Any, x_t: Array, t: Array, cond: Mapping[str, Array]) -> Array:
        """One network pass on ``cond['pose_2d']`` (``x_t`` and ``t`` are ignored)."""
        del x_t, t
        return self.predict(params, cond["pose_2d"])

    def with_compute_dtype(self, dtype: Any) -> KTPFormerSystem:
        """The network computing in ``dtype`` (parameters stay float32)."""
        return dataclasses.replace(self, model=make_model_fns(self.model.module.clone(dtype=dtype)))

    def make_eval_sample_fn(self, eval_config: Any, params: Any, *, num_frames: int):
        """``sample_fn(pose_2d [b, F, J, 2], key, *, sequence=None) -> [b, 1, 1, F, J, 3]``.

        Reads ``flip_tta`` (and requires ``num_hypotheses = num_iterations = 1``).
        """
        sampler = self.make_sampler(
            SamplerSpec.from_eval_config(eval_config, num_frames=num_frames),
            compiler_options=eval_config.get("compiler_options") or None,
        )
        placed = sampler.place_params(params)

        def sample_fn(pose_2d, key, *, sequence=None):
            del sequence, key  # conditioned on the 2D only; nothing random
            return sampler(placed, {"pose_2d": pose_2d}).x0_steps

        return sample_fn

    def protocol_info(self, eval_config: Any) -> dict[str, Any]:
        """What the evaluation tables should say about this system's predictions."""
        del eval_config
        return {
            "deterministic": True,
            "hypotheses_note": (
                "one deterministic prediction per clip (H = K = 1): J-Best, P-Best, P-Agg "
                "and J-Agg are all the prediction's error"
            ),
        }
