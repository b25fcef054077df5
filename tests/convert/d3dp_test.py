"""D3DP checkpoint conversion: parity with numbers recorded from the PyTorch reference.

Fixtures (``tests/fixtures/d3dp_tiny_*.npz``) come from
``scripts/record_d3dp_fixtures.py``: the reference D3DP (F=9, C=32, depth 2,
8 heads) with seeded random weights, its checkpoint in the layout ``main.py``
saves, its denoiser outputs and its flip-TTA DDIM sampler with every noise draw.
No torch is needed here.
"""

from __future__ import annotations

import json
import os
import sys

import chex
import jax
import numpy as np
import pytest

from pose_jax import convert
from pose_jax import diffusion as diff
from pose_jax.convert import common
from pose_jax.convert.d3dp import DIFFUSION_BUFFERS, convert_d3dp_state_dict
from pose_jax.models import get_model, make_model_fns

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures")
CKPT = os.path.join(FIXTURES, "d3dp_tiny_checkpoint.npz")
IO = os.path.join(FIXTURES, "d3dp_tiny_io.npz")
TOL = 1e-4


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
    return convert_d3dp_state_dict(state_dict)


@pytest.fixture(scope="module")
def model_fns(converted):
    _, config = converted
    return make_model_fns(get_model(config["model"], **config["model_kwargs"]))


def _apply(model_fns, params):
    return jax.jit(lambda p, x, t, c: model_fns.apply_fn(p, x, t, c))


# ---------------------------------------------------------------------------
# Checkpoint layout and config inference
# ---------------------------------------------------------------------------


def test_fixture_has_the_real_checkpoint_layout(state_dict):
    assert "module.pose_estimator.STEblocks.0.attn.qkv.weight" in state_dict
    assert "module.pose_estimator.head.1.weight" in state_dict
    for name in DIFFUSION_BUFFERS:
        assert state_dict[f"module.{name}"].dtype == np.float64
    with np.load(CKPT) as data:
        assert {"epoch", "lr", "optimizer/param_groups/0/lr"} <= set(data.keys())


def test_infers_config(converted, io):
    _, config = converted
    hp = io["hparams"]
    assert config["model"] == "d3dp"
    assert config["model_kwargs"] == dict(
        num_frames=hp["num_frames"],
        num_joints=hp["num_joints"],
        embed_dim=hp["embed_dim"],
        depth=hp["depth"],
        num_heads=hp["num_heads"],
        mlp_ratio=hp["mlp_ratio"],
        out_dim=3,
    )
    assert config["diffusion"] == {"schedule": "cosine", "num_timesteps": hp["timestep"]}
    assert sorted(config["ignored_keys"]) == sorted(DIFFUSION_BUFFERS)
    json.dumps(config)  # JSON-able


def test_checkpoint_schedule_matches_pose_jax_schedule(state_dict):
    abar = state_dict["module.alphas_cumprod"]
    ours = diff.make_schedule("cosine", abar.shape[0])
    np.testing.assert_allclose(ours.alphas_cumprod_f64(), abar, rtol=1e-6, atol=1e-12)


def test_param_tree_layout(converted, state_dict):
    params, _ = converted
    sd = {k.removeprefix("module.pose_estimator."): v for k, v in state_dict.items()}
    np.testing.assert_array_equal(
        params["joint_embed"]["kernel"], sd["Spatial_patch_to_embedding.weight"].T
    )
    np.testing.assert_array_equal(params["spatial_pos_embed"][0, 0], sd["Spatial_pos_embed"][0])
    np.testing.assert_array_equal(
        params["temporal_pos_embed"][0, :, 0], sd["Temporal_pos_embed"][0]
    )
    np.testing.assert_array_equal(params["time_embed"]["fc2"]["bias"], sd["time_mlp.3.bias"])
    np.testing.assert_array_equal(
        params["temporal_1"]["attn"]["qkv"]["kernel"], sd["TTEblocks.1.attn.qkv.weight"].T
    )
    np.testing.assert_array_equal(params["head_norm"]["scale"], sd["head.0.weight"])
    np.testing.assert_array_equal(params["spatial_norm"]["scale"], sd["Spatial_norm.weight"])
    assert all(v.dtype == np.float32 for v in common.flatten_tree(params).values())


def test_prefix_variants_give_the_same_params(converted, state_dict):
    params, config = converted
    no_dp = {k.removeprefix("module."): v for k, v in state_dict.items()}
    bare = {
        k.removeprefix("module.pose_estimator."): v
        for k, v in state_dict.items()
        if k.startswith("module.pose_estimator.")
    }
    for variant in (no_dp, bare):
        p, c = convert_d3dp_state_dict(variant)
        chex.assert_trees_all_equal(p, params)
        assert c["model_kwargs"] == config["model_kwargs"]
    assert convert_d3dp_state_dict(bare)[1]["diffusion"] is None


def test_infers_other_sizes():
    """A synthetic state dict of another size (F=27, C=48, depth 3, MLP ratio 3)."""
    from pose_jax.convert.d3dp import d3dp_rules

    rng = np.random.default_rng(0)
    rules = d3dp_rules(num_frames=27, num_joints=17, embed_dim=48, depth=3, mlp_hidden=144)
    sd = {
        f"module.pose_estimator.{r.source}": rng.normal(size=r.shape).astype(np.float32)
        for r in rules
    }
    params, config = convert_d3dp_state_dict(sd, num_heads=4)
    assert config["model_kwargs"] == dict(
        num_frames=27, num_joints=17, embed_dim=48, depth=3, num_heads=4, mlp_ratio=3.0, out_dim=3
    )
    assert config["diffusion"] is None and config["ignored_keys"] == []
    fns = make_model_fns(get_model("d3dp", **config["model_kwargs"]))
    x = np.zeros((1, 27, 17, 3), np.float32)
    out = fns.apply_fn(params, x, np.zeros((1,), np.int32), {"pose_2d": x[..., :2]})
    assert out.shape == (1, 27, 17, 3)


# ---------------------------------------------------------------------------
# Denoiser parity
# ---------------------------------------------------------------------------


def test_denoiser_parity_training_call(converted, model_fns, io):
    """Reference ``is_train=True`` call: x_t ``[B, F, J, 3]``, one t per clip."""
    params, _ = converted
    out = _apply(model_fns, params)(
        params, io["train_x_t"], io["train_t"].astype(np.int32), {"pose_2d": io["train_pose_2d"]}
    )
    assert out.shape == io["train_out"].shape
    np.testing.assert_allclose(np.asarray(out), io["train_out"], atol=TOL, rtol=0)


def test_denoiser_parity_hypotheses_call(converted, model_fns, io):
    """Reference ``is_train=False`` call: x_t ``[B, H, F, J, 3]``, 2D and t shared by the H rows."""
    params, _ = converted
    x_t = io["test_x_t"]
    b, h = x_t.shape[:2]
    out = _apply(model_fns, params)(
        params,
        x_t.reshape((b * h, *x_t.shape[2:])),
        np.repeat(io["test_t"].astype(np.int32), h),
        {"pose_2d": np.repeat(io["test_pose_2d"], h, axis=0)},
    )
    np.testing.assert_allclose(np.asarray(out).reshape(x_t.shape), io["test_out"], atol=TOL, rtol=0)


# ---------------------------------------------------------------------------
# Sampler parity (D3DP's ddim_sample_flip: eta=1, clamp 1.1, flip TTA every step)
# ---------------------------------------------------------------------------


def _d3dp_sampler(model_fns, io, k):
    """pose_jax's D3DP sampler for the fixture's grid of ``k`` steps (default 8-device mesh)."""
    hp = io["hparams"]
    return diff.make_sampler(
        lambda p, x, t, c: model_fns.apply_fn(p, x, t, c),
        diff.make_schedule("cosine", hp["timestep"]),
        diff.make_time_grid("d3dp", hp["timestep"], k),
        event_shape=io[f"sample_k{k}_noise_init"].shape[2:],
        num_hypotheses=hp["num_proposals"],
        eta=1.0,
        clip=1.1 * hp["scale"],
        flip_mode="step",
        skeleton="h36m",
    )


def _recorded_step_noise(io, k):
    """The reference's per-step draws as ``step_noise [B, K, H, F, J, 3]``.

    D3DP draws ``z`` after every step but the last (``t_next = -1``, where
    ``sigma = 0``): the fixture holds ``[K - 1, B, H, ...]``. The sampler ignores
    the final step's row, which is filled with NaN here to show it.
    """
    init = io[f"sample_k{k}_noise_init"]
    steps = io[f"sample_k{k}_noise_steps"] if k > 1 else np.zeros((0, *init.shape), np.float32)
    last = np.full((init.shape[0], 1, *init.shape[1:]), np.nan, np.float32)
    return np.concatenate([np.moveaxis(steps, 0, 1), last], axis=1)


def _parity(out, io, k):
    ref = io[f"sample_k{k}_x0_steps"]  # [B, K, H, F, J, 3]
    assert out.x0_steps.shape == ref.shape
    np.testing.assert_allclose(np.asarray(out.x0_steps), ref, atol=TOL, rtol=0)
    # The last x0 estimate is the output (the grid ends at t_next = -1).
    np.testing.assert_array_equal(np.asarray(out.x), np.asarray(out.x0_steps)[:, -1])


def test_fixture_2d_flip_is_the_h36m_mirror(io):
    flip = diff.make_flip_fn("h36m")
    np.testing.assert_array_equal(np.asarray(flip(io["sample_pose_2d"])), io["sample_pose_2d_flip"])


def test_sampler_parity_one_step(converted, model_fns, io):
    """K=1 (one step, t = T - 1 -> -1): the start noise is the only draw."""
    params, _ = converted
    sampler = _d3dp_sampler(model_fns, io, 1)
    cond = {"pose_2d": io["sample_pose_2d"]}
    out = sampler(params, cond, jax.random.key(0), x_init=io["sample_k1_noise_init"])
    _parity(out, io, 1)


def test_sampler_parity_all_iterations_with_recorded_noise(converted, model_fns, io):
    """K=3 through the :class:`Sampler` fed every recorded draw; all K x0 estimates.

    The start noise goes in as ``x_init`` and the per-step draws as
    ``step_noise``; the jit (NamedSharding, B=2 padded to the 8-device mesh),
    ``pmap`` and pure ``sample`` forms all match the reference. The key is
    unused (a different one per form).
    """
    params, _ = converted
    k = 3
    sampler = _d3dp_sampler(model_fns, io, k)
    cond = {"pose_2d": io["sample_pose_2d"]}
    x_init, step_noise = io[f"sample_k{k}_noise_init"], _recorded_step_noise(io, k)
    runs = {
        "jit": sampler(params, cond, jax.random.key(1), x_init, step_noise=step_noise),
        "pmap": sampler.pmap(params, cond, jax.random.key(2), x_init, step_noise=step_noise),
        "sample": jax.jit(sampler.sample)(
            params, cond, jax.random.key(3), x_init, step_noise=step_noise
        ),
    }
    for out in runs.values():
        _parity(out, io, k)
    ref = io[f"sample_k{k}_x0_steps"]
    assert np.ptp(ref, axis=1).max() > 0.1  # the iterations really differ
    # The recorded per-step noise matters: the sampler's own draws miss the reference.
    own = np.asarray(sampler(params, cond, jax.random.key(1), x_init).x0_steps)
    np.testing.assert_allclose(own[:, 0], ref[:, 0], atol=TOL, rtol=0)  # before any z
    assert np.abs(own[:, 1:] - ref[:, 1:]).max() > 100 * TOL


# ---------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------


def test_missing_key_is_refused(state_dict):
    sd = dict(state_dict)
    del sd["module.pose_estimator.TTEblocks.1.mlp.fc2.bias"]
    del sd["module.pose_estimator.head.0.weight"]
    with pytest.raises(
        ValueError,
        match=r"missing keys \[TTEblocks\.1\.mlp\.fc2\.bias, head\.0\.weight\] \(2\)\."
        r".*'module\.' and 'pose_estimator\.' removed",
    ):
        convert_d3dp_state_dict(sd)


def test_extra_keys_are_refused(state_dict):
    sd = dict(state_dict)
    sd["module.pose_estimator.prompt_proj.weight"] = np.zeros((4, 4), np.float32)
    sd["module.ema_decay"] = np.zeros((), np.float32)
    with pytest.raises(
        ValueError, match=r"unexpected keys .*ema_decay \(\).*prompt_proj\.weight \(4, 4\)"
    ):
        convert_d3dp_state_dict(sd)


def test_extra_block_is_refused_when_depth_is_given(state_dict):
    with pytest.raises(
        ValueError,
        match=r"unexpected keys \[STEblocks\.1\.attn\.proj\.bias \(32,\),"
        r".*TTEblocks\.1\.norm2\.weight \(32,\)\] \(24\)",
    ):
        convert_d3dp_state_dict(state_dict, depth=1)


def test_wrong_shape_is_refused(state_dict):
    sd = dict(state_dict)
    sd["module.pose_estimator.STEblocks.0.attn.proj.weight"] = np.zeros((32, 31), np.float32)
    with pytest.raises(
        ValueError, match=r"STEblocks\.0\.attn\.proj\.weight: got \(32, 31\), expected \(32, 32\)"
    ):
        convert_d3dp_state_dict(sd)


def test_given_size_must_match(state_dict):
    with pytest.raises(
        ValueError, match=r"Temporal_pos_embed: got \(1, 9, 32\), expected \(1, 243, 32\)"
    ):
        convert_d3dp_state_dict(state_dict, num_frames=243)


def test_heads_must_divide_width(state_dict):
    with pytest.raises(ValueError, match="not divisible by num_heads=5"):
        convert_d3dp_state_dict(state_dict, num_heads=5)


def test_mixed_prefix_is_refused(state_dict):
    sd = dict(state_dict)
    sd["pose_estimator.head.1.bias"] = sd.pop("module.pose_estimator.head.1.bias")
    with pytest.raises(
        ValueError,
        match=r"start with 'module\.' but these do not: \[pose_estimator\.head\.1\.bias\]",
    ):
        convert_d3dp_state_dict(sd)


def test_integer_tensor_is_refused(state_dict):
    sd = dict(state_dict)
    sd["module.pose_estimator.head.1.bias"] = np.zeros((3,), np.int64)
    with pytest.raises(ValueError, match=r"head\.1\.bias.*expected a float array"):
        convert_d3dp_state_dict(sd)


# ---------------------------------------------------------------------------
# Loading and the launcher
# ---------------------------------------------------------------------------


def test_bare_npz_state_dict(tmp_path, state_dict):
    path = tmp_path / "bare.npz"
    np.savez(path, **state_dict)
    loaded = convert.load_checkpoint(str(path))
    assert sorted(loaded) == sorted(state_dict)


def test_torch_missing_message(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    with pytest.raises(ImportError, match=r"pip install pose_jax\[torch\]"):
        convert.load_torch_checkpoint(tmp_path / "x.bin")


def test_launch_convert_writes_orbax_params_and_config(tmp_path, converted):
    import orbax.checkpoint as ocp

    from launch import convert as launch_convert

    params, config = converted
    out = tmp_path / "d3dp_tiny"
    written = launch_convert.convert("d3dp", CKPT, str(out))
    assert written["model_kwargs"] == config["model_kwargs"]
    assert json.loads((out / "config.json").read_text())["model_kwargs"] == config["model_kwargs"]
    with ocp.StandardCheckpointer() as ckptr:
        restored = ckptr.restore(out / "params")
    chex.assert_trees_all_equal(jax.tree.map(np.asarray, restored), params)
    with pytest.raises(ValueError, match="exists; pass --overwrite"):
        launch_convert.convert("d3dp", CKPT, str(out))
    launch_convert.convert("d3dp", CKPT, str(out), overwrite=True)
