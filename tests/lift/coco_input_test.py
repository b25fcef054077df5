"""COCO-17 input models (D3DP's in-the-wild layout): conversion, flips, lifting, training."""

import pathlib

import jax
import numpy as np
import pytest

from data_pipelines.synthetic_pose import detector_keypoints as dk
from launch.converted import ConvertedCheckpointError
from launch.lift_api import Lifter
from pose_jax import diffusion, lift
from pose_jax import skeleton as skeleton_lib
from pose_jax.errors import ConfigError
from pose_jax.lift import layouts

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
HK = dict(num_hypotheses=2, num_iterations=1)


@pytest.fixture(scope="module")
def converted_coco(tmp_path_factory):
    from launch import convert as launch_convert

    out = tmp_path_factory.mktemp("converted") / "d3dp_coco"
    config = launch_convert.convert("d3dp_in_the_wild", FIXTURES / "d3dp_tiny_checkpoint.npz", out)
    assert config["keypoints"] == "coco" and config["model"] == "d3dp"
    return out


@pytest.fixture(scope="module")
def coco_lifter(converted_coco):
    return Lifter.from_converted(converted_coco)


def test_detector_layouts_convert_to_coco_and_commute_with_mirroring():
    rng = np.random.default_rng(0)
    for name in ("halpe", "openpose", "coco"):
        lay = layouts.get_layout(name)
        xy = rng.normal(size=(3, lay.num_joints, 2)).astype(np.float32)
        ok = np.ones(xy.shape[:-1], bool)
        got, valid, _ = layouts.convert(lay, "coco", xy, ok, np.ones(ok.shape, np.float32))
        assert got.shape == (3, 17, 2) and valid.all()
        names = [lay.joint_names[s[0]] for s in lay.coco_sources]
        assert [n.replace("left_", "l_").replace("right_", "r_") for n in names] == list(
            skeleton_lib.COCO.joint_names
        )
        mirrored = xy[:, lay.flip_permutation] * np.array([-1, 1], np.float32)
        got_m, _, _ = layouts.convert(lay, "coco", mirrored, ok, np.ones(ok.shape, np.float32))
        np.testing.assert_allclose(got_m, skeleton_lib.flip_pose(got, "coco"), rtol=1e-6)
    with pytest.raises(lift.KeypointLayoutError, match=r"'h36m' keypoints cannot be converted"):
        layouts.get_layout("h36m").matrix("coco")


def test_coco_input_sampler_mirrors_its_condition_with_coco_lists(coco_lifter):
    system, params = coco_lifter.system, coco_lifter.params
    assert system.keypoints == "coco" and system.skeleton == "h36m"
    f = coco_lifter.num_frames
    from pose_jax.systems.base import SamplerSpec

    s = SamplerSpec(num_frames=f, num_hypotheses=2, num_iterations=2, eta=1.0, flip_tta=True)
    pose_2d = jax.random.normal(jax.random.key(0), (2, f, 17, 2)) * 0.3
    key = jax.random.key(1)
    got = system.make_sampler(s)(params, {"pose_2d": pose_2d}, key).x0_steps
    coco_flip = diffusion.make_flip_fn("coco")
    want = diffusion.make_sampler(
        lambda p, x, t, c: system.denoise(p, x, t, c),
        system.schedule,
        diffusion.make_time_grid("d3dp", system.schedule.num_steps, 2),
        event_shape=(f, 17, 3),
        num_hypotheses=2,
        eta=1.0,
        prediction="x0",
        clip=system.clip * system.scale,
        flip_mode="step",
        cond_flip_fn=lambda c: {**c, "pose_2d": coco_flip(c["pose_2d"])},
        skeleton="h36m",
    )(params, {"pose_2d": pose_2d}, key).x0_steps
    np.testing.assert_allclose(got, want, atol=1e-6)
    import dataclasses

    h36m_flip = dataclasses.replace(system, keypoints="h36m").make_sampler(s)
    other = h36m_flip(params, {"pose_2d": pose_2d}, key).x0_steps
    assert np.abs(np.asarray(other) - np.asarray(got)).max() > 1e-4


def test_graph_families_refuse_coco_input():
    from configs import diffpose_frame_h36m, ktpformer_h36m
    from pose_jax.systems import get_system

    for module in (diffpose_frame_h36m, ktpformer_h36m):
        config = module.get_config("runlocal")
        with pytest.raises(ConfigError, match="needs both in one layout"):
            get_system(config.system).from_config(config, skeleton="h36m", keypoints="coco")
    from configs import d3dp_h36m

    config = d3dp_h36m.get_config("runlocal")
    with pytest.raises(ConfigError, match=r"needs the Human3\.6M-17 skeleton"):
        get_system("d3dp").from_config(config, skeleton="3dhp", keypoints="coco")


def test_lifter_feeds_coco_keypoints_unconverted(coco_lifter, tmp_path):
    from pose_jax.lift import writers

    world, cam = dk.demo_motion(30, seed=2)
    xy, sc = dk.detector_keypoints(world, cam, "coco")
    writers.write_mmpose_json(str(tmp_path / "walk.json"), xy[None], sc[None])
    assert coco_lifter.keypoints == "coco"
    (kp,) = lift.read_keypoints(tmp_path / "walk.json", "coco", target=coco_lifter.keypoints)
    assert kp.target == "coco"
    seen = ~kp.missing
    np.testing.assert_allclose(kp.xy[seen], xy[seen], atol=1e-3)  # COCO joints as given
    result = coco_lifter.lift(kp, image_size=(cam.res_w, cam.res_h), **HK)
    assert result.hypotheses.shape == (30, 2, 17, 3) and np.isfinite(result.poses_3d).all()
    fx = cam.res_w
    j_agg = coco_lifter.lift(
        kp,
        image_size=(cam.res_w, cam.res_h),
        intrinsics=[fx, fx, cam.res_w / 2, cam.res_h / 2],
        **HK,
    )
    assert j_agg.aggregation == "j_agg" and np.isfinite(j_agg.trajectory).all()
    # Keypoints prepared for a Human3.6M-input model are refused, naming the fix.
    (h36m_kp,) = lift.read_keypoints(tmp_path / "walk.json", "coco")
    with pytest.raises(lift.LiftModelError, match=r"target='coco'"):
        coco_lifter.lift(h36m_kp, image_size=(cam.res_w, cam.res_h), **HK)


def test_h36m_keypoints_cannot_feed_a_coco_model(coco_lifter):
    world, cam = dk.demo_motion(12, seed=3)
    h36m = dk.project_points(world, cam)
    with pytest.raises(lift.KeypointLayoutError, match="cannot be converted to 'coco'"):
        coco_lifter.lift(h36m, layout="h36m", image_size=(cam.res_w, cam.res_h), **HK)


def test_converted_checkpoint_and_config_must_agree_on_the_2d_layout(converted_coco, tmp_path):
    from configs import d3dp_h36m
    from launch import convert as launch_convert

    with pytest.raises(ConvertedCheckpointError, match=r"takes 'coco' 2D keypoints.*'h36m' 2D"):
        Lifter.from_converted(converted_coco, config=d3dp_h36m.get_config("keypoints=gt"))
    plain = tmp_path / "d3dp"
    launch_convert.convert("d3dp", FIXTURES / "d3dp_tiny_checkpoint.npz", plain)
    with pytest.raises(ConvertedCheckpointError, match=r"takes 'h36m' 2D keypoints.*'coco' 2D"):
        Lifter.from_converted(plain, config=d3dp_h36m.get_config("keypoints=coco"))


@pytest.mark.slow
def test_a_coco_input_model_trains_evaluates_and_lifts(tmp_path):
    from configs import d3dp_h36m
    from data_pipelines.h36m_pose import h36m_pose_dataset_builder as hb
    from data_pipelines.testing import fixtures
    from launch import experiment

    manual, data_dir = tmp_path / "manual", tmp_path / "tfds"
    fixtures.write_h36m(str(manual), sources=("detectron_pt_coco",))
    fixtures.build(hb.Builder, "detectron_pt_coco", data_dir, str(manual))
    config = d3dp_h36m.get_config("keypoints=coco,runlocal")
    config.data.data_dir = str(data_dir)
    config.data.num_frames, config.data.batch_size = 9, 8
    config.train.num_steps, config.train.log_every_steps = 2, 1
    config.train.checkpoint_every_steps, config.train.tensorboard = 2, False
    config.eval.num_hypotheses, config.eval.num_iterations = 2, 1
    config.eval.batch_size, config.eval.max_sequences, config.eval.plots = 4, 2, False
    run = tmp_path / "run"
    results = experiment.train_and_evaluate(config, str(run))["results"]
    assert np.isfinite(results["mpjpe_mm"]["j_agg"]) and np.isfinite(results["mpjpe_mm"]["p_agg"])
    lifter = Lifter.from_run(run)
    assert lifter.keypoints == "coco"
    world, cam = dk.demo_motion(12, seed=4)
    xy, _ = dk.detector_keypoints(world, cam, "coco")
    out = lifter.lift(xy, layout="coco", image_size=(cam.res_w, cam.res_h), **HK)
    assert out.keypoints.target == "coco" and np.isfinite(out.poses_3d).all()
