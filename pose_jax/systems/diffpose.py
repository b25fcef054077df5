"""DiffPose (frame, video) and monoMotionDiff: diffusion *refinement* of a deterministic lifter.

One system covers the three references (GONGJIA0208/Diffpose, GONGJIA0208/Diffpose_video,
jjkislele/monoMotionDiff); a variant is a
choice of parts made in the config:

==============  =================  ===============  ===========================  =========
variant         initialiser        denoiser         uv training noise scale      flip TTA
==============  =================  ===============  ===========================  =========
DiffPose frame  GraFormer / frame  GCNdiff          GMM fitted to det - GT 2D    none
DiffPose video  MixSTE / clip      GCNdiff / frame  constant [0.5, 0.5, 1, 1, 1] init only
monoMotionDiff  GraFormer / frame  CCE + CAG model  constant [0.1, 0.1, 1, 1, 1] chain
==============  =================  ===============  ===========================  =========

The state is uvxyz ``[N, J, 5]`` (normalised 2D, root-relative metres) of single
frames. Two training stages share the system (``config.model.stage``):

* ``'lifter'``: the initialiser alone, MPJPE to the ground truth (the references
  ship pretrained lifters; their training code is not public).
* ``'diffusion'``: epsilon-prediction with antithetic timesteps on
  ``x0 = [uv, xyz_gt]``, ``eps' = eps * scale``, loss ``sum (eps' - eps_hat)^2``;
  the frozen initialiser's params are read from ``config.model.lifter_path`` (a
  pose_jax run directory or a ``launch.convert`` output) and used at evaluation.

Sampling (evaluation): ``x_init = [uv, init(uv) - root]`` is taken as ``x_t`` at
the first step of ``make_time_grid('diffpose', T_test, S)`` without adding noise,
DDIM with ``eta = 0``; with flip TTA (monoMotionDiff) the whole chain also runs on
the mirrored input and the un-mirrored results are averaged (``flip_mode='chain'``).
Single-frame models process every frame of an evaluation window independently,
so the evaluation sees ``[b, K, H, F, J, 3]`` as for D3DP.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pose_jax import _checks, camera, diffusion, xla_options
from pose_jax import skeleton as skeleton_lib
from pose_jax.models import ModelFns, gcn, get_model, make_model_fns
from pose_jax.systems.base import (
    SamplerInputs,
    SamplerSpec,
    System,
    input_layout,
    model_kwargs,
    set_entries,
)

Array = jax.Array

STAGES = ("lifter", "diffusion")
UV_NOISE = ("constant", "gmm")
TRAIN_UV = ("input", "gt")
# Below this RMS (normalised units, ~0.05 px at 1000 px width) the training 2D is the
# projected ground truth: there are no detections to fit a GMM to.
_NO_DETECTION_RMS = 1e-4


def rbg_key(key: Array) -> Array:
    """An ``'rbg'`` key (XLA's RngBitGenerator) drawn from ``key``, for dropout masks and init.

    The GCN stacks have ~6 dropout sites per layer and ~200 parameter tensors;
    threefry draws make the compiled train step and init take several times longer
    to build on CPU (train step of the tiny model: 20 s vs 4 s). The draws are a pure
    function of ``key`` on a given backend and device layout (rbg bits are not
    guaranteed to match across shardings, unlike threefry's).
    """
    return jax.random.wrap_key_data(jax.random.bits(key, (4,), jnp.uint32), impl="rbg")


# ---------------------------------------------------------------------------
# Initialisers (deterministic 2D -> 3D models)
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Initializer:
    """A deterministic lifter as two pure functions.

    Attributes:
      init_fn: ``(key, pose_2d) -> params``.
      apply_fn: ``(params, pose_2d, *, train=False, rng=None) -> xyz``; ``pose_2d``
        is ``[N, J, 2]`` for a frame-wise model, ``[B, F, J, 2]`` for a clip model.
      frame_wise: whether the model sees single frames (GraFormer) or clips (MixSTE).
    """

    init_fn: Any
    apply_fn: Any
    frame_wise: bool


def make_initializer(module: nn.Module) -> Initializer:
    """Wraps a lifter: a :class:`~pose_jax.models.gcn.GraFormer` (frame-wise), or any
    denoiser-signature clip model run deterministically with ``x_t = 0, t = 0``
    (DiffPose-video's MixSTE2: ``MixSTEDenoiser(diffusion_inputs=False)``, which
    ignores both)."""
    if isinstance(module, gcn.GraFormer):

        def init_fn(key, pose_2d):
            return module.init({"params": key}, pose_2d)["params"]

        def apply_fn(params, pose_2d, *, train=False, rng=None):
            rngs = {"dropout": rng} if rng is not None else None
            return module.apply({"params": params}, pose_2d, train=train, rngs=rngs)

        return Initializer(init_fn, apply_fn, frame_wise=True)

    fns = make_model_fns(module)

    def _zeros(pose_2d):
        x_t = jnp.zeros((*pose_2d.shape[:-1], 3), pose_2d.dtype)
        return x_t, jnp.zeros(pose_2d.shape[:1], jnp.int32), {"pose_2d": pose_2d}

    def init_fn(key, pose_2d):
        return fns.init_fn(key, *_zeros(pose_2d))

    def apply_fn(params, pose_2d, *, train=False, rng=None):
        return fns.apply_fn(params, *_zeros(pose_2d), train=train, rng=rng)

    return Initializer(init_fn, apply_fn, frame_wise=False)


def load_params(path: str, *, use_ema: bool = False) -> Any:
    """Params saved by a pose_jax run (``PATH/checkpoints``, latest step) or ``launch.convert``
    (``PATH/params``), as a nested dict of arrays.

    Args:
      path: run directory or converter output directory (local or ``gs://``).
      use_ema: from a run, take the EMA params instead of the raw ones.
    """
    import orbax.checkpoint as ocp
    from etils import epath

    fn = "load_params"
    root = epath.Path(path)
    if (root / "checkpoints").exists():
        from pose_jax.training import checkpointing

        manager = checkpointing.make_checkpoint_manager(
            root / "checkpoints", with_data_iterator=False
        )
        step = manager.latest_step()
        if step is None:
            raise FileNotFoundError(f"{fn}: {root / 'checkpoints'} holds no checkpoint.")
        state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
        manager.close()
        state = state["state"]
        key = "ema_params" if use_ema else "params"
        if state.get(key) is None:
            raise ValueError(f"{fn}: the run at {path} kept no {key!r}.")
        return state[key]
    if (root / "params").exists():
        with ocp.StandardCheckpointer() as ckptr:
            return ckptr.restore(root / "params")
    raise FileNotFoundError(
        f"{fn}: {path!r} has neither checkpoints/ (a pose_jax run) nor params/ "
        "(a launch.convert output)."
    )


def _check_params_like(fn: str, what: str, params: Any, expected: Any) -> None:
    got = jax.tree.map(lambda a: tuple(np.shape(a)), params)
    want = jax.tree.map(lambda a: tuple(a.shape), expected)
    if jax.tree.structure(got) != jax.tree.structure(want) or got != want:
        raise ValueError(
            f"{fn}: the {what} params do not fit the configured model: got "
            f"{jax.tree_util.tree_flatten_with_path(got)[0][:6]}..., expected "
            f"{jax.tree_util.tree_flatten_with_path(want)[0][:6]}... (check config.model.lifter "
            "and its sizes)."
        )


# ---------------------------------------------------------------------------
# The system
# ---------------------------------------------------------------------------


# Sampler calls of at most this many poses per device count as small (see the class).
SMALL_BATCH_ROWS = 4
# Rows per denoiser call by denoiser and platform. A call of 512+ rows (256 poses and
# their mirrors) overflows the CPU caches; in parts the refiners' samplers ran, in one
# process against one call at 256 poses: monoMotionDiff 0.66 of the time in parts of 64
# (0.76 in 128), GCNdiff 0.93 in parts of 256 (0.63 at 512 poses; BENCHMARKS.md).
DENOISE_ROWS: Mapping[type, Mapping[str, int]] = {
    gcn.GCNDiff: {"cpu": 256},
    gcn.MonoMotionDiff: {"cpu": 64},
}


@dataclasses.dataclass(frozen=True, eq=False)
class DiffPoseSystem(System):
    """Training and refinement sampling of DiffPose / monoMotionDiff.

    Attributes:
      stage: ``'lifter'`` (train the initialiser) or ``'diffusion'``.
      initializer: the deterministic lifter (:func:`make_initializer`).
      denoiser: epsilon-predicting denoiser on ``[N, J, 5]`` (``make_model_fns``).
      schedule: linear, T = 51.
      noise_scale: constant uvxyz noise scale ``[5]`` (also the GMM fallback).
      uv_noise: ``'constant'`` or ``'gmm'`` (per-joint uv scale of a sampled GMM
        component fitted on detected - ground-truth 2D; :meth:`with_data_statistics`).
      gmm: the fitted :class:`~pose_jax.diffusion.GMMParams` (``[J, K]``), or None.
      gmm_scale_kind: ``'std'`` (sqrt of the component variance) or ``'variance'``.
      gmm_components, gmm_iters, gmm_fit_frames, gmm_seed: the fit's settings.
      train_uv: the uv of ``x0`` in training: ``'input'`` (the dataset's 2D) or
        ``'gt'`` (the 3D projected with the camera, as DiffPose-frame's GT-GMM data;
        a GMM component's mean residual is added to it).
      reroot_init: subtract the root from the initialiser's xyz (not in DiffPose-video).
      initializer_params: frozen lifter params for the diffusion stage, or None.
      skeleton: joint layout (flips, root).
      sampler_denoise_rows: ``{platform: rows}`` per denoiser call of its samplers
        (:data:`DENOISE_ROWS` of the denoiser; :meth:`System.denoise_rows`).
    """

    stage: str
    initializer: Initializer
    denoiser: ModelFns
    schedule: diffusion.Schedule
    noise_scale: tuple[float, ...] = (0.1, 0.1, 1.0, 1.0, 1.0)
    uv_noise: str = "constant"
    gmm: diffusion.GMMParams | None = None
    gmm_scale_kind: str = "std"
    gmm_components: int = 3
    gmm_iters: int = 50
    gmm_fit_frames: int = 200_000
    gmm_seed: int = 0
    train_uv: str = "input"
    reroot_init: bool = True
    initializer_params: Any = None
    skeleton: str = "h36m"
    # A call of a few poses is ~300 tiny ops: XLA:CPU's YNNPACK fusions cost more per op
    # than Eigen's dots there (monoMotionDiff, one pose: 4.4 -> 2.8 ms), while at 16-256 poses
    # they make both refiners faster (BENCHMARKS.md). So only small calls turn them off.
    small_batch_sampler_options: ClassVar[xla_options.SmallBatchOptions] = (
        SMALL_BATCH_ROWS,
        {"cpu": xla_options.NO_YNN_FUSIONS},
    )
    # The denoiser's entry of DENOISE_ROWS (from_config); none: one call everywhere.
    sampler_denoise_rows: Mapping[str, int] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        fn = "DiffPoseSystem"
        _checks.check_choice(fn, "stage", self.stage, STAGES)
        _checks.check_choice(fn, "uv_noise", self.uv_noise, UV_NOISE)
        _checks.check_choice(fn, "train_uv", self.train_uv, TRAIN_UV)
        if len(self.noise_scale) != 5:
            raise ValueError(f"{fn}: noise_scale {self.noise_scale} must have 5 entries (uvxyz).")

    @property
    def single_frame(self) -> bool:
        """Single-frame batches, except to train a clip initialiser (DiffPose-video's MixSTE).

        The refiners denoise every frame on its own; a frame-wise lifter (GraFormer)
        trains on frames too.
        """
        return self.stage == "diffusion" or self.initializer.frame_wise

    @property
    def batch_keys(self) -> tuple[str, ...]:
        """Poses plus what projects them to 2D (the GT-2D uv and the GMM fit need it)."""
        return ("pose_3d", "pose_2d", "traj", "intrinsics")

    @property
    def keypoints(self) -> str:
        """The 2D input layout: always the skeleton's (the GCN joins 2D and 3D per joint)."""
        return self.skeleton

    @property
    def num_joints(self) -> int:
        return skeleton_lib.get_skeleton(self.skeleton).num_joints

    @property
    def root(self) -> int:
        return skeleton_lib.get_skeleton(self.skeleton).root

    @classmethod
    def from_config(
        cls, config: Any, *, skeleton: str = "h36m", keypoints: str | None = None
    ) -> DiffPoseSystem:
        """Builds the system from ``config.model`` / ``diffusion`` / ``data``.

        ``config.model``: ``stage``, ``name`` (denoiser) and ``kwargs`` (its overrides),
        ``lifter`` (initialiser), ``lifter_kwargs``, ``lifter_path``, ``lifter_use_ema``.
        ``config.diffusion``: ``schedule``, ``num_steps``, ``noise_scale``,
        ``uv_noise``, ``gmm_*``, ``train_uv``, ``reroot_init``.
        """
        m, d = config.model, config.diffusion
        input_layout("DiffPose", skeleton, keypoints, any_layout=False)
        lifter_kwargs = set_entries(m.get("lifter_kwargs"))
        initializer = make_initializer(get_model(m.lifter, **lifter_kwargs))
        denoiser = get_model(m.name, **model_kwargs(config))
        system = cls(
            stage=m.stage,
            initializer=initializer,
            denoiser=make_model_fns(denoiser),
            sampler_denoise_rows=dict(DENOISE_ROWS.get(type(denoiser), {})),
            schedule=diffusion.make_schedule(d.schedule, d.num_steps),
            noise_scale=tuple(float(s) for s in d.noise_scale),
            uv_noise=d.uv_noise,
            gmm_scale_kind=d.get("gmm_scale_kind", "std"),
            gmm_components=int(d.get("gmm_components", 3)),
            gmm_iters=int(d.get("gmm_iters", 50)),
            gmm_fit_frames=int(d.get("gmm_fit_frames", 200_000)),
            gmm_seed=int(config.train.seed),
            train_uv=d.train_uv,
            reroot_init=bool(d.reroot_init),
            skeleton=skeleton,
        )
        if system.stage == "diffusion" and m.get("lifter_path"):
            num_frames = lifter_kwargs.get("num_frames", config.data.num_frames)
            system = system.with_initializer_params(
                load_params(m.lifter_path, use_ema=bool(m.get("lifter_use_ema", False))),
                num_frames=num_frames,
            )
        return system

    def with_initializer_params(self, params: Any, *, num_frames: int = 1) -> DiffPoseSystem:
        """The system with frozen initialiser params (checked against the model's shapes)."""
        example = self._example_2d(num_frames, frame_wise=self.initializer.frame_wise)
        expected = jax.eval_shape(self.initializer.init_fn, jax.random.key(0), example)
        _check_params_like("with_initializer_params", "initialiser", params, expected)
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
        return dataclasses.replace(self, initializer_params=params)

    # -- data statistics ----------------------------------------------------------

    def with_data_statistics(self, batches: Iterable[Mapping[str, Any]]) -> DiffPoseSystem:
        """Fits the per-joint GMM of 2D residuals (``uv_noise='gmm'``); otherwise ``self``.

        Residuals are the batches' normalised 2D minus the projection of their 3D
        (``pose_3d + traj`` through ``intrinsics``), gathered until
        ``gmm_fit_frames`` frames. When the residuals vanish (ground-truth 2D),
        there are no detections: the constant ``noise_scale`` is used instead.
        """
        if self.stage != "diffusion" or self.uv_noise != "gmm":
            return self
        chunks, total = [], 0
        for batch in batches:
            res = np.asarray(batch["pose_2d"], np.float32) - np.asarray(
                self.ground_truth_2d(batch), np.float32
            )
            res = res.reshape(-1, self.num_joints, 2)
            chunks.append(res)
            total += res.shape[0]
            if total >= self.gmm_fit_frames:
                break
        if not chunks:
            raise ValueError("with_data_statistics: the batch iterator yielded nothing.")
        res = np.concatenate(chunks)[: self.gmm_fit_frames]
        rms = float(np.sqrt(np.mean(np.square(res))))
        if rms < _NO_DETECTION_RMS:
            print(
                f"DiffPoseSystem: training 2D equals the projected 3D (residual RMS {rms:.2e}); "
                f"no detections to fit a GMM to, using the constant noise scale {self.noise_scale}."
            )
            return dataclasses.replace(self, uv_noise="constant")
        gmm, _ = diffusion.fit_gmm(
            jax.random.key(self.gmm_seed),
            res,
            min(self.gmm_components, res.shape[0]),
            num_iters=self.gmm_iters,
        )
        gmm = jax.tree.map(np.asarray, gmm)
        return dataclasses.replace(self, gmm=gmm)

    def ground_truth_2d(self, batch: Mapping[str, Any]) -> Array:
        """Projection of the batch's 3D (``pose_3d + traj``) with its ``intrinsics``, normalised."""
        pose = batch["pose_3d"] + batch["traj"]
        intr = batch["intrinsics"]
        intr = intr.reshape(intr.shape[:1] + (1,) * (pose.ndim - 3) + (9,))
        return camera.project_to_2d(pose, intr)

    # -- training -----------------------------------------------------------------

    def _example_2d(self, num_frames: int, *, frame_wise: bool) -> np.ndarray:
        j = self.num_joints
        return np.zeros((1, j, 2) if frame_wise else (1, num_frames, j, 2), np.float32)

    def example_batch(self, num_frames: int, num_joints: int | None = None) -> dict:
        """A one-example batch of zeros with the training batch's keys and shapes."""
        j = num_joints or self.num_joints
        lead = (1,) if self.single_frame else (1, num_frames)
        return {
            "pose_3d": np.zeros((*lead, j, 3), np.float32),
            "pose_2d": np.zeros((*lead, j, 2), np.float32),
            "traj": np.zeros((*lead, 1, 3), np.float32),
            "intrinsics": np.zeros((1, 9), np.float32),
        }

    def init_params(self, key: Array, batch: Mapping[str, Array]) -> Any:
        """Initial params of the stage's trainable model (only shapes of ``batch`` matter).

        Drawn from an ``'rbg'`` key derived from ``key`` (:func:`rbg_key`): the
        ~200 separate initialiser draws of the GCN stacks compile twice as fast.
        """
        key = rbg_key(key)
        if self.stage == "lifter":
            return self.initializer.init_fn(key, batch["pose_2d"])
        j = self.num_joints
        x = jnp.zeros((1, j, 5), jnp.float32)
        cond = {"pose_2d": jnp.zeros((1, j, 2), jnp.float32)}
        return self.denoiser.init_fn(key, x, jnp.zeros((1,), jnp.int32), cond)

    def training_inputs(self, batch: Mapping[str, Array], key: Array):
        """``(x0 [N, J, 5], noise_scale [N, J, 5] or [5], cond)`` of a batch (frames flattened)."""
        j = self.num_joints
        xyz = batch["pose_3d"].reshape(-1, j, 3)
        if self.train_uv == "gt":
            uv = self.ground_truth_2d(batch).reshape(-1, j, 2)
        else:
            uv = batch["pose_2d"].reshape(-1, j, 2)
        n = xyz.shape[0]
        scale = jnp.asarray(self.noise_scale, jnp.float32)
        if self.uv_noise == "gmm":
            if self.gmm is None:
                raise ValueError(
                    "DiffPoseSystem: uv_noise='gmm' needs the GMM fitted first: "
                    "system = system.with_data_statistics(batches) (launch.experiment does it)."
                )
            uv_scale, mean = diffusion.gmm_noise_scale(
                key, self.gmm, (n,), kind=self.gmm_scale_kind
            )
            if self.train_uv == "gt":
                uv = uv + mean  # the sampled kernel's mean, as DiffPose's GMM files
            scale = jnp.concatenate([uv_scale, jnp.broadcast_to(scale[2:], (n, j, 3))], -1)
        x0 = jnp.concatenate([uv, xyz], axis=-1)
        return x0, scale, {"pose_2d": uv}

    def diffusion_loss(
        self, params, x0, t, noise, noise_scale, cond, *, train: bool = True, rng=None
    ) -> Array:
        """``mean_n sum (eps' - eps_hat)^2``, ``eps' = noise * noise_scale``; noise and t given."""
        x_t = diffusion.q_sample(self.schedule, x0, t, noise, noise_scale)
        target = diffusion.apply_noise_scale(noise, noise_scale)
        pred = self.denoiser.apply_fn(params, x_t, t, cond, train=train, rng=rng)
        return diffusion.eps_loss(pred, target)

    def loss_fn(self, params: Any, batch: Mapping[str, Array], rng: Array):
        """The stage's loss on a batch; returns ``(loss, metrics)``.

        Lifter: MPJPE (metres) of ``init(pose_2d)`` to ``pose_3d``. Diffusion: the
        epsilon loss of :meth:`diffusion_loss` with antithetic timesteps.
        """
        if self.stage == "lifter":
            pred = self.initializer.apply_fn(params, batch["pose_2d"], train=True, rng=rbg_key(rng))
            loss = diffusion.mpjpe_x0_loss(pred, batch["pose_3d"])
            return loss, {"mpjpe_m": loss}
        k_gmm, k_t, k_eps, k_drop = jax.random.split(rng, 4)
        x0, scale, cond = self.training_inputs(batch, k_gmm)
        n = x0.shape[0]
        t = diffusion.antithetic_timesteps(k_t, n, self.schedule.num_steps)
        noise = jax.random.normal(k_eps, x0.shape, x0.dtype)
        loss = self.diffusion_loss(
            params, x0, t, noise, scale, cond, train=True, rng=rbg_key(k_drop)
        )
        return loss, {"eps_loss": loss}

    # -- sampling -------------------------------------------------------------------

    def make_sampler(self, spec: SamplerSpec, *, mesh=None, compiler_options=None):
        """The refinement sampler on ``make_time_grid('diffpose', T_test, S)``.

        ``spec.num_timesteps`` is T_test (required), ``spec.num_iterations`` S; frames
        are refined one by one (``spec.num_frames`` is not used). Called as
        ``sampler(params, {'pose_2d': [N, J, 2]}, key, x_init [N, J, 5])``.
        """
        if spec.num_timesteps is None:
            raise ValueError(
                "DiffPoseSystem.make_sampler: spec.num_timesteps (T_test, the step the "
                "refinement starts below) is None; expected an integer (config.eval.num_timesteps)."
            )
        grid = diffusion.make_time_grid("diffpose", spec.num_timesteps, spec.num_iterations)
        platform = xla_options.platform_of(mesh)
        return diffusion.make_sampler(
            self.denoise,
            self.schedule,
            grid,
            event_shape=(self.num_joints, 5),
            num_hypotheses=spec.num_hypotheses,
            eta=spec.eta,
            prediction="eps",
            clip=None,
            flip_mode="chain" if spec.flip_tta else None,
            flip_fn=diffusion.make_flip_fn(self.skeleton, negate_channels=(0, 2)),
            skeleton=self.skeleton,
            mesh=mesh,
            compiler_options=self.sampler_options(platform, compiler_options),
            small_batch_options=self.small_batch_options(platform, compiler_options),
            max_denoise_rows=self.denoise_rows(platform, spec.max_denoise_rows),
        )

    def denoise(self, params: Any, x_t: Array, t: Array, cond: Mapping[str, Array]) -> Array:
        """The epsilon prediction for ``x_t [N, J, 5]`` given ``cond['pose_2d'] [N, J, 2]``."""
        return self.denoiser.apply_fn(params, x_t, t, cond)

    def sampler_inputs(self, params: Any, pose_2d: Array, key: Array) -> SamplerInputs:
        """Frames of ``pose_2d [B, F, J, 2]`` as ``[B*F, J, ...]`` refiner inputs.

        ``x_init`` is uv with the trained initialiser's xyz when the system has
        initialiser params, else ``0.2 * N(0, 1)`` xyz drawn from ``key``.
        """
        del params
        b, f, j, _ = pose_2d.shape
        if self.initializer_params is not None:
            xyz = self.initial_pose(self.initializer_params, pose_2d).reshape(b * f, j, 3)
        else:
            xyz = 0.2 * jax.random.normal(key, (b * f, j, 3))
        uv = jnp.asarray(pose_2d).reshape(b * f, j, 2)
        x_init = jnp.concatenate([uv, xyz], -1)
        return SamplerInputs({"pose_2d": uv}, x_init, x_init)

    def with_compute_dtype(self, dtype: Any) -> DiffPoseSystem:
        """The denoiser computing in ``dtype`` (the initialiser is unchanged)."""
        module = self.denoiser.module.clone(dtype=dtype)
        return dataclasses.replace(self, denoiser=make_model_fns(module))

    def initial_pose(self, init_params: Any, pose_2d: Array, *, flip_tta: bool = False) -> Array:
        """The initialiser's xyz ``[B, F, J, 3]`` for ``pose_2d [B, F, J, 2]`` (pure, jit-able).

        With ``flip_tta`` the prediction is averaged with the un-mirrored prediction
        of the mirrored input (DiffPose-video's MixSTE). Re-rooted when ``reroot_init``.
        """
        b, f, j, _ = pose_2d.shape
        flip = functools.partial(skeleton_lib.flip_pose, skeleton=self.skeleton)

        def run(x):
            if self.initializer.frame_wise:
                return self.initializer.apply_fn(init_params, x.reshape(b * f, j, 2)).reshape(
                    b, f, j, 3
                )
            return self.initializer.apply_fn(init_params, x)

        xyz = run(pose_2d)
        if flip_tta:
            xyz = 0.5 * (xyz + flip(run(flip(pose_2d))))
        if self.reroot_init:
            xyz = xyz - xyz[..., self.root : self.root + 1, :]
        return xyz

    def refine(
        self, sampler: diffusion.Sampler, params: Any, pose_2d: Array, xyz: Array, key: Array
    ) -> Array:
        """Refines ``xyz [B, F, J, 3]`` given ``pose_2d [B, F, J, 2]``; returns every
        iteration's re-rooted xyz ``[B, K, H, F, J, 3]``."""
        b, f, j, _ = pose_2d.shape
        uv = jnp.asarray(pose_2d).reshape(b * f, j, 2)
        x_init = jnp.concatenate([uv, jnp.asarray(xyz).reshape(b * f, j, 3)], -1)
        out = sampler(params, {"pose_2d": uv}, key, x_init).x0_steps  # [bF, K, H, J, 5]
        out = out[..., 2:]
        out = out - out[..., self.root : self.root + 1, :]
        k, h = out.shape[1:3]
        return jnp.moveaxis(out.reshape(b, f, k, h, j, 3), 1, 3)

    def protocol_info(self, eval_config: Any) -> dict[str, Any]:
        """What the evaluation tables should record about this system's sampling."""
        info: dict[str, Any] = {
            "stage": self.stage,
            "init_flip_tta": bool(eval_config.get("init_flip_tta", False)),
            "reroot_init": self.reroot_init,
        }
        if self.stage == "diffusion":
            grid = diffusion.make_time_grid(
                "diffpose", int(eval_config.num_timesteps), int(eval_config.num_iterations)
            )
            info["time_grid"] = grid.tolist()  # (t, t_next) steps; starts at grid[0][0]
        return info

    def make_eval_sample_fn(self, eval_config: Any, params: Any, *, num_frames: int):
        """``sample_fn(pose_2d [b, F, J, 2], key) -> [b, K, H, F, J, 3]`` metres.

        Reads from ``eval_config``: ``batch_size`` (calls are padded to it, so one
        program serves every call), ``init_flip_tta``; for the diffusion stage also
        ``num_timesteps`` (T_test), ``num_iterations`` (S), ``num_hypotheses``,
        ``eta`` and ``flip_tta`` (the chain flip). The lifter stage returns the
        initialiser's poses (K = H = 1). ``params`` are the stage's trained params.
        """
        fn = "make_eval_sample_fn"
        init_flip = bool(eval_config.get("init_flip_tta", False))
        b_max = int(eval_config.batch_size)
        if self.stage == "lifter":
            init_params = params
        else:
            init_params = self.initializer_params
            if init_params is None:
                raise ValueError(
                    f"{fn}: the diffusion stage refines the lifter's output, but no lifter "
                    "params were given: set config.model.lifter_path to the lifter's run "
                    "directory (or a launch.convert output)."
                )
        initial = jax.jit(functools.partial(self.initial_pose, flip_tta=init_flip))
        if self.stage == "diffusion":
            sampler = self.make_sampler(
                SamplerSpec.from_eval_config(eval_config, num_frames=num_frames),
                compiler_options=eval_config.get("compiler_options") or None,
            )
            placed = sampler.place_params(params)

        def sample_fn(pose_2d, key, *, sequence=None):
            del sequence  # conditioned on the 2D only
            b = pose_2d.shape[0]
            x = np.asarray(pose_2d, np.float32)
            if b < b_max:  # one shape for every call
                x = np.concatenate([x, np.zeros((b_max - b, *x.shape[1:]), x.dtype)])
            xyz = initial(init_params, x)
            if self.stage == "lifter":
                out = xyz[:, None, None]
            else:
                out = self.refine(sampler, placed, x, xyz, key)
            return out[:b]

        return sample_fn
