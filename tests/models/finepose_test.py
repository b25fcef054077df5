"""Tests of the FinePOSE denoiser (MixSTE variant) and CLIP's text tower."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pose_jax import models
from pose_jax.models import clip_text
from pose_jax.models.finepose import PROMPT_LAYOUTS, FinePOSEDenoiser, prompt_length

FAST = {"xla_backend_optimization_level": 0}
TINY = dict(
    num_frames=9, embed_dim=32, depth=2, num_heads=4, text_width=16, clip_layers=1,
    clip_heads=2, clip_vocab_size=64, text_layers=1, text_ffn_dim=32,
)  # fmt: skip


def _init(module, key, x, t, cond):
    return jax.jit(lambda k: module.init(k, x, t, cond)["params"], compiler_options=FAST)(key)


def _encode(module, params, cond):
    branch = module.prompt_branch(name=None)
    fn = jax.jit(lambda p, w, i: branch.apply({"params": p}, w, i), compiler_options=FAST)
    return fn(params["prompt"], cond["prompt_words"], cond["prompt_pool_index"])


def _count(tree) -> int:
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


def _inputs(n=2, f=9, layout="h36m", seed=0):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    x = jax.random.normal(k1, (n, f, 17, 3))
    segments = len(PROMPT_LAYOUTS[layout])
    cond = {
        "pose_2d": jax.random.normal(k2, (n, f, 17, 2)),
        "prompt_words": jax.random.randint(k3, (n, segments, 4), 0, 64),
        "prompt_pool_index": jnp.arange(n, dtype=jnp.int32) + 2,
    }
    return x, jnp.arange(n, dtype=jnp.int32) * 97, cond


@pytest.fixture(scope="module")
def tiny():
    """Tiny FinePOSE, its params (PTS output moved off zero), prompt features and a
    jitted apply taking ``(params, x, t, cond, align)``."""
    module = FinePOSEDenoiser(**TINY)
    x, t, cond = _inputs()
    initial = _init(module, jax.random.key(0), x, t, cond)
    params = jax.tree.map(lambda a: a, initial)
    k = params["cross_attn"]["style_out"]["kernel"]
    params["cross_attn"]["style_out"]["kernel"] = jax.random.normal(jax.random.key(9), k.shape)
    feats = _encode(module, params, cond)
    apply = jax.jit(
        lambda p, x, t, c, align="own": module.clone(prompt_alignment=align).apply(
            {"params": p}, x, t, c
        ),
        static_argnames="align",
        compiler_options=FAST,
    )
    return module, params, feats, apply, initial


def test_paper_size_parameter_counts():
    """The PyTorch FinePOSE: 49,312,771 without CLIP; CLIP ViT-B/32's text tower 63,165,952."""
    module = models.get_model("finepose")
    x, t, cond = _inputs(n=1, f=243)
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), x, t, cond)["params"])
    clip = shapes["prompt"]["clip_text"]
    assert _count(clip) == 63_165_952
    assert _count(shapes) - _count(clip) == 49_312_771
    d3dp = jax.eval_shape(
        lambda: models.get_model("d3dp").init(jax.random.key(0), x, t, {"pose_2d": cond["pose_2d"]})
    )["params"]
    # The backbone is D3DP's, parameter for parameter.
    assert jax.tree.map(jnp.shape, {k: shapes[k] for k in d3dp}) == jax.tree.map(jnp.shape, d3dp)
    assert sorted(set(shapes) - set(d3dp)) == ["cross_attn", "prompt"]
    assert _count(shapes["cross_attn"]) == 1_579_008
    ctx = {k: v for k, v in shapes["prompt"].items() if k.startswith("ctx_")}
    assert _count(ctx) == 25_088 and prompt_length("h36m") == prompt_length("3dhp") == 77


def test_registry_variants():
    assert models.get_model("finepose_3dhp").prompt_layout == "3dhp"
    tiny = models.get_model("finepose_tiny", num_frames=9)
    assert isinstance(tiny, FinePOSEDenoiser) and tiny.embed_dim == 32


def test_pts_branch_starts_as_identity_and_backbone_is_d3dp(tiny):
    """Zero-initialised PTS output and no pooled prompt: FinePOSE computes D3DP."""
    _, _, feats, apply, params = tiny
    zero = params["cross_attn"]["style_out"]
    assert zero["kernel"].shape == (32, 32)
    assert not np.any(zero["kernel"]) and not np.any(zero["bias"])
    x, t, cond = _inputs()
    no_pool = {**feats, "prompt_pooled": jnp.zeros_like(feats["prompt_pooled"])}
    out = apply(params, x, t, {"pose_2d": cond["pose_2d"], **no_pool})
    d3dp = models.MixSTEDenoiser(num_frames=9, embed_dim=32, depth=2, num_heads=4)
    backbone = {k: v for k, v in params.items() if k not in ("prompt", "cross_attn")}
    ref = jax.jit(d3dp.apply, compiler_options=FAST)(
        {"params": backbone}, x, t, {"pose_2d": cond["pose_2d"]}
    )
    chex.assert_trees_all_close(out, ref, atol=1e-5)


def test_precomputed_prompt_conditions_the_output(tiny):
    _, params, feats, apply, _ = tiny
    x, t, cond = _inputs()
    chex.assert_shape(feats["prompt"], (2, 77, 16))
    chex.assert_shape(feats["prompt_pooled"], (2, 32))
    b = apply(params, x, t, {"pose_2d": cond["pose_2d"], **feats})
    # (Words in cond give the same numbers: tests/convert/finepose_test.py.)
    # The prompt matters, through the pooled prompt and through the cross-attention.
    swapped = {**feats, "prompt": feats["prompt"][::-1]}
    assert not np.allclose(apply(params, x, t, {"pose_2d": cond["pose_2d"], **swapped}), b)


def test_row_tiling_matches_own_prompt_only_for_a_shared_prompt(tiny):
    _, params, feats, apply, _ = tiny
    x, t, cond = _inputs()
    mixed = {"pose_2d": cond["pose_2d"], **feats}
    same = {"pose_2d": cond["pose_2d"], **jax.tree.map(lambda a: jnp.stack([a[0]] * 2), feats)}
    chex.assert_trees_all_close(
        apply(params, x, t, same, align="tile"), apply(params, x, t, same), atol=1e-5
    )
    assert not np.allclose(apply(params, x, t, mixed, align="tile"), apply(params, x, t, mixed))
    # Row (n, j) reads prompt (n * J + j) mod N, per chunk of N / groups clips.
    idx = FinePOSEDenoiser(prompt_alignment="tile", prompt_groups=2)._row_index(4, 17)
    np.testing.assert_array_equal(idx[:5], [0, 1, 0, 1, 0])
    np.testing.assert_array_equal(idx[34:37], [2, 3, 2])
    np.testing.assert_array_equal(
        FinePOSEDenoiser(prompt_alignment="tile")._row_index(3, 17)[15:20], [0, 1, 2, 0, 1]
    )


def test_3dhp_layout_and_errors(tiny):
    _, params, _, apply, _ = tiny
    m3 = FinePOSEDenoiser(**{**TINY, "prompt_layout": "3dhp"})
    x, t, cond = _inputs(layout="3dhp")
    p3 = jax.eval_shape(lambda: m3.init(jax.random.key(2), x, t, cond)["params"])
    assert p3["prompt"]["ctx_subject"].shape == (5, 16) and "ctx_action" not in p3["prompt"]
    out = jax.eval_shape(lambda p: m3.apply({"params": p}, x, t, cond), p3)
    chex.assert_shape(out, (2, 9, 17, 3))
    x, t, cond = _inputs()
    with pytest.raises(ValueError, match="prompt_words"):
        apply(params, x, t, {"pose_2d": cond["pose_2d"]})
    with pytest.raises(ValueError, match=r"prompt words have shape \(2, 6, 4\)"):
        apply(params, x, t, {**cond, "prompt_words": cond["prompt_words"][:, :6]})
    bad = {"pose_2d": cond["pose_2d"], "prompt": jnp.zeros((2, 76, 16)), "prompt_pooled": 0}
    with pytest.raises(ValueError, match=r"cond\['prompt'\] has shape \(2, 76, 16\)"):
        apply(params, x, t, bad)


def test_clip_tower_is_causal_and_quick_gelu():
    tower = clip_text.ClipTextTransformer(
        width=16, num_layers=2, num_heads=2, context_length=77, vocab_size=50
    )
    tokens = jax.random.randint(jax.random.key(0), (2, 77), 0, 50)
    params = jax.eval_shape(
        lambda: tower.init(jax.random.key(1), tokens, method=tower.encode_tokens)["params"]
    )
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda a: 0.3 * rng.standard_normal(a.shape, np.float32), params)
    enc = jax.jit(
        lambda p, tok: tower.apply({"params": p}, tok, method=tower.encode_tokens),
        compiler_options=FAST,
    )
    a = enc(params, tokens)
    b = enc(params, tokens.at[:, 40].set((tokens[:, 40] + 1) % 50))
    chex.assert_trees_all_close(a[:, :40], b[:, :40])  # earlier positions never see later ones
    assert not np.allclose(a[:, 40:], b[:, 40:])
    np.testing.assert_allclose(
        clip_text.quick_gelu(jnp.array([1.0])), [1.0 / (1.0 + np.exp(-1.702))], rtol=1e-6
    )
    with pytest.raises(ValueError, match=r"expected \[N, 77, 16\]"):
        tower.apply({"params": params}, jnp.zeros((1, 70, 16)))
