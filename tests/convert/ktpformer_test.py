"""KTPFormer checkpoint conversion: parity with numbers recorded from the PyTorch reference.

Fixtures (``tests/fixtures/ktpformer_tiny_*.npz``) come from
``scripts/record_ktpformer_fixtures.py``: the reference KTPFormer (F=9, C=32, one
plain pair after the prior pair, 8 heads) with seeded random weights, every
constant-initialised tensor perturbed and non-trivial BatchNorm running statistics;
its checkpoint in the layout ``run_ktpformer.py`` saves, its eval-mode outputs (with
the script's flip TTA), one train-mode forward with the running statistics it leaves,
and the reference's loss terms. No torch is needed here.
"""

from __future__ import annotations

import json
import math
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pose_jax import convert, model_state
from pose_jax.convert import common
from pose_jax.convert.ktpformer import COUNTERS, convert_ktpformer_state_dict, ktpformer_rules
from pose_jax.models import get_model, make_model_fns
from pose_jax.models import ktpformer as ktp
from pose_jax.systems.ktpformer import KTPFormerSystem, ktpformer_losses

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures")
CKPT = os.path.join(FIXTURES, "ktpformer_tiny_checkpoint.npz")
IO = os.path.join(FIXTURES, "ktpformer_tiny_io.npz")
TOL = 1e-4
FAST = {"xla_backend_optimization_level": 0}


@pytest.fixture(scope="module")
def state_dict():
    return convert.load_checkpoint(CKPT)


@pytest.fixture(scope="module")
def io():
    with np.load(IO) as data:
        out = {k: data[k] for k in data.keys()}
    out["hparams"] = json.loads(str(out.pop("hparams_json")))
    return out


@pytest.fixture(scope="module")
def converted(state_dict):
    return convert_ktpformer_state_dict(state_dict)


@pytest.fixture(scope="module")
def fns(converted):
    _, config = converted
    # drop_path_rate 0: the recorded model's, so that its train-mode forward is deterministic.
    return make_model_fns(get_model(config["model"], **config["model_kwargs"], drop_path_rate=0.0))


def _forward(fns, train: bool):
    def run(params, pose_2d):
        zeros = jnp.zeros((*pose_2d.shape[:-1], 3))
        t = jnp.zeros(pose_2d.shape[:1], jnp.int32)
        with model_state.collect() as rec:
            out = fns.apply_fn(
                params, zeros, t, {"pose_2d": pose_2d}, train=train,
                rng=jax.random.key(0) if train else None,
            )  # fmt: skip
        return out, rec.state

    return jax.jit(run, compiler_options=FAST)


def test_fixture_has_the_real_checkpoint_layout(state_dict):
    assert "module.kpattention.attn.kpa.gconv.W" in state_dict
    assert "module.tpattention.attn.tpa.gconv2.bn.running_var" in state_dict
    for k in COUNTERS:
        assert state_dict[f"module.{k}"].dtype == np.int64
    with np.load(CKPT) as data:
        assert {"epoch", "lr", "optimizer/param_groups/0/lr"} <= set(data.keys())


def test_infers_config(converted, io):
    _, config = converted
    hp = io["hparams"]
    assert config["model"] == "ktpformer" and config["skeleton"] == "h36m"
    assert config["model_kwargs"] == dict(
        num_frames=hp["num_frames"], num_joints=17, embed_dim=hp["embed_dim"],
        depth=hp["depth"], num_heads=hp["num_heads"], mlp_ratio=2.0, out_dim=3,
    )  # fmt: skip
    assert config["ignored_keys"] == sorted(COUNTERS)
    json.dumps(config)


def test_adjacencies_match_the_reference(io):
    np.testing.assert_array_equal(ktp.prior_adjacency(ktp.skeleton_graph("h36m")), io["adj"])
    np.testing.assert_array_equal(ktp.prior_adjacency(ktp.frame_chain(9)), io["adj_temporal"])


def test_param_tree_layout(converted, state_dict):
    params, _ = converted
    sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
    w, bs = params["params"], params["batch_stats"]
    g = w["joint_embed"]["prior"]["gconv"]
    np.testing.assert_array_equal(g["kernel"], sd["kpattention.attn.kpa.gconv.W"])
    np.testing.assert_array_equal(g["adj_offset"], sd["kpattention.attn.kpa.gconv.adj2"])
    np.testing.assert_array_equal(
        bs["trajectory_prior"]["tpa_2"]["bn"]["var"],
        sd["tpattention.attn.tpa.gconv2.bn.running_var"],
    )
    np.testing.assert_array_equal(
        w["temporal_pos_embed"][0, :, 0], sd["tpattention.attn.Temporal_pos_embed"][0]
    )
    np.testing.assert_array_equal(
        w["spatial_0"]["norm1"]["scale"], sd["kpattention.attn.norm1.weight"]
    )
    np.testing.assert_array_equal(w["spatial_0"]["norm2"]["bias"], sd["kpattention.norm2.bias"])
    np.testing.assert_array_equal(
        w["temporal_1"]["attn"]["qkv"]["kernel"], sd["TTEblocks.0.attn.qkv.weight"].T
    )
    assert all(v.dtype == np.float32 for v in common.flatten_tree(params).values())


def test_eval_mode_output_matches_the_reference(converted, fns, io):
    params, _ = converted
    out, recorded = _forward(fns, train=False)(params, io["eval_pose_2d"])
    assert recorded is None
    np.testing.assert_allclose(out, io["eval_out"], atol=TOL, rtol=0)


def test_flip_tta_matches_the_reference_script(converted, fns, io):
    params, _ = converted
    system = KTPFormerSystem(fns)
    out = jax.jit(system.predict_flip_tta, compiler_options=FAST)(params, io["eval_pose_2d"])
    np.testing.assert_allclose(out, io["eval_tta_out"], atol=TOL, rtol=0)


def test_train_mode_output_and_running_statistics_match(converted, fns, io):
    params, _ = converted
    out, recorded = _forward(fns, train=True)(params, io["train_pose_2d"])
    np.testing.assert_allclose(out, io["train_out"], atol=TOL, rtol=0)
    bs = recorded["batch_stats"]
    pairs = {
        "kpattention.attn.kpa.bn": bs["joint_embed"]["prior"]["bn"],
        "tpattention.attn.tpa.gconv1.bn": bs["trajectory_prior"]["tpa_1"]["bn"],
        "tpattention.attn.tpa.gconv2.bn": bs["trajectory_prior"]["tpa_2"]["bn"],
    }
    for src, ours in pairs.items():
        np.testing.assert_allclose(ours["mean"], io[f"after_train/{src}.running_mean"], atol=TOL)
        np.testing.assert_allclose(ours["var"], io[f"after_train/{src}.running_var"], atol=TOL)


def test_loss_terms_match_the_reference(io):
    terms = ktpformer_losses(
        jnp.asarray(io["train_out"]),
        jnp.asarray(io["train_pose_3d"]),
        io["hparams"]["joint_weights"],
    )
    np.testing.assert_allclose(terms["wmpjpe_m"], io["loss_wmpjpe"], rtol=1e-5)
    np.testing.assert_allclose(terms["temporal_consistency"], io["loss_tc"], rtol=1e-5)
    np.testing.assert_allclose(terms["mpjve_m"], io["loss_mpjve"], rtol=1e-5)


def test_prefix_and_counter_variants_give_the_same_params(converted, state_dict):
    params, config = converted
    bare = {k.removeprefix("module."): v for k, v in state_dict.items()}
    no_counters = {k: v for k, v in bare.items() if k not in COUNTERS}
    for variant in (bare, no_counters):
        p, c = convert_ktpformer_state_dict(variant, check_model=False)
        chex.assert_trees_all_equal(p, params)
        assert c["model_kwargs"] == config["model_kwargs"]


def test_refuses_missing_extra_and_misshaped_keys(state_dict):
    bad = dict(state_dict)
    del bad["module.tpattention.attn.tpa.gconv1.bn.running_mean"]
    bad["module.kpattention.attn.kpa.gconv.adj2"] = np.zeros((16, 16), np.float32)
    bad["module.extra.weight"] = np.zeros((3,), np.float32)
    with pytest.raises(ValueError) as e:
        convert_ktpformer_state_dict(bad)
    msg = str(e.value)
    assert "missing keys [tpattention.attn.tpa.gconv1.bn.running_mean]" in msg
    assert "unexpected keys [extra.weight (3,)]" in msg
    assert "kpattention.attn.kpa.gconv.adj2: got (16, 16), expected (17, 17)" in msg
    assert "'module.' removed" in msg
    with pytest.raises(ValueError, match=r"Temporal_pos_embed: got \(1, 9, 32\), expected \(1, 27"):
        convert_ktpformer_state_dict(state_dict, num_frames=27)
    with pytest.raises(ValueError, match="skeleton"):
        convert_ktpformer_state_dict(state_dict, skeleton="humaneva")


def test_3dhp_skeleton_names_the_3dhp_model(state_dict):
    _, config = convert_ktpformer_state_dict(state_dict, skeleton="3dhp", check_model=False)
    assert config["model"] == "ktpformer_3dhp"


def test_paper_size_rules_count_equals_the_reference():
    rules = ktpformer_rules(num_frames=243, num_joints=17, embed_dim=512, depth=8, mlp_hidden=1024)
    trained = sum(math.prod(r.shape) for r in rules if r.target[0] == "params")
    running = sum(math.prod(r.shape) for r in rules if r.target[0] == "batch_stats")
    assert (trained, running) == (35_213_430, 3072)


def test_registered_converter_and_cli(tmp_path, io):
    from launch import convert as convert_cli

    fn, key = convert.get_converter("ktpformer")
    assert fn is convert_ktpformer_state_dict and key == "model_pos"
    config = convert_cli.convert("ktpformer", CKPT, tmp_path / "out")
    assert config["model"] == "ktpformer"
    assert (tmp_path / "out" / "params").exists()
