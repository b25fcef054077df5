"""FinePOSE checkpoint conversion and tokenisation: parity with numbers recorded from the reference.

Fixtures (``tests/fixtures/finepose_tiny_*.npz``) come from
``scripts/record_finepose_fixtures.py``: the reference FinePOSE at width 32
(backbone depth 2, 8 heads; CLIP 2 layers / 4 heads with the full 49408-token
table; prompt encoder 2 layers, FFN 64) with seeded random weights, its
checkpoint as ``main.py`` saves it (embedded CLIP with its visual tower), its
tokenizer's ids, denoiser outputs, flip-TTA DDIM samples with every noise draw,
and the 3DHP variant. No torch is needed here.
"""

from __future__ import annotations

import gzip
import json
import os

import chex
import jax
import numpy as np
import pytest
from ml_collections import ConfigDict

from pose_jax import convert, text
from pose_jax import diffusion as diff
from pose_jax.convert.finepose import (
    convert_clip_text_state_dict,
    convert_finepose_state_dict,
    load_clip_text_params,
)
from pose_jax.models import make_model_fns
from pose_jax.models.finepose import FinePOSEDenoiser
from pose_jax.systems.base import SamplerSpec
from pose_jax.systems.finepose import FinePOSESystem, prompt_tokens, split_params
from pose_jax.text import clip_bpe

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures")
CKPT = os.path.join(FIXTURES, "finepose_tiny_checkpoint.npz")
IO = os.path.join(FIXTURES, "finepose_tiny_io.npz")
TOL = 1e-4
FAST_COMPILE = {"xla_backend_optimization_level": 0}  # several times faster to compile on CPU


@pytest.fixture(scope="module")
def io():
    with np.load(IO) as data:
        out = {k: data[k] for k in data.keys()}
    out["hparams"] = json.loads(str(out.pop("hparams_json")))
    out["known_words"] = json.loads(str(out.pop("known_words_json")))
    return out


@pytest.fixture(scope="module")
def state_dict():
    return convert.load_checkpoint(CKPT)


@pytest.fixture(scope="module")
def converted(state_dict, io):
    return convert_finepose_state_dict(state_dict, clip_heads=io["hparams"]["clip_heads"])


def _words(io, actions):
    """The reference's segment tokens: first 4 of each (pre_text rows and the action)."""
    pre = io["pre_text"]
    return np.stack(
        [np.stack([pre[0][:4], a[:4], *[p[:4] for p in pre[1:]]]) for a in actions]
    ).astype(np.int32)


def _apply(kwargs, params, x, t, cond, **overrides):
    fns = make_model_fns(FinePOSEDenoiser(**{**kwargs, **overrides}))
    fn = jax.jit(fns.apply_fn, compiler_options=FAST_COMPILE)
    return np.asarray(fn(params, x, t.astype(np.int32), cond))


# ---------------------------------------------------------------------------
# Tokenisation
# ---------------------------------------------------------------------------


def test_recorded_token_ids_match_the_reference_tokenizer(io):
    for word, ids in io["known_words"].items():
        assert list(text.KNOWN_TOKEN_IDS[word]) == ids, word
    assert sorted(text.KNOWN_TOKEN_IDS) == sorted(io["known_words"])


def test_tokenize_is_clip_tokenize(io, monkeypatch):
    np.testing.assert_array_equal(
        text.tokenize(["A person", "speed", "head", "body", "arm", "leg"]), io["pre_text"]
    )
    np.testing.assert_array_equal(text.tokenize(list(io["train_actions"])), io["train_text"])
    np.testing.assert_array_equal(text.tokenize(["WalkDog", "WalkDog"]), io["test_text"])
    monkeypatch.setitem(text.KNOWN_TOKEN_IDS, "long text", tuple(range(1, 101)))
    long = text.tokenize("long text")[0]  # truncated, last slot forced to the end marker
    np.testing.assert_array_equal(long, [text.START_TOKEN, *range(1, 76), text.END_TOKEN])


def test_prompt_tokens_follow_the_reference_layout(io):
    words, pool = prompt_tokens("h36m", "SittingDown")
    np.testing.assert_array_equal(words, _words(io, [text.tokenize("SittingDown")[0]])[0])
    assert pool == 4  # [SOT, sitt, ing, down, EOT]: the EOT is cut from the 4 kept tokens
    assert prompt_tokens("h36m", "Eating")[1] == 2
    words, pool = prompt_tokens("3dhp")
    assert words.shape == (6, 4) and pool == 76


def test_unknown_word_without_vocabulary_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv(clip_bpe.VOCAB_ENV, str(tmp_path / "missing.txt.gz"))
    with pytest.raises(FileNotFoundError, match=r"pip install openai-clip.*POSE_JAX_CLIP_VOCAB"):
        text.encode("jumping jacks")
    assert text.encode("Walking") == [3941]  # recorded words need no vocabulary


def test_bpe_tokenizer_on_a_small_vocabulary(monkeypatch, tmp_path):
    """The BPE code path on a hand-made merges file (CLIP's format: header + merges)."""
    path = tmp_path / "vocab.txt.gz"
    merges = ["w a", "l k</w>", "wa lk</w>", "d o", "do g</w>", "h e", "l l", "ll o</w>"]
    merges.append("he llo</w>")
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    monkeypatch.setenv(clip_bpe.VOCAB_ENV, str(path))
    tok = clip_bpe.ClipTokenizer()
    base = 512  # 256 byte symbols (printable ones first, '!' at 0) + the same with </w>
    assert tok.encode("Walk DOG  hello!") == [base + 2, base + 4, base + 8, 256]
    assert tok.encode("wak") == [base, 256 + ord("k") - ord("!")]  # no merge for "wa k</w>"
    assert tok.sot == base + len(merges) and tok.eot == tok.sot + 1
    assert tok.decode(tok.encode("walk dog hello")) == "walk dog hello"
    assert text.get_tokenizer().vocab_path == str(path)


def test_bpe_tokenizer_matches_recorded_ids_when_clip_vocabulary_is_installed():
    if clip_bpe.find_vocab_file() is None:
        pytest.skip("CLIP's vocabulary is not installed (pip install openai-clip)")
    tok = clip_bpe.ClipTokenizer()
    for word, ids in text.KNOWN_TOKEN_IDS.items():
        assert tok.encode(word) == list(ids), word


# ---------------------------------------------------------------------------
# Checkpoint layout and config inference
# ---------------------------------------------------------------------------


def test_fixture_has_the_real_checkpoint_layout(state_dict):
    p = "module.pose_estimator."
    for key in (
        "clip_text.token_embedding.weight",
        "clip_text.visual.conv1.weight",
        "ctx_verb",
        "textTransEncoder.layers.0.self_attn.in_proj_weight",
        "temporal_cross_attn.proj_out.out_layers.2.weight",
        "text_proj.0.weight",
    ):
        assert p + key in state_dict, key
    assert state_dict["module.betas"].dtype == np.float64


def test_infers_config(converted, io):
    _, config = converted
    hp = io["hparams"]
    assert config["model"] == "finepose"
    assert config["model_kwargs"] == dict(
        num_frames=hp["num_frames"], num_joints=17, embed_dim=hp["embed_dim"],
        depth=hp["depth"], num_heads=8, mlp_ratio=2.0, out_dim=3, prompt_layout="h36m",
        text_width=hp["text_width"], clip_layers=hp["clip_layers"],
        clip_heads=hp["clip_heads"], clip_vocab_size=49408, text_layers=hp["text_layers"],
        text_ffn_dim=hp["text_ffn_dim"],
    )  # fmt: skip
    assert config["diffusion"] == {"schedule": "cosine", "num_timesteps": 1000}
    ignored = config["ignored_keys"]
    assert "clip_text.logit_scale" in ignored and "clip_text.text_projection" in ignored
    assert any(k.startswith("clip_text.visual.* (") for k in ignored)
    json.dumps(config)


def test_param_tree_layout(converted, state_dict):
    params, _ = converted
    sd = {k.removeprefix("module.pose_estimator."): v for k, v in state_dict.items()}
    pr = params["prompt"]
    np.testing.assert_array_equal(pr["ctx_action"], sd["ctx_verb"])
    np.testing.assert_array_equal(
        pr["clip_text"]["resblock_1"]["attn"]["qkv"]["kernel"],
        sd["clip_text.transformer.resblocks.1.attn.in_proj_weight"].T,
    )
    np.testing.assert_array_equal(
        pr["text_encoder_0"]["linear1"]["kernel"], sd["textTransEncoder.layers.0.linear1.weight"].T
    )
    np.testing.assert_array_equal(
        params["cross_attn"]["style_out"]["kernel"],
        sd["temporal_cross_attn.proj_out.out_layers.2.weight"].T,
    )
    np.testing.assert_array_equal(params["head"]["bias"], sd["head.1.bias"])


def test_clip_text_alone(converted, state_dict):
    params, _ = converted
    clip, cfg = convert_clip_text_state_dict(state_dict, num_heads=4)
    chex.assert_trees_all_equal(clip, params["prompt"]["clip_text"])
    assert cfg == dict(width=32, num_layers=2, num_heads=4, context_length=77, vocab_size=49408)
    # An OpenAI-style state dict (no prefixes, visual tower and archive entries included).
    openai = {
        k.removeprefix("module.pose_estimator.clip_text."): v
        for k, v in state_dict.items()
        if ".clip_text." in k
    }
    openai["context_length"] = np.asarray(77)
    chex.assert_trees_all_equal(convert_clip_text_state_dict(openai)[0], clip)


# ---------------------------------------------------------------------------
# Denoiser parity
# ---------------------------------------------------------------------------


def test_denoiser_parity_training_call_with_row_tiling(converted, io):
    """Two clips with different actions: the reference tiles prompts as ``r mod b``."""
    params, config = converted
    kw = config["model_kwargs"]
    tokens = io["train_text"]
    cond = {
        "pose_2d": io["train_pose_2d"],
        "prompt_words": _words(io, tokens),
        "prompt_pool_index": tokens.argmax(-1).astype(np.int32),
    }
    x, t = io["train_x_t"], io["train_t"]
    tiled = _apply(kw, params, x, t, cond, prompt_alignment="tile")
    np.testing.assert_allclose(tiled, io["train_out"], atol=TOL, rtol=0)
    own = _apply(kw, params, x, t, cond)
    assert np.abs(own - io["train_out"]).max() > 100 * TOL  # the quirk is visible


def test_denoiser_parity_hypotheses_call_with_precomputed_prompt(converted, io):
    params, config = converted
    kw = config["model_kwargs"]
    x = io["test_x_t"]
    b, h = x.shape[:2]
    tokens = np.repeat(io["test_text"], h, axis=0)
    words, pool = _words(io, tokens), tokens.argmax(-1).astype(np.int32)
    x2d = np.repeat(io["test_pose_2d"], h, axis=0)
    t = np.repeat(io["test_t"], h)
    # Prompt features computed once, outside the denoiser call (as the systems do).
    branch = FinePOSEDenoiser(**kw).prompt_branch(name=None)
    feats = jax.jit(branch.apply, compiler_options=FAST_COMPILE)(
        {"params": params["prompt"]}, words, pool
    )
    out = _apply(kw, params, x.reshape((b * h, *x.shape[2:])), t, {"pose_2d": x2d, **feats})
    np.testing.assert_allclose(out.reshape(x.shape), io["test_out"], atol=TOL, rtol=0)


def test_denoiser_parity_3dhp(io):
    sd = {k.removeprefix("hp3d_model_pos/"): v for k, v in io.items() if k.startswith("hp3d_")}
    sd = {k: v for k, v in sd.items() if k.startswith("module.")}
    params, config = convert_finepose_state_dict(sd, clip_heads=io["hparams"]["clip_heads"])
    assert config["model_kwargs"]["prompt_layout"] == "3dhp"
    assert params["prompt"]["ctx_subject"].shape == (5, 32)
    n = io["hp3d_x_t"].shape[0]
    words, pool = prompt_tokens("3dhp")
    cond = {
        "pose_2d": io["hp3d_pose_2d"],
        "prompt_words": np.repeat(words[None], n, axis=0),
        "prompt_pool_index": np.full((n,), pool, np.int32),
    }
    out = _apply(config["model_kwargs"], params, io["hp3d_x_t"], io["hp3d_t"], cond)
    np.testing.assert_allclose(out, io["hp3d_out"], atol=TOL, rtol=0)


# ---------------------------------------------------------------------------
# Sampler parity through the system (prompt features once per batch)
# ---------------------------------------------------------------------------


def _system(config):
    c = ConfigDict()
    c.data = dict(num_frames=config["model_kwargs"]["num_frames"])
    c.model = dict(
        name="finepose", drop_path_rate=0.0, mode="reference", kwargs=config["model_kwargs"]
    )
    c.diffusion = dict(schedule="cosine", num_steps=1000, scale=1.0, clip=1.1)
    return c


def test_sampler_parity_through_the_system(converted, io):
    params, config = converted
    hp = io["hparams"]
    trainable, frozen = split_params(params, "reference", "h36m")
    system = FinePOSESystem.from_config(_system(config), frozen_params=frozen)
    assert "clip_text" not in trainable["prompt"] and "ctx_action" not in trainable["prompt"]
    np.testing.assert_array_equal(system.prompt_words[2], _words(io, io["sample_text"][:1])[0])
    b = io["sample_pose_2d"].shape[0]
    encode = jax.jit(system.prompt_features, compiler_options=FAST_COMPILE)
    feats = encode(trainable, system.prompt_ids(np.full((b,), 2)))  # row 2: Eating
    cond = {"pose_2d": io["sample_pose_2d"], **feats}
    k = max(hp["sampling_timesteps"])  # K = 3: every iteration's x0, recorded noise
    spec = SamplerSpec(
        num_frames=hp["num_frames"], num_hypotheses=hp["num_proposals"], num_iterations=k
    )
    sampler = system.make_sampler(spec, compiler_options=FAST_COMPILE)
    init, steps = io[f"sample_k{k}_noise_init"], io[f"sample_k{k}_noise_steps"]
    last = np.full((init.shape[0], 1, *init.shape[1:]), np.nan, np.float32)  # sigma = 0 step
    step_noise = np.concatenate([np.moveaxis(steps, 0, 1), last], axis=1)
    sample = jax.jit(sampler.sample, compiler_options=FAST_COMPILE)
    out = sample(trainable, cond, jax.random.key(0), init, step_noise=step_noise)
    ref = io[f"sample_k{k}_x0_steps"]
    np.testing.assert_allclose(np.asarray(out.x0_steps), ref, atol=TOL, rtol=0)
    assert np.ptp(ref, axis=1).max() > 0.1
    # The 2D flip the reference applied is pose_jax's mirror.
    np.testing.assert_array_equal(
        np.asarray(diff.make_flip_fn("h36m")(io["sample_pose_2d"])), io["sample_pose_2d_flip"]
    )


# ---------------------------------------------------------------------------
# Refusals, loading, the launcher
# ---------------------------------------------------------------------------


def test_missing_and_extra_keys_are_refused(state_dict):
    sd = dict(state_dict)
    del sd["module.pose_estimator.clip_text.transformer.resblocks.1.ln_2.bias"]
    del sd["module.pose_estimator.ctx_leg"]
    sd["module.pose_estimator.clip_text.prompt_cache"] = np.zeros((2,), np.float32)
    sd["module.pose_estimator.text_proj.1.weight"] = np.zeros((4, 4), np.float32)
    with pytest.raises(ValueError) as e:
        convert_finepose_state_dict(sd, clip_heads=4)
    msg = str(e.value)
    assert "missing keys [clip_text.transformer.resblocks.1.ln_2.bias, ctx_leg] (2)" in msg
    assert "clip_text.prompt_cache (2,)" in msg and "text_proj.1.weight (4, 4)" in msg
    assert "'module.' and 'pose_estimator.' removed" in msg


def test_wrong_shape_and_heads_are_refused(state_dict):
    sd = dict(state_dict)
    sd["module.pose_estimator.ctx_arm"] = np.zeros((9, 32), np.float32)
    with pytest.raises(ValueError, match=r"ctx_arm: got \(9, 32\), expected \(10, 32\)"):
        convert_finepose_state_dict(sd, clip_heads=4)
    with pytest.raises(ValueError, match="not divisible by 5 heads"):
        convert_finepose_state_dict(state_dict, clip_heads=5)


def test_launch_convert_and_clip_loading(tmp_path, converted):
    from launch import convert as launch_convert

    params, config = converted
    out = tmp_path / "finepose_tiny"
    written = launch_convert.convert("finepose", CKPT, str(out), clip_heads=4)
    assert written["model_kwargs"] == config["model_kwargs"]
    clip, _ = load_clip_text_params(str(out))
    chex.assert_trees_all_equal(clip, params["prompt"]["clip_text"])
    clip_npz, _ = load_clip_text_params(CKPT)  # a FinePOSE checkpoint as .npz
    assert jax.tree.map(np.shape, clip_npz) == jax.tree.map(np.shape, clip)
