"""Pluggable MixSTE parts: the token embedding, the spatial/temporal blocks, the attention.

The default-built models are checked against values recorded before the parts
became pluggable (same parameter tree, same outputs); custom parts are defined
here, the way a new model file would define them.
"""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pose_jax import models, skeleton
from pose_jax.models import layers
from pose_jax.models.finepose import PROMPT_LAYOUTS, FinePOSEDenoiser
from pose_jax.models.graph import Graph, skeleton_graph
from pose_jax.models.mixste import BLOCK_ARGS, MixSTEDenoiser, PerStage, transformer_block

F, J = 5, 17
FAST = {"xla_backend_optimization_level": 0}
H36M = skeleton_graph(skeleton.get_skeleton("h36m").edges, J)


def _inputs(n=2, f=F, seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(k1, (n, f, J, 3))
    c = {"pose_2d": jax.random.normal(k2, (n, f, J, 2))}
    return x, jnp.arange(n, dtype=jnp.int32) * 7, c


def _jit(fn):
    return jax.jit(fn, compiler_options=FAST)


def _init(module, f=F):
    x, t, c = _inputs(f=f)
    return _jit(lambda k: module.init(k, x, t, c)["params"])(jax.random.key(0))


def _init_shapes(module, f=F):
    """The parameter tree's shapes, traced without compiling."""
    x, t, c = _inputs(f=f)
    return _shapes(jax.eval_shape(lambda: module.init(jax.random.key(0), x, t, c)["params"]))


def _apply(module, params, f=F, train=False):
    x, t, c = _inputs(f=f)
    rngs = {"dropout": jax.random.key(3)} if train else None
    return _jit(lambda p: module.apply({"params": p}, x, t, c, train=train, rngs=rngs))(params)


def _shapes(tree):
    return jax.tree.map(lambda a: tuple(a.shape), tree)


@pytest.fixture(scope="module")
def d3dp():
    module = models.get_model("d3dp_tiny", num_frames=F)
    return module, _init(module)


@pytest.fixture(scope="module")
def d3dp_out(d3dp):
    return _apply(*d3dp)


# -- (a) the defaults are today's network ------------------------------------------


def _block_shapes(c, hidden):
    dense = lambda i, o: {"kernel": (i, o), "bias": (o,)}  # noqa: E731
    norm = {"scale": (c,), "bias": (c,)}
    return {
        "norm1": norm,
        "attn": {"qkv": dense(c, 3 * c), "proj": dense(c, c)},
        "norm2": norm,
        "mlp": {"fc1": dense(c, hidden), "fc2": dense(hidden, c)},
    }


def test_default_param_tree_is_the_d3dp_layout(d3dp):
    _, params = d3dp
    c = 64
    norm = {"scale": (c,), "bias": (c,)}
    expected = {
        "joint_embed": {"kernel": (5, c), "bias": (c,)},
        "spatial_pos_embed": (1, 1, J, c),
        "time_embed": {"fc1": {"kernel": (c, 2 * c), "bias": (2 * c,)},
                       "fc2": {"kernel": (2 * c, c), "bias": (c,)}},
        "spatial_norm": norm,
        "temporal_norm": norm,
        "temporal_pos_embed": (1, F, 1, c),
        "head_norm": norm,
        "head": {"kernel": (c, 3), "bias": (3,)},
        **{f"{kind}_{i}": _block_shapes(c, 2 * c) for kind in ("spatial", "temporal")
           for i in range(2)},
    }  # fmt: skip
    assert _shapes(params) == expected
    assert sum(int(np.prod(a.shape)) for a in jax.tree.leaves(params)) == 152_835


# Recorded from the models as they were before the parts became fields
# (key 0, _inputs(), num_frames=5; train: dropout key 3).
RECORDED = {
    "d3dp_tiny": dict(
        first=[[0.556877, 0.107667, 0.45767], [0.506503, 0.270632, 0.55773]],
        last=[[-0.091016, 0.00512, -0.125336], [0.401893, -0.080303, 0.94019]],
        sums=(68.152267, 156.079803, 69.034012, 157.364212),
    ),
    "mixste_lifter_tiny": dict(
        first=[[0.462293, 0.192207, 0.039993], [0.73409, 0.585949, 0.226886]],
        last=[[0.398597, 0.921706, -0.06788], [0.454224, -0.280325, 0.466998]],
        sums=(211.099213, 217.454132, 211.099213, 217.454132),
    ),
}


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_default_outputs_match_the_recorded_ones(name):
    module = models.get_model(name, num_frames=F)
    params = _init(module)
    y, yt = _apply(module, params), _apply(module, params, train=True)
    rec = RECORDED[name]
    np.testing.assert_allclose(y[0, 0, :2], rec["first"], atol=2e-5)
    np.testing.assert_allclose(y[1, -1, -2:], rec["last"], atol=2e-5)
    sums = (y.sum(), jnp.abs(y).sum(), yt.sum(), jnp.abs(yt).sum())
    np.testing.assert_allclose(np.asarray(sums), rec["sums"], rtol=2e-5)


def test_explicit_defaults_build_the_same_model(d3dp, d3dp_out):
    module, params = d3dp
    explicit = module.clone(
        embedding=layers.TorchDense,
        spatial_block=PerStage({}),
        temporal_block=functools.partial(transformer_block, attention=layers.SelfAttention),
    )
    chex.assert_trees_all_equal(_init(explicit), params)
    chex.assert_trees_all_equal(_apply(explicit, params), d3dp_out)


# -- (b) custom blocks -------------------------------------------------------------


class ScaledBlock(nn.Module):
    """MixSTE's block with its output times a learnable ``gain`` (init 2)."""

    kind: str
    stage: int
    depth: int
    num_tokens: int
    num_heads: int
    mlp_ratio: float
    dropout: float
    attn_dropout: float
    drop_path: float
    ln_eps: float
    dtype: jnp.dtype | None = None
    attention_impl: str = "auto"

    @nn.compact
    def __call__(self, x, *, deterministic):
        inner = layers.TransformerBlock(
            self.num_heads, self.mlp_ratio, True, self.dropout, self.attn_dropout,
            self.drop_path, self.ln_eps, self.dtype, name="inner",
        )  # fmt: skip
        gain = self.param("gain", nn.initializers.constant(2.0), ())
        return inner(x, deterministic=deterministic) * gain


class GraphPriorBlock(nn.Module):
    """A KTPFormer-shaped block: the attention's input tokens get a learnable graph
    convolution over the attended axis (``graph``: the skeleton; None: the chain of
    ``num_tokens`` frames) before MixSTE's block."""

    kind: str
    stage: int
    depth: int
    num_tokens: int
    num_heads: int
    mlp_ratio: float
    dropout: float
    attn_dropout: float
    drop_path: float
    ln_eps: float
    dtype: jnp.dtype | None = None
    attention_impl: str = "auto"
    graph: Graph | None = None

    @nn.compact
    def __call__(self, x, *, deterministic):
        length = x.shape[1]
        chain = tuple((i, i + 1) for i in range(self.num_tokens - 1))
        g = self.graph or Graph(self.num_tokens, chain)
        if g.num_nodes != self.num_tokens:
            raise ValueError(f"{g.num_nodes} graph nodes for {self.num_tokens} {self.kind} tokens.")
        adj = jnp.asarray(g.adjacency()[:length, :length], jnp.float32)
        prior = layers.TorchDense(x.shape[-1], name="prior")(jnp.einsum("lm,bmc->blc", adj, x))
        block = layers.TransformerBlock(
            self.num_heads, self.mlp_ratio, True, self.dropout, self.attn_dropout,
            self.drop_path, self.ln_eps, self.dtype, name="block",
        )  # fmt: skip
        return block(x + nn.relu(prior), deterministic=deterministic)


def test_block_factory_receives_the_stage_context(d3dp):
    module, _ = d3dp
    calls = []

    def recording(**kwargs):
        calls.append(kwargs)
        return transformer_block(**kwargs)

    custom = module.clone(drop_path_rate=0.3, spatial_block=recording, temporal_block=recording)
    _init_shapes(custom, f=3)  # fewer frames than the table: num_tokens stays num_frames
    assert all(set(kw) == set(BLOCK_ARGS) for kw in calls)
    got = [(kw["name"], kw["kind"], kw["stage"], kw["depth"], kw["num_tokens"]) for kw in calls]
    assert got == [
        ("spatial_0", "spatial", 0, 2, J), ("temporal_0", "temporal", 0, 2, F),
        ("spatial_1", "spatial", 1, 2, J), ("temporal_1", "temporal", 1, 2, F),
    ]  # fmt: skip
    np.testing.assert_allclose([kw["drop_path"] for kw in calls], [0, 0, 0.3, 0.3])
    assert {(kw["num_heads"], kw["mlp_ratio"], kw["ln_eps"]) for kw in calls} == {(4, 2.0, 1e-6)}


def _only_stage0_differs(params, default):
    """The other parameters are the default model's, value for value."""
    assert set(params) == set(default)
    for key in set(default) - {"spatial_0", "temporal_0"}:
        chex.assert_trees_all_equal(params[key], default[key])


def test_stage0_custom_block_changes_only_stage0(d3dp, d3dp_out):
    module, default = d3dp
    custom = module.clone(
        spatial_block=PerStage({0: ScaledBlock}), temporal_block=PerStage({0: ScaledBlock})
    )
    params = _init(custom)
    _only_stage0_differs(params, default)
    for key in ("spatial_0", "temporal_0"):
        assert params[key]["gain"] == 2.0
        assert _shapes(params[key]["inner"]) == _shapes(default[key])
    y = _apply(custom, params)
    chex.assert_tree_all_finite(y)
    want = d3dp_out
    assert not np.allclose(y, want)
    # The default blocks' weights with gain 1 are the default network again.
    stage0 = {k: {"inner": default[k], "gain": jnp.ones(())} for k in ("spatial_0", "temporal_0")}
    np.testing.assert_allclose(_apply(custom, {**params, **stage0}), want, atol=1e-5)
    chex.assert_tree_all_finite(_apply(custom, params, train=True))


def test_graph_prior_blocks_at_stage0(d3dp):
    module, default = d3dp
    custom = module.clone(
        spatial_block=PerStage({0: functools.partial(GraphPriorBlock, graph=H36M)}),
        temporal_block=PerStage({0: GraphPriorBlock}),
    )
    params = _init(custom)
    _only_stage0_differs(params, default)
    for key in ("spatial_0", "temporal_0"):
        assert set(params[key]) == {"prior", "block"}
        assert _shapes(params[key]["block"]) == _shapes(default[key])
    y = _apply(custom, params, f=3)  # a shorter clip reads the chain's first frames
    chex.assert_shape(y, (2, 3, J, 3))
    chex.assert_tree_all_finite(y)


def test_per_stage_checks_its_stages(d3dp):
    module, _ = d3dp
    with pytest.raises(ValueError, match="stage indices"):
        PerStage({-1: ScaledBlock})
    with pytest.raises(ValueError, match=r"stage\(s\) \[2\] do not exist"):
        _init_shapes(module.clone(spatial_block=PerStage({2: ScaledBlock})))
    spec = PerStage({0: functools.partial(GraphPriorBlock, graph=H36M)})
    assert spec == PerStage(((0, spec.stages[0][1]),))
    hash(module.clone(spatial_block=spec, embedding=layers.TorchDense))


def test_custom_embedding():
    class TwoLayerEmbedding(nn.Module):
        features: int
        dtype: jnp.dtype | None = None

        @nn.compact
        def __call__(self, x):
            h = layers.gelu(layers.TorchDense(self.features, dtype=self.dtype, name="fc1")(x))
            return layers.TorchDense(self.features, dtype=self.dtype, name="fc2")(h)

    module = models.get_model("d3dp_tiny", num_frames=F).clone(embedding=TwoLayerEmbedding)
    params = _init(module)
    assert _shapes(params["joint_embed"]) == {
        "fc1": {"kernel": (5, 64), "bias": (64,)},
        "fc2": {"kernel": (64, 64), "bias": (64,)},
    }
    chex.assert_tree_all_finite(_apply(module, params))


def test_finepose_takes_a_stage0_block_too():
    tiny = dict(
        num_frames=F, embed_dim=32, depth=2, num_heads=4, text_width=16, clip_layers=1,
        clip_heads=2, clip_vocab_size=64, text_layers=1, text_ffn_dim=32,
    )  # fmt: skip
    x, t, c = _inputs()
    words = jax.random.randint(jax.random.key(5), (2, len(PROMPT_LAYOUTS["h36m"]), 4), 0, 64)
    c = {**c, "prompt_words": words, "prompt_pool_index": jnp.array([2, 3], jnp.int32)}
    default = FinePOSEDenoiser(**tiny)
    custom = default.clone(spatial_block=PerStage({0: ScaledBlock}))
    base, params = (
        jax.eval_shape(lambda m=m: m.init(jax.random.key(0), x, t, c)["params"])
        for m in (default, custom)
    )
    assert set(params) == set(base)
    assert {k: v for k, v in _shapes(params).items() if k != "spatial_0"} == {
        k: v for k, v in _shapes(base).items() if k != "spatial_0"
    }
    assert _shapes(params["spatial_0"]) == {"inner": _shapes(base["spatial_0"]), "gain": ()}
    y = jax.eval_shape(lambda p: custom.apply({"params": p}, x, t, c), params)
    assert (y.shape, y.dtype) == ((2, F, J, 3), jnp.float32)


# -- (c) custom attention ----------------------------------------------------------


class FusedAttention(nn.Module):
    """:class:`~pose_jax.models.layers.SelfAttention`'s parameters and maths through
    ``jax.nn.dot_product_attention`` (no attention dropout)."""

    num_heads: int
    qkv_bias: bool = True
    attn_dropout: float = 0.0
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x, *, deterministic):
        if self.attn_dropout and not deterministic:
            raise ValueError("FusedAttention: no attention dropout.")
        n, length, c = x.shape
        qkv = layers.TorchDense(3 * c, use_bias=self.qkv_bias, dtype=self.dtype, name="qkv")(x)
        qkv = qkv.reshape(n, length, 3, self.num_heads, c // self.num_heads)
        out = jax.nn.dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2])
        return layers.TorchDense(c, dtype=self.dtype, name="proj")(out.reshape(n, length, c))


class TemperedAttention(layers.SelfAttention):
    """SelfAttention on inputs scaled by a learnable temperature (a new parameter)."""

    @nn.compact
    def __call__(self, x, *, deterministic):
        tau = self.param("tau", nn.initializers.constant(3.0), ())
        return super().__call__(x * tau, deterministic=deterministic)


def test_custom_attention_in_transformer_block():
    x = jax.random.normal(jax.random.key(1), (3, 7, 16))
    block = layers.TransformerBlock(num_heads=4)

    def init(b):
        return _jit(lambda k: b.init(k, x, deterministic=True)["params"])(jax.random.key(0))

    def apply(b, p):
        return _jit(lambda p: b.apply({"params": p}, x, deterministic=True))(p)

    params = init(block)
    want = apply(block, params)
    fused = block.clone(attention=FusedAttention)
    assert _shapes(init(fused)) == _shapes(params)
    np.testing.assert_allclose(apply(fused, params), want, atol=1e-5)

    tempered = block.clone(attention=TemperedAttention)
    tparams = init(tempered)
    assert tparams["attn"]["tau"] == 3.0
    chex.assert_trees_all_equal({**tparams["attn"], "tau": None}, {**params["attn"], "tau": None})
    assert not np.allclose(apply(tempered, tparams), want)


def test_custom_attention_in_mixste(d3dp, d3dp_out):
    module, default = d3dp
    fused = functools.partial(transformer_block, attention=FusedAttention)
    custom = module.clone(spatial_block=fused, temporal_block=fused)
    assert _init_shapes(custom) == _shapes(default)
    np.testing.assert_allclose(_apply(custom, default), d3dp_out, atol=1e-5)
    # One stage only: the attention of spatial block 0 gets a new parameter.
    tempered = functools.partial(transformer_block, attention=TemperedAttention)
    one = module.clone(spatial_block=PerStage({0: tempered}))
    params = _init(one)
    _only_stage0_differs(params, default)
    chex.assert_trees_all_equal(params["temporal_0"], default["temporal_0"])
    assert params["spatial_0"]["attn"]["tau"] == 3.0
    assert isinstance(one, MixSTEDenoiser)
