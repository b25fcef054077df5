"""DiffPose / monoMotionDiff conversion: parity with numbers recorded from the PyTorch references.

Fixtures (``tests/fixtures/{diffpose,mmdiff}_tiny_*.npz``) come from
``scripts/record_diffpose_fixtures.py``: the reference GCNdiff, GCNpose lifter,
DiffPose-video MixSTE2 and monoMotionDiff DiffModel at hidden 16, 2 layers, 2 heads
(MixSTE: width 32, depth 2, 8 heads, 9 frames) with seeded random weights, their
checkpoints in the layouts the runners save, model outputs, a training loss with
fixed noise and timesteps, and the refinement samplers (the references'
``generalized_steps`` with their test loops' glue) with every noise draw.
No torch is needed here.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

from pose_jax import convert, sharding
from pose_jax import diffusion as diff
from pose_jax.convert import diffpose as dconv
from pose_jax.models import get_model, make_model_fns
from pose_jax.systems.base import SamplerSpec
from pose_jax.systems.diffpose import DiffPoseSystem, load_params, make_initializer

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures")
TOL = 1e-4
O0 = {"xla_backend_optimization_level": 0}


def _fixture(name):
    return os.path.join(FIXTURES, f"{name}.npz")


def _io(name):
    with np.load(_fixture(name)) as data:
        out = {k: data[k] for k in data.keys()}
    out["hparams"] = json.loads(str(out.pop("hparams_json")))
    return out


@pytest.fixture(scope="module")
def io_dp():
    return _io("diffpose_tiny_io")


@pytest.fixture(scope="module")
def io_mm():
    return _io("mmdiff_tiny_io")


@pytest.fixture(scope="module")
def converted():
    def load(name, key):
        return convert.load_npz_checkpoint(_fixture(name), key=key)

    return {
        "gcndiff": dconv.convert_gcndiff_state_dict(
            load("diffpose_tiny_gcndiff", "0"), num_heads=2
        ),
        "lifter": dconv.convert_graformer_state_dict(
            load("diffpose_tiny_lifter", "0"), num_heads=2
        ),
        "mmdiff": dconv.convert_mmdiff_state_dict(load("mmdiff_tiny_checkpoint", "0"), num_heads=2),
        "mixste": dconv.convert_diffpose_video_mixste_state_dict(
            load("diffpose_tiny_mixste", "model_pos"), num_heads=8
        ),
    }


def _system(converted, denoiser, lifter, **kw):
    (d_params, d_cfg), (l_params, l_cfg) = converted[denoiser], converted[lifter]
    system = DiffPoseSystem(
        stage="diffusion",
        initializer=make_initializer(get_model(l_cfg["model"], **l_cfg["model_kwargs"])),
        denoiser=make_model_fns(get_model(d_cfg["model"], **d_cfg["model_kwargs"])),
        schedule=diff.make_schedule("linear", 51),
        **kw,
    )
    frames = l_cfg["model_kwargs"].get("num_frames", 1)
    return system.with_initializer_params(l_params, num_frames=frames), d_params


def _sampler(system, t_test, steps, **kw):
    kw = {"eta": 0.0, "flip_tta": False, **kw}  # the refiners' defaults
    spec = SamplerSpec(num_timesteps=t_test, num_iterations=steps, **kw)
    return system.make_sampler(spec, mesh=sharding.make_mesh(1), compiler_options=O0)


# ---------------------------------------------------------------------------
# Layouts, configs, strictness
# ---------------------------------------------------------------------------


def test_fixtures_have_the_reference_layouts():
    with np.load(_fixture("diffpose_tiny_gcndiff")) as d:
        keys = set(d.keys())
    assert "0/module.gconv_input.weight" in keys and "4/gconv_input.weight" in keys
    assert {"2", "3", "1/param_groups/0/lr"} <= keys
    with np.load(_fixture("mmdiff_tiny_checkpoint")) as d:
        assert "0/gconv_input_t.weight" in d.keys() and "0/fc3.weight" in d.keys()
    with np.load(_fixture("diffpose_tiny_lifter")) as d:
        assert "0/module.temb.dense.0.weight" in d.keys()
    assert os.path.getsize(_fixture("diffpose_tiny_io")) < 200_000


def test_infers_configs(converted, io_dp):
    hp = io_dp["hparams"]
    size = dict(hidden=hp["hidden"], num_layers=hp["num_layers"], num_heads=hp["num_heads"])
    assert converted["gcndiff"][1] == {
        "model": "gcndiff",
        "model_kwargs": dict(num_joints=17, channels=5, **size),
        "ignored_keys": [],
    }
    lifter = converted["lifter"][1]
    assert lifter["model_kwargs"] == dict(num_joints=17, in_features=2, out_features=3, **size)
    assert lifter["ignored_keys"] == [
        f"temb.dense.{i}.{p}" for i in (0, 1) for p in ("bias", "weight")
    ]
    assert converted["mmdiff"][1]["model_kwargs"] == dict(num_joints=17, embed_channels=3, **size)
    mix = converted["mixste"][1]["model_kwargs"]
    assert (mix["num_frames"], mix["embed_dim"], mix["depth"]) == (hp["frames"], 32, 2)


def test_registered_converters():
    assert convert.get_converter("diffpose_gcndiff") == (convert.convert_gcndiff_state_dict, 0)
    assert convert.get_converter("diffpose_lifter")[0] is convert.convert_graformer_state_dict
    assert convert.get_converter("mmdiff")[1] == 0
    assert convert.get_converter("diffpose_video_mixste")[1] == "model_pos"


def test_ema_entry_converts_to_the_shadow():
    shadow = convert.load_npz_checkpoint(_fixture("diffpose_tiny_gcndiff"), key="4")
    assert not any(k.startswith("module.") for k in shadow)
    params, _ = dconv.convert_gcndiff_state_dict(shadow, num_heads=2)
    np.testing.assert_array_equal(
        params["input_conv"]["kernel"], shadow["gconv_input.weight"][:, 0]
    )
    np.testing.assert_array_equal(
        params["attention_1"]["ffn"]["adjacency"], shadow["atten_layers.1.feed_forward.A_hat"]
    )
    raw = convert.load_npz_checkpoint(_fixture("diffpose_tiny_gcndiff"), key="0")
    assert not np.allclose(raw["module.gconv_input.weight"], shadow["gconv_input.weight"])


@pytest.mark.parametrize(
    "name, key, fn",
    [
        ("diffpose_tiny_gcndiff", "0", dconv.convert_gcndiff_state_dict),
        ("diffpose_tiny_lifter", "0", dconv.convert_graformer_state_dict),
        ("mmdiff_tiny_checkpoint", "0", dconv.convert_mmdiff_state_dict),
    ],
)
def test_refuses_missing_extra_and_misshaped_keys(name, key, fn):
    sd = convert.load_npz_checkpoint(_fixture(name), key=key)
    prefix = "module." if name != "mmdiff_tiny_checkpoint" else ""
    victim = f"{prefix}atten_layers.0.self_attn.linears.2.weight"
    shaped = f"{prefix}gconv_layers.1.gconv2.gconv.bias"
    bad = {k: v for k, v in sd.items() if k != victim}
    bad[f"{prefix}extra.weight"] = np.zeros((3,), np.float32)
    bad[shaped] = np.zeros((1, 1, 7), np.float32)
    with pytest.raises(ValueError) as e:
        fn(bad, num_heads=2)
    msg = str(e.value)
    assert "atten_layers.0.self_attn.linears.2.weight" in msg
    assert "extra.weight (3,)" in msg
    assert "gconv_layers.1.gconv2.gconv.bias: got (1, 1, 7), expected (1, 1, 16)" in msg
    with pytest.raises(ValueError, match="num_heads"):
        fn(sd, num_heads=3)


def test_lifter_refuses_a_foreign_time_mlp_and_mixed_prefixes():
    sd = convert.load_npz_checkpoint(_fixture("diffpose_tiny_lifter"), key="0")
    odd = dict(sd)
    odd["module.temb.dense.0.weight"] = np.zeros((5, 5), np.float32)
    with pytest.raises(ValueError, match="time-MLP"):
        dconv.convert_graformer_state_dict(odd, num_heads=2)
    mixed = dict(sd)
    mixed["gconv_output.bias"] = mixed.pop("module.gconv_output.bias")
    with pytest.raises(ValueError, match="expected all or none"):
        dconv.convert_graformer_state_dict(mixed, num_heads=2)


# ---------------------------------------------------------------------------
# Model parity
# ---------------------------------------------------------------------------


def test_gcndiff_matches_reference(converted, io_dp):
    params, cfg = converted["gcndiff"]
    fns = make_model_fns(get_model(cfg["model"], **cfg["model_kwargs"]))
    out = fns.apply_fn(params, io_dp["gcndiff_x_t"], io_dp["gcndiff_t"], {})
    np.testing.assert_allclose(out, io_dp["gcndiff_out"], atol=TOL, rtol=0)


def test_lifter_matches_reference(converted, io_dp):
    params, cfg = converted["lifter"]
    out = get_model(cfg["model"], **cfg["model_kwargs"]).apply(
        {"params": params}, io_dp["lifter_pose_2d"]
    )
    np.testing.assert_allclose(out, io_dp["lifter_out"], atol=TOL, rtol=0)


def test_mmdiff_matches_reference(converted, io_mm):
    params, cfg = converted["mmdiff"]
    fns = make_model_fns(get_model(cfg["model"], **cfg["model_kwargs"]))
    out = fns.apply_fn(
        params, io_mm["model_x_t"], io_mm["model_t"], {"pose_2d": io_mm["model_guide"]}
    )
    np.testing.assert_allclose(out, io_mm["model_out"], atol=TOL, rtol=0)


def test_video_mixste_matches_reference_run_deterministically(converted, io_dp):
    params, cfg = converted["mixste"]
    init = make_initializer(get_model(cfg["model"], **cfg["model_kwargs"]))
    assert not init.frame_wise
    out = init.apply_fn(params, io_dp["video_pose_2d"])
    np.testing.assert_allclose(out, io_dp["mixste_out"], atol=TOL, rtol=0)
    # MixSTE2's own parameters, one to one: 2D-only input embedding, no time embedding.
    assert "time_embed" not in params and params["joint_embed"]["kernel"].shape[0] == 2


@pytest.mark.parametrize("denoiser", ["gcndiff", "mmdiff"])
def test_training_loss_matches_reference(converted, io_dp, io_mm, denoiser):
    system, params = _system(converted, denoiser, "lifter")
    io = io_dp if denoiser == "gcndiff" else io_mm
    scale = io.get("train_noise_scale", np.array([0.1, 0.1, 1.0, 1.0, 1.0], np.float32))
    loss = system.diffusion_loss(
        params,
        io["train_x0"],
        io["train_t"],
        io["train_noise"],
        scale,
        {"pose_2d": io["train_x0"][..., :2]},
        train=False,
    )
    np.testing.assert_allclose(loss, io["train_loss"], rtol=1e-5)


# ---------------------------------------------------------------------------
# Refinement-sampler parity
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("t_test, steps, eta", [(24, 2, 0.0), (12, 2, 0.0), (24, 2, 0.5)])
def test_frame_refinement_matches_reference(converted, io_dp, t_test, steps, eta):
    system, params = _system(converted, "gcndiff", "lifter")
    uv = io_dp["lifter_pose_2d"][:, None]  # [N, F=1, J, 2]
    xyz = system.initial_pose(system.initializer_params, uv)
    np.testing.assert_allclose(xyz[:, 0], io_dp["refine_x_init"][..., 2:], atol=TOL, rtol=0)
    tag = f"refine_{t_test}_{steps}_eta{eta:g}"
    sampler = _sampler(system, t_test, steps, eta=eta)
    x_init = np.concatenate([uv[:, 0], np.asarray(xyz[:, 0])], -1)
    out = sampler(
        params,
        {"pose_2d": uv[:, 0]},
        jax.random.key(0),
        x_init,
        step_noise=io_dp[f"{tag}_noise"][:, :, None],
    )
    np.testing.assert_allclose(out.x0_steps[:, :, 0], io_dp[f"{tag}_x0_steps"], atol=TOL, rtol=0)
    if eta == 0.0:  # refine() draws its own (unused) noise
        poses = system.refine(sampler, params, uv, xyz, jax.random.key(1))  # [N,K,H,F,J,3]
        np.testing.assert_allclose(poses[:, -1, 0, 0], io_dp[f"{tag}_xyz"], atol=TOL, rtol=0)


@pytest.mark.parametrize("flip", [False, True])
def test_mmdiff_refinement_with_chain_flip_matches_reference(converted, io_mm, flip):
    system, params = _system(converted, "mmdiff", "lifter")
    uv = io_mm["refine_pose_2d"][:, None]
    xyz = system.initial_pose(system.initializer_params, uv)
    np.testing.assert_allclose(xyz[:, 0], io_mm["refine_lifter_xyz"], atol=TOL, rtol=0)
    sampler = _sampler(system, 12, 2, flip_tta=flip)
    poses = system.refine(sampler, params, uv, xyz, jax.random.key(0))
    want = io_mm["refine_flip_xyz" if flip else "refine_noflip_xyz"]
    np.testing.assert_allclose(poses[:, -1, 0, 0], want, atol=TOL, rtol=0)


@pytest.mark.parametrize("t_test, steps", [(6, 1), (12, 2)])
def test_video_refinement_matches_reference(converted, io_dp, t_test, steps):
    system, params = _system(converted, "gcndiff", "mixste", reroot_init=False)
    x2d = io_dp["video_pose_2d"]  # [B, F, J, 2]
    xyz = system.initial_pose(system.initializer_params, x2d, flip_tta=True)
    poses = system.refine(_sampler(system, t_test, steps), params, x2d, xyz, jax.random.key(0))
    np.testing.assert_allclose(
        poses[:, -1, 0], io_dp[f"video_refine_{t_test}_{steps}_xyz"], atol=TOL, rtol=0
    )


def test_launch_convert_writes_params_that_load_params_reads(tmp_path):
    from launch import convert as convert_cli

    out = tmp_path / "lifter"
    config = convert_cli.convert(
        "diffpose_lifter", _fixture("diffpose_tiny_lifter"), str(out), num_heads=2
    )
    assert config["model"] == "graformer" and config["model_kwargs"]["hidden"] == 16
    params = load_params(str(out))
    sd = convert.load_npz_checkpoint(_fixture("diffpose_tiny_lifter"), key="0")
    np.testing.assert_array_equal(
        params["output_conv"]["bias"], sd["module.gconv_output.bias"].reshape(-1)
    )
    ema = convert_cli.convert(
        "diffpose_gcndiff",
        _fixture("diffpose_tiny_gcndiff"),
        str(tmp_path / "ema"),
        num_heads=2,
        checkpoint_key="4",
    )
    assert ema["model"] == "gcndiff"
