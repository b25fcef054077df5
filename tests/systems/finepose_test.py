"""FinePOSE system: train + evaluate via launch.experiment, modes, prompts once per batch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import finepose_3dhp, finepose_h36m
from pose_jax.systems import get_system
from pose_jax.systems.finepose import H36M_ACTIONS, FinePOSESystem


def _config(arg: str, data_dir=None):
    c = finepose_h36m.get_config(f"runlocal,{arg}")
    c.data.num_frames = 9
    c.data.batch_size = 8  # divisible by the 8 test devices
    c.model.kwargs = {"depth": 1}  # finepose_tiny with one spatial/temporal stage
    if data_dir is not None:
        c.data.data_dir = str(data_dir)
        c.data.dataset = "synthetic_pose/tiny"
    c.train.num_steps = 2
    c.train.log_every_steps = 1
    c.train.checkpoint_every_steps = 2
    c.train.tensorboard = False
    c.eval.num_hypotheses = 2
    c.eval.num_iterations = 1
    c.eval.max_sequences = 1
    c.eval.plots = False
    return c


@pytest.fixture(scope="module")
def reference():
    return FinePOSESystem.from_config(_config("mode=reference"))


@pytest.fixture(scope="module")
def paper():
    system = FinePOSESystem.from_config(_config("mode=paper"))
    batch = system.example_batch(9)
    params = jax.jit(lambda k: system.init_params(k, batch), compiler_options=FAST)(
        jax.random.key(0)
    )
    return system, params


FAST = {"xla_backend_optimization_level": 0}


def _batch(b=4, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "pose_3d": (0.2 * rng.standard_normal((b, 9, 17, 3))).astype(np.float32),
        "pose_2d": rng.uniform(-1, 1, (b, 9, 17, 2)).astype(np.float32),
        "action": np.array([0, 9, 14, -1][:b], np.int32),
    }


def test_h36m_actions_match_the_data_pipeline():
    from data_pipelines.common import H36M_ACTIONS as PIPELINE_ACTIONS

    assert tuple(PIPELINE_ACTIONS) == H36M_ACTIONS


@pytest.mark.slow
def test_train_and_evaluate_on_synthetic_data(tmp_path, monkeypatch):
    """``launch.experiment.train_and_evaluate`` with the runlocal reference config."""
    from data_pipelines.build import build
    from launch import experiment

    # The samplers compiled at -O0 (as the sampler tests do).
    real_make = FinePOSESystem.make_sampler
    monkeypatch.setattr(
        FinePOSESystem,
        "make_sampler",
        lambda self, spec, **kw: real_make(self, spec, **kw, compiler_options=FAST),
    )

    build("synthetic_pose", "tiny", data_dir=str(tmp_path / "data"), progress=False)
    c = _config("mode=reference", tmp_path / "data")
    batch_keys = FinePOSESystem.from_config(c).batch_keys  # was config.train.batch_keys
    assert get_system(c.system) is FinePOSESystem and "action" in batch_keys
    out = experiment.train_and_evaluate(c, str(tmp_path / "run"))
    state, results = out["state"], out["results"]
    assert int(state.step) == 2
    # Frozen leaves are not trained parameters (no optimizer state, no weight decay).
    prompt = state.params["prompt"]
    assert "clip_text" not in prompt and not any(k.startswith("ctx_") for k in prompt)
    assert "text_encoder_0" in prompt and "cross_attn" in state.params
    proto = results["protocol"]
    assert proto["finepose_mode"] == "reference"
    assert proto["action_label_from_ground_truth"] is True
    assert proto["action_label"].startswith("ground truth")
    assert proto["clip_weights"].startswith("random")
    assert np.isfinite(results["mpjpe_mm"]["j_agg"])
    assert (tmp_path / "run" / "eval").exists()


def test_reference_mode_tiles_training_rows_and_freezes_ctx(reference):
    system = reference
    assert system.train_model.module.prompt_alignment == "tile"
    assert system.model.module.prompt_alignment == "own"
    assert system.clip_table.shape == (16, 77, 32)  # 15 actions + the agnostic prompt
    assert {"clip_text", "ctx_action", "ctx_leg"} <= set(system.frozen["prompt"])
    np.testing.assert_array_equal(system.prompt_ids(jnp.array([3, -1, 20])), [3, 15, 15])


def test_paper_mode_trains_context_vectors(paper):
    system, params = paper
    assert system.train_model.module.prompt_alignment == "own" and system.clip_table is None
    assert "ctx_action" in params["prompt"] and "clip_text" not in params["prompt"]
    grad_fn = jax.jit(jax.grad(lambda p, b, k: system.loss_fn(p, b, k)[0]), compiler_options=FAST)
    grads = grad_fn(params, _batch(), jax.random.key(1))
    for name in ("ctx_subject", "ctx_action", "ctx_leg"):
        assert np.abs(np.asarray(grads["prompt"][name])).max() > 0, name
    assert np.abs(np.asarray(grads["cross_attn"]["style_out"]["kernel"])).max() > 0


def test_action_dropout_uses_the_agnostic_prompt(paper, reference):
    import dataclasses

    system, _ = paper
    action = jnp.array([0, 9, 14, -1] * 64)
    key = jax.random.key(3)
    ids = np.asarray(system.training_prompt_ids(action, key))  # paper config: 10 %
    dropped = (ids == 15) & (np.asarray(action) >= 0)
    assert 0.02 < dropped.mean() < 0.2
    np.testing.assert_array_equal(ids[~dropped], np.asarray(system.prompt_ids(action))[~dropped])
    always = dataclasses.replace(system, action_dropout=1.0)
    assert (np.asarray(always.training_prompt_ids(action, key)) == 15).all()
    assert reference.action_dropout == 0.0  # and the reference mode never drops
    np.testing.assert_array_equal(
        reference.training_prompt_ids(action, key), reference.prompt_ids(action)
    )


def test_eval_sample_fn_prompts_once_per_batch_and_label_sources(paper, monkeypatch):
    system, params = paper
    ecfg = _config("mode=paper").eval
    ecfg.num_iterations = 2
    calls = []
    real = FinePOSESystem.prompt_features

    def spy(self, *a, **kw):
        calls.append(1)
        return real(self, *a, **kw)

    monkeypatch.setattr(FinePOSESystem, "prompt_features", spy)
    real_make = FinePOSESystem.make_sampler
    monkeypatch.setattr(
        FinePOSESystem,
        "make_sampler",
        lambda self, spec, **kw: real_make(self, spec, **kw, compiler_options=FAST),
    )
    pose_2d = _batch(2)["pose_2d"]
    sample_fn = system.make_eval_sample_fn(ecfg, params, num_frames=9)
    with pytest.raises(ValueError, match="sequence's action"):
        sample_fn(pose_2d, jax.random.key(0))
    out = sample_fn(pose_2d, jax.random.key(0), sequence={"action": 9})
    assert out.shape == (2, 2, 2, 9, 17, 3) and np.isfinite(out).all()
    # Traced once (one encode program); the K=2 denoiser calls never encode prompts.
    assert len(calls) == 1
    # Label-free: the agnostic prompt, no sequence needed (same compiled programs).
    sample_fn.source = "none"
    out_free = sample_fn(pose_2d, jax.random.key(0))
    assert not np.allclose(out_free, out)
    ecfg.action_source = "none"
    info = system.protocol_info(ecfg)
    assert info["action_label_from_ground_truth"] is False and "unknown" in info["action_label"]
    ecfg.action_source = "oracle"
    with pytest.raises(ValueError, match="action_source"):
        system.make_eval_sample_fn(ecfg, params, num_frames=9)
    # The sampler's denoiser needs no prompt-branch weights at all (traced, not compiled).
    bare = {k: v for k, v in params.items() if k != "prompt"}
    feats = jax.eval_shape(system.prompt_features, params, jnp.array([1, 2]))
    cond = {"pose_2d": pose_2d, **feats}
    out = jax.eval_shape(sample_fn.sampler.sample, bare, cond, jax.random.key(1))
    assert out.x0_steps.shape == (2, 2, 2, 9, 17, 3)


def test_3dhp_config_has_no_action():
    c = finepose_3dhp.get_config("runlocal")
    c.data.num_frames = 9
    system = FinePOSESystem.from_config(c, skeleton="3dhp")
    assert system.model.module.prompt_layout == "3dhp" and system.prompt_words.shape == (1, 6, 4)
    assert int(system.pool_index[0]) == 76 and "action" not in system.batch_keys
    info = system.protocol_info(c.eval)
    assert (
        info["action_label"].startswith("not used") and not info["action_label_from_ground_truth"]
    )
    with pytest.raises(ValueError, match="mode='nope'"):
        finepose_h36m.get_config("mode=nope")
