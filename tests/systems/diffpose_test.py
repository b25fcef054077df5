"""DiffPose (frame, video) and monoMotionDiff: configs, GMM noise, losses, sampling, end to end."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import diffpose_frame_h36m, diffpose_video_h36m, mmdiff_h36m
from launch import experiment
from pose_jax import camera, diffusion
from pose_jax.systems import diffpose

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures")
CONFIGS = {"frame": diffpose_frame_h36m, "video": diffpose_video_h36m, "mmdiff": mmdiff_h36m}


def _key(seed):
    return jax.random.key(seed, impl="rbg")


def _batch(n=64, noise_px=None, seed=0):
    """Single-frame batch seen by H36M camera 54138969: 3D, GT-projected 2D (+ noise)."""
    rng = np.random.default_rng(seed)
    cam = camera.h36m_cameras("S1")[0]
    intr = np.asarray(cam.intrinsics(normalized=True), np.float32)
    rel = (0.3 * rng.standard_normal((n, 17, 3))).astype(np.float32)
    rel[:, 0] = 0.0
    traj = np.stack(
        [rng.uniform(-0.5, 0.5, n), rng.uniform(-0.5, 0.5, n), rng.uniform(4, 6, n)], -1
    )
    traj = traj[:, None].astype(np.float32)
    uv = np.asarray(camera.project_to_2d(rel + traj, intr), np.float32)
    if noise_px is not None:  # per-joint noise std in pixels of the 1000-px-wide image
        noise = rng.standard_normal(uv.shape) * np.asarray(noise_px)[:, None] / 500.0
        uv = (uv + noise).astype(np.float32)
    return {
        "pose_3d": rel,
        "pose_2d": uv,
        "traj": traj,
        "intrinsics": np.broadcast_to(intr, (n, 9)).copy(),
    }


# ---------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(CONFIGS))
@pytest.mark.parametrize("keypoints", ["cpn", "gt"])
@pytest.mark.parametrize("dataset", ["h36m", "synthetic"])
@pytest.mark.parametrize("stage", ["lifter", "diffusion"])
def test_every_config_builds_its_system(variant, keypoints, dataset, stage):
    c = CONFIGS[variant].get_config(f"keypoints={keypoints},dataset={dataset},stage={stage}")
    assert c.data.dataset.startswith("h36m_pose/" if dataset == "h36m" else "synthetic_pose/")
    system = experiment.make_system(c)
    assert isinstance(system, diffpose.DiffPoseSystem) and system.stage == stage
    assert system.initializer.frame_wise == (variant != "video")
    assert (c.optim.lr, c.optim.lr_schedule) == (
        (6e-5, "epoch_exponential")
        if (variant, stage) == ("video", "lifter")
        else (1e-3, "epoch_step")
    )


def test_reference_settings_per_variant():
    frame = diffpose_frame_h36m.get_config("keypoints=cpn")
    assert (frame.diffusion.uv_noise, frame.diffusion.train_uv, frame.data.flip) == (
        "gmm",
        "gt",
        "none",
    )
    grid = diffusion.make_time_grid("diffpose", frame.eval.num_timesteps, frame.eval.num_iterations)
    assert grid.tolist() == [[12, 0], [0, -1]]  # CPN: t = 12, 0
    gt = diffpose_frame_h36m.get_config("keypoints=gt")
    assert diffusion.make_time_grid("diffpose", gt.eval.num_timesteps, 2)[0, 0] == 6
    video = diffpose_video_h36m.get_config("keypoints=cpn")
    assert tuple(video.diffusion.noise_scale) == (0.5, 0.5, 1.0, 1.0, 1.0)
    video_single_frame = diffpose.DiffPoseSystem.from_config(
        video
    ).single_frame  # was data.single_frame
    assert (video.data.num_frames, video_single_frame, video.diffusion.reroot_init) == (
        243,
        True,
        False,
    )
    assert diffusion.make_time_grid("diffpose", video.eval.num_timesteps, 1).tolist() == [[0, -1]]
    assert video.eval.init_flip_tta and not video.eval.flip_tta
    mm = mmdiff_h36m.get_config("keypoints=gt")
    assert tuple(mm.diffusion.noise_scale) == (0.1, 0.1, 1.0, 1.0, 1.0)
    assert (mm.data.flip, mm.eval.flip_tta, mm.train.num_epochs) == ("random", True, 800)
    for c in (frame, video, mm):
        assert (c.optim.name, c.optim.grad_clip_norm, c.optim.ema_decay) == ("adam", 1.0, 0.999)
        assert (c.optim.lr_decay, c.optim.decay_every_epochs) == (0.9, 60)
    with pytest.raises(ValueError, match="stage"):
        mmdiff_h36m.get_config("stage=both")
    with pytest.raises(ValueError, match="keypoints"):
        diffpose_video_h36m.get_config("keypoints=sh")


# ---------------------------------------------------------------------------
# Training inputs, GMM noise, losses
# ---------------------------------------------------------------------------


def _system(variant="frame", arg="runlocal", **diffusion_overrides):
    c = CONFIGS[variant].get_config(arg)
    for k, v in diffusion_overrides.items():
        c.diffusion[k] = v
    return experiment.make_system(c)


def test_gmm_is_fitted_to_detection_residuals_or_falls_back_to_constant():
    system = _system("frame", "runlocal")
    noise_px = np.linspace(1.0, 9.0, 17)  # per-joint detector noise
    fitted = system.with_data_statistics(iter([_batch(512, noise_px, seed=s) for s in range(4)]))
    assert fitted.uv_noise == "gmm" and fitted.gmm.weights.shape == (17, 3)
    scale, _ = diffusion.gmm_noise_scale(jax.random.key(0), fitted.gmm, (4000,))
    # Mean sampled scale per joint ~ the noise std (normalised units: px / 500).
    np.testing.assert_allclose(
        np.sqrt(np.mean(np.square(scale), axis=(0, 2))), noise_px / 500.0, rtol=0.15
    )
    exact = system.with_data_statistics(iter([_batch(256)]))
    assert exact.uv_noise == "constant" and exact.gmm is None
    const = _system("mmdiff", "runlocal")
    assert const.with_data_statistics(iter([])) is const  # nothing to fit


def test_training_inputs_use_projected_gt_uv_and_gmm_scales():
    batch = _batch(32, np.full(17, 5.0))
    system = _system("frame", "runlocal").with_data_statistics(
        iter([_batch(512, np.full(17, 5.0))])
    )
    x0, scale, cond = system.training_inputs(batch, jax.random.key(0))
    uv_gt = camera.project_to_2d(batch["pose_3d"] + batch["traj"], batch["intrinsics"])
    # 'gt' uv plus the sampled component's mean residual (as DiffPose's kernel means).
    offset = np.abs(np.asarray(x0[..., :2]) - np.asarray(uv_gt))
    assert np.all(offset <= np.abs(system.gmm.means).max(axis=1) + 1e-6)
    np.testing.assert_array_equal(x0[..., 2:], batch["pose_3d"])
    assert scale.shape == (32, 17, 5) and np.all(scale[..., 2:] == 1.0)
    np.testing.assert_array_equal(cond["pose_2d"], x0[..., :2])
    mm = _system("mmdiff", "runlocal")
    x0, scale, cond = mm.training_inputs(batch, jax.random.key(0))
    np.testing.assert_array_equal(x0[..., :2], batch["pose_2d"])
    np.testing.assert_allclose(scale, [0.1, 0.1, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="with_data_statistics"):
        _system("frame", "runlocal").training_inputs(batch, jax.random.key(0))


def test_lifter_stage_loss_is_finite_and_depends_on_the_key():
    # (The diffusion stage's loss runs in the end-to-end tests below.)
    variant, stage = "frame", "lifter"
    system = _system(variant, f"stage={stage},runlocal")
    batch = jax.tree.map(jnp.asarray, _batch(16))
    params = system.init_params(jax.random.key(0), batch)
    a, metrics = system.loss_fn(params, batch, jax.random.key(1))
    b, _ = system.loss_fn(params, batch, jax.random.key(2))
    assert np.isfinite(a) and a > 0 and a != b
    assert set(metrics) == ({"mpjpe_m"} if stage == "lifter" else {"eps_loss"})


# ---------------------------------------------------------------------------
# Evaluation sampling
# ---------------------------------------------------------------------------


def test_eval_sample_fn_shapes_padding_and_missing_lifter():
    c = diffpose_frame_h36m.get_config("runlocal")
    c.eval.batch_size = 4
    c.eval.compiler_options = {"xla_backend_optimization_level": 0}
    system = experiment.make_system(c)
    pose_2d = _batch(3)["pose_2d"][:, None]  # b=3 windows of F=1
    denoiser = system.init_params(jax.random.key(0), _batch(1))
    with pytest.raises(ValueError, match="lifter_path"):
        system.make_eval_sample_fn(c.eval, denoiser, num_frames=1)
    lifter = system.initializer.init_fn(_key(1), pose_2d[:, 0])
    system = system.with_initializer_params(lifter)
    out = system.make_eval_sample_fn(c.eval, denoiser, num_frames=1)(pose_2d, jax.random.key(2))
    assert out.shape == (3, 2, 1, 1, 17, 3)  # [b, K=2, H=1, F, J, 3]
    np.testing.assert_array_equal(out[..., 0, :], 0.0)  # re-rooted
    c.model.stage = "lifter"
    lifter_system = experiment.make_system(c)
    out = lifter_system.make_eval_sample_fn(c.eval, lifter, num_frames=1)(pose_2d, None)
    want = system.initial_pose(lifter, jnp.asarray(pose_2d))
    np.testing.assert_allclose(out[:, 0, 0], want, atol=1e-6)


def test_video_initialiser_runs_on_windows_with_flip_averaging():
    c = diffpose_video_h36m.get_config("runlocal")
    c.model.lifter_kwargs.num_frames = 9
    system = experiment.make_system(c)
    x2d = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (1, 9, 17, 2)), jnp.float32)
    params = system.initializer.init_fn(_key(0), x2d)
    a = system.initial_pose(params, x2d, flip_tta=True)
    from pose_jax import skeleton

    mirrored = system.initial_pose(params, skeleton.flip_pose(x2d, "h36m"), flip_tta=True)
    np.testing.assert_allclose(skeleton.flip_pose(mirrored, "h36m"), a, atol=1e-5)
    assert a.shape == (1, 9, 17, 3) and not np.allclose(a[..., 0, :], 0.0)  # not re-rooted


# ---------------------------------------------------------------------------
# End to end through launch.experiment
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_data_dir(tmp_path_factory):
    from data_pipelines.build import build

    d = tmp_path_factory.mktemp("tfds")
    build("synthetic_pose", "tiny", data_dir=str(d), progress=False)
    return str(d)


@pytest.fixture(scope="module")
def reference_lifter(tmp_path_factory):
    """The reference's tiny GCN lifter (recorded fixture), converted as launch.convert does."""
    from launch import convert as convert_cli

    out = tmp_path_factory.mktemp("lifter")
    convert_cli.convert(
        "diffpose_lifter", os.path.join(FIXTURES, "diffpose_tiny_lifter.npz"), str(out), num_heads=2
    )
    return str(out)


def _runlocal(module, data_dir, lifter_path, **eval_overrides):
    c = module.get_config("runlocal")
    c.data.data_dir = data_dir
    c.model.lifter_path = lifter_path
    c.model.kwargs.num_layers = 1  # compile time; the parity tests cover 2 layers
    c.train.num_steps = 2
    c.train.log_every_steps = 1
    c.train.checkpoint_every_steps = 2
    c.eval.max_sequences = 1
    c.eval.compiler_options = {"xla_backend_optimization_level": 0}
    for k, v in eval_overrides.items():
        c.eval[k] = v
    return c


@pytest.mark.parametrize("module", [diffpose_frame_h36m, mmdiff_h36m], ids=["frame", "mmdiff"])
@pytest.mark.slow
def test_train_and_evaluate_on_synthetic_tiny(module, tiny_data_dir, reference_lifter, tmp_path):
    c = _runlocal(module, tiny_data_dir, reference_lifter)
    out = experiment.train_and_evaluate(c, str(tmp_path / "run"))
    state = out["state"]
    assert int(state.step) == 2 and "attention_1" not in state.params
    ema, raw = state.ema_params["output_conv"]["bias"], state.params["output_conv"]["bias"]
    assert not np.allclose(ema, raw)  # EMA kept (config.eval.use_ema evaluates it)
    results = json.loads((tmp_path / "run" / "eval" / "results.json").read_text())
    protocol = results["protocol"]
    assert (protocol["num_iterations"], protocol["num_hypotheses"]) == (2, 1)
    assert protocol["stage"] == "diffusion" and protocol["params"] == "raw"
    first = 12 if module is diffpose_frame_h36m else 6  # (T_test, S) = (24, 2) / (12, 2)
    assert protocol["time_grid"] == [[first, 0], [0, -1]]
    assert protocol["flip_tta"] == (module is mmdiff_h36m)
    for protocol in ("mpjpe_mm", "p_mpjpe_mm"):
        assert all(np.isfinite(v) and 0 < v < 2000 for v in results[protocol].values())
