"""The lifter against evaluation's sample path, the CLI, converted checkpoints and bad input."""

import importlib.util
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from data_pipelines import input_pipeline
from data_pipelines.synthetic_pose import detector_keypoints as dk
from launch import experiment
from launch.converted import ConvertedCheckpointError
from launch.lift_api import Lifter
from pose_jax import camera, evaluation, lift, windows

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"


def _tiny_config(data_dir: str, **overrides):
    """The launch tests' tiny config (tests/launch/conftest.py), loaded by path."""
    spec = importlib.util.spec_from_file_location(
        "launch_tests_conftest", ROOT / "tests" / "launch" / "conftest.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.tiny_config(data_dir, **overrides)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A d3dp_tiny run trained 4 steps on synthetic_pose/tiny (9-frame windows)."""
    from data_pipelines.build import build

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    build("synthetic_pose", "tiny", data_dir=data_dir, progress=False)
    config = _tiny_config(data_dir)
    run = tmp_path_factory.mktemp("runs") / "tiny"
    experiment.train_and_evaluate(config, str(run), evaluate_after=False)
    store = input_pipeline.load_sequences(
        config.data.dataset, config.data.eval_split, data_dir=data_dir
    )
    return config, run, store


@pytest.fixture(scope="module")
def lifter(tiny_run):
    return Lifter.from_run(tiny_run[1])


@pytest.fixture(scope="module")
def converted_d3dp(tmp_path_factory):
    from launch import convert as launch_convert

    out = tmp_path_factory.mktemp("converted") / "d3dp_tiny"
    launch_convert.convert("d3dp", FIXTURES / "d3dp_tiny_checkpoint.npz", out)
    return out


@pytest.fixture(scope="module")
def converted_lifter(converted_d3dp):
    return Lifter.from_converted(converted_d3dp)


@pytest.fixture(scope="module")
def walk():
    """``(keypoints [40, 17, 2] pixels, camera)`` of a synthetic walk (no dataset build)."""
    world, cam = dk.demo_motion(40, seed=1)
    return dk.project_points(world, cam), cam


# The fast tests' sampler: one (H, K), compiled once for the module.
HK = dict(num_hypotheses=2, num_iterations=1)


def _evaluation_hypotheses(config, run, store, key):
    """Sequence 0 as launch.evaluate samples it, stitched back to frames ``[T, H, J, 3]``."""
    system = experiment.make_system(config)
    params, _ = experiment.restore_params(config, run, system)
    f = config.data.num_frames
    sample_fn = system.make_eval_sample_fn(config.eval, params, num_frames=f)
    window = next(input_pipeline.make_eval_windows(store, window=f))
    batches = evaluation.sequence_batches(
        sample_fn, window, key=key, sequence_index=0, batch_size=config.eval.batch_size,
        weighting="exact",
    )  # fmt: skip
    pred = np.concatenate([b.pred for b in batches])[: len(window["mask"]), -1]
    merged = windows.merge_windows(
        np.moveaxis(pred, 1, 2), window["frame_index"], window["mask"], int(store.num_frames[0])
    )
    merged[..., 0, :] = 0.0  # root slot, as the metrics and the lifter set it
    return merged


@pytest.mark.slow
def test_lift_equals_evaluation_sample_path(tiny_run, lifter):
    config, run, store = tiny_run
    key = jax.random.fold_in(jax.random.key(config.eval.seed), 0)  # evaluation's sequence 0
    expected = _evaluation_hypotheses(config, run, store, key)
    size = (int(store.res_w[0]), int(store.res_h[0]))
    result = lifter.lift(store.pose_2d[0], image_size=size, layout="h36m", key=key)
    t = int(store.num_frames[0])
    assert t > config.data.num_frames * config.eval.batch_size  # several sampler calls
    assert result.hypotheses.shape == (t, config.eval.num_hypotheses, 17, 3)
    np.testing.assert_allclose(result.hypotheses, expected, atol=1e-5)
    np.testing.assert_allclose(result.poses_3d, expected.mean(axis=1), atol=1e-5)
    assert result.spread.shape == (t, 17) and result.aggregation == "p_agg"


def test_short_sequences_and_confidences(converted_lifter, walk):
    xy, cam = walk
    kp = np.concatenate([xy[:5], np.ones((5, 17, 1), np.float32)], axis=-1)
    kp[2, 13, 2] = 0.0  # a wrist below the threshold: interpolated, reported
    assert converted_lifter.num_frames > 5  # one window, padded
    result = converted_lifter.lift(kp, image_size=(cam.res_w, cam.res_h), **HK)
    assert result.hypotheses.shape == (5, 2, 17, 3)
    assert result.spread.shape == (5, 17) and np.all(result.spread[:, 1:] > 0.0)
    assert np.all(result.spread[:, 0] == 0.0)  # the root slot is 0 in every hypothesis
    assert result.keypoints.missing_report()["joints"] == {"l_wrist": [[2, 2]]}


def test_j_agg_with_intrinsics(converted_lifter, walk):
    xy, cam = walk
    intr = [*cam.focal_length, *cam.center]
    result = converted_lifter.lift(xy, image_size=(cam.res_w, cam.res_h), intrinsics=intr, **HK)
    assert result.aggregation == "j_agg" and result.trajectory.shape == (40, 3)
    # Every joint of the aggregate is that joint of one of the hypotheses.
    dist = np.linalg.norm(result.hypotheses - result.poses_3d[:, None], axis=-1).min(axis=1)
    assert dist.max() < 1e-6 and np.isfinite(result.trajectory).all()


def test_fit_trajectory_recovers_the_root():
    rng = np.random.default_rng(0)
    rel = rng.normal(scale=0.3, size=(6, 17, 3)).astype(np.float32)
    rel[:, 0] = 0.0
    traj = np.array([0.3, -0.2, 5.0], np.float32) + rng.normal(scale=0.2, size=(6, 3))
    cam = camera.h36m_cameras("S9")[0]
    intr = np.concatenate([cam.intrinsics()[:4], np.zeros(5, np.float32)])
    uv = camera.project_to_2d_linear(rel + traj[:, None], intr)
    np.testing.assert_allclose(lift.fit_trajectory(rel, uv, intr), traj, atol=1e-4)


@pytest.mark.slow
def test_cli_matches_api_and_renders_a_gif(tiny_run, lifter, tmp_path):
    _, run, store = tiny_run
    np.save(tmp_path / "k.npy", store.pose_2d[1])
    out, gif = tmp_path / "out.npz", tmp_path / "out.gif"
    size = f"{int(store.res_w[1])},{int(store.res_h[1])}"
    cmd = [sys.executable, "-m", "launch.lift", f"--run={run}", f"--input={tmp_path / 'k.npy'}",
           "--layout=h36m", f"--image_size={size}", f"--output={out}", f"--render={gif}",
           "--render_max_frames=4", "--num_hypotheses=2", "--num_iterations=2"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "wrote" in proc.stdout and "frames/s" in proc.stdout
    saved = np.load(out)
    api = lifter.lift(np.load(tmp_path / "k.npy"), image_size=tuple(map(int, size.split(","))),
                      num_hypotheses=2, num_iterations=2)  # fmt: skip
    for name, value in api.arrays().items():
        np.testing.assert_allclose(saved[name], value, atol=1e-6, err_msg=name)
    assert (tmp_path / "out.json").exists()
    from PIL import Image

    assert Image.open(gif).n_frames == 4


def test_bad_image_size(converted_lifter, walk):
    kp = walk[0][:4]
    with pytest.raises(lift.ImageSizeError, match="does not fit a 200x100 image"):
        converted_lifter.lift(kp, image_size=(200, 100))
    with pytest.raises(lift.ImageSizeError, match="normalised coordinates, not pixels"):
        converted_lifter.lift(kp / 1000.0, image_size=(1000, 1002))
    with pytest.raises(lift.ImageSizeError, match="no image size"):
        converted_lifter.lift(kp)
    with pytest.raises(lift.KeypointLayoutError, match=r"\[frames, 26, 2\]"):
        converted_lifter.lift(kp, image_size=(1000, 1002), layout="halpe")


def test_converted_checkpoint_lifts_coco_files(converted_lifter, tmp_path):
    from pose_jax.lift import writers

    world, cam = dk.demo_motion(40, seed=1)
    xy, sc = dk.detector_keypoints(world, cam, "coco")
    writers.write_mmpose_json(str(tmp_path / "walk.json"), xy[None], sc[None])
    (kp,) = lift.read_keypoints(tmp_path / "walk.json", "coco")
    result = converted_lifter.lift(kp, image_size=(cam.res_w, cam.res_h), **HK)
    assert result.hypotheses.shape == (40, 2, 17, 3)
    assert result.keypoints.layout == "coco"
    assert result.settings["model"] == "d3dp" and np.isfinite(result.poses_3d).all()


@pytest.mark.parametrize(
    "model,checkpoint,lifter",
    [
        ("diffpose_gcndiff", "diffpose_tiny_gcndiff.npz", "diffpose_tiny_lifter.npz"),
        ("mmdiff", "mmdiff_tiny_checkpoint.npz", "diffpose_tiny_lifter.npz"),
        ("finepose", "finepose_tiny_checkpoint.npz", None),
    ],
)
def test_every_family_lifts_from_converted(tmp_path, walk, model, checkpoint, lifter):
    from launch import convert as launch_convert

    launch_convert.convert(model, FIXTURES / checkpoint, tmp_path / "model")
    if lifter:
        launch_convert.convert("diffpose_lifter", FIXTURES / lifter, tmp_path / "lifter")
    built = Lifter.from_converted(tmp_path / "model", lifter=lifter and tmp_path / "lifter")
    xy, cam = walk
    result = built.lift(xy[:12], image_size=(cam.res_w, cam.res_h), **HK)
    assert result.hypotheses.shape == (12, 2, 17, 3) and np.isfinite(result.poses_3d).all()


def test_converted_checkpoint_of_another_model_is_refused(converted_d3dp, tmp_path):
    from configs import finepose_h36m

    with pytest.raises(ConvertedCheckpointError, match="holds a 'd3dp' model, but the config"):
        Lifter.from_converted(converted_d3dp, config=finepose_h36m.get_config())
    with pytest.raises(ConvertedCheckpointError, match=r"not a launch\.convert output"):
        Lifter.from_converted(tmp_path)


def test_converted_diffpose_denoiser_needs_its_lifter(tmp_path):
    from launch import convert as launch_convert

    out = tmp_path / "gcndiff"
    launch_convert.convert("diffpose_gcndiff", FIXTURES / "diffpose_tiny_gcndiff.npz", out)
    with pytest.raises(ConvertedCheckpointError, match="refines a lifter's poses; pass its lifter"):
        Lifter.from_converted(out)


@pytest.mark.slow
def test_evaluate_converted_prints_the_tables(converted_d3dp, tiny_run, tmp_path, capsys):
    config = _tiny_config(tiny_run[0].data.data_dir)
    results = experiment.evaluate_converted(str(converted_d3dp), config, workdir=str(tmp_path))
    assert set(results["mpjpe_mm"]) >= {"j_best", "p_best", "p_agg", "j_agg"}
    assert results["protocol"]["converted_model"] == "d3dp"
    assert (tmp_path / "eval" / "results.json").exists()
    assert "J-Agg" in capsys.readouterr().out


def test_jpma_select_is_what_j_agg_scores():
    from pose_jax import metrics

    rng = np.random.default_rng(1)
    b, h, t, j = 2, 4, 3, 17
    hyps = rng.normal(scale=0.2, size=(b, h, t, j, 3)).astype(np.float32)
    hyps[..., 0, :] = 0.0
    gt = rng.normal(scale=0.2, size=(b, t, j, 3)).astype(np.float32)
    gt[..., 0, :] = 0.0
    traj = np.broadcast_to(np.array([0.0, 0.0, 5.0], np.float32), (b, t, 1, 3))
    intr = np.broadcast_to(camera.h36m_cameras("S9")[0].intrinsics(), (b, 9))
    uv = camera.project_to_2d(gt + traj, intr[:, None])
    picked = metrics.jpma_select(hyps, uv, traj, intr)
    errors = metrics.multi_hypothesis_errors(
        hyps, gt, inputs_2d=uv, traj=traj, intrinsics=intr
    ).errors
    np.testing.assert_allclose(metrics.mpjpe(picked, gt), errors["j_agg"], rtol=1e-5)
