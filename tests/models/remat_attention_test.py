"""The ``remat`` and ``attention_impl`` model switches: how, not what, is computed.

Rematerialisation keeps the parameter tree and gives the same loss and gradients
(1e-6); every attention implementation gives today's outputs (1e-5). Memory is
read from XLA's plan of the compiled gradient (deterministic, not timed).
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pose_jax import models
from pose_jax.errors import ConfigError
from pose_jax.models import layers
from pose_jax.models.finepose import PROMPT_LAYOUTS

F, J = 5, 17
FAST = {"xla_backend_optimization_level": 0}
POLICIES = ("block", "dots_saveable")
FINEPOSE_TINY = dict(text_width=16, clip_layers=1, clip_heads=2, clip_vocab_size=64)


def _clip_inputs(n=2, seed=0):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    x = jax.random.normal(k1, (n, F, J, 3))
    cond = {
        "pose_2d": jax.random.normal(k2, (n, F, J, 2)),
        "prompt_words": jax.random.randint(k3, (n, len(PROMPT_LAYOUTS["h36m"]), 4), 0, 64),
        "prompt_pool_index": jnp.arange(n, dtype=jnp.int32) + 2,
    }
    return x, jnp.arange(n, dtype=jnp.int32) * 7, cond


def _pose_inputs(n=3, seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    cond = {"pose_2d": jax.random.normal(k2, (n, J, 2))}
    return jax.random.normal(k1, (n, J, 5)), jnp.arange(n, dtype=jnp.int32), cond


# name -> (overrides, inputs); drop-path and dropout on, so the train pass is random.
CASES = {
    "d3dp_tiny": (dict(num_frames=F, drop_path_rate=0.2, dropout=0.1), _clip_inputs),
    "finepose_tiny": (dict(num_frames=F, drop_path_rate=0.2, **FINEPOSE_TINY), _clip_inputs),
    "ktpformer_tiny": (dict(num_frames=F, drop_path_rate=0.2), _clip_inputs),
    "gcndiff_tiny": (dict(), _pose_inputs),
    "mmdiff_tiny": (dict(), _pose_inputs),
}


def _fns(name, **switches):
    overrides, inputs = CASES[name]
    return models.make_model_fns(models.get_model(name, **overrides, **switches)), inputs()


def _loss_and_grad(name, params, **switches):
    fns, (x, t, cond) = _fns(name, **switches)

    def loss(p):
        y = fns.apply_fn(p, x, t, cond, train=True, rng=jax.random.key(3))
        return jnp.mean(jnp.square(y - 0.1))

    return jax.jit(jax.value_and_grad(loss), compiler_options=FAST)(params)


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    name = request.param
    fns, (x, t, cond) = _fns(name)
    params = jax.jit(fns.init_fn, compiler_options=FAST)(jax.random.key(0), x, t, cond)
    return name, params, _loss_and_grad(name, params)


# Each compiles three gradients: 5-20 s per case on a 2-core CPU.
@pytest.mark.slow
@pytest.mark.parametrize("policy", POLICIES)
def test_remat_keeps_params_loss_and_gradients(case, policy):
    name, params, (loss, grads) = case
    fns, (x, t, cond) = _fns(name, remat=policy)
    shapes = jax.eval_shape(fns.init_fn, jax.random.key(0), x, t, cond)
    assert jax.tree.structure(shapes) == jax.tree.structure(params)
    chex.assert_trees_all_equal_shapes(shapes, params)
    loss_r, grads_r = _loss_and_grad(name, params, remat=policy)
    np.testing.assert_allclose(loss_r, loss, rtol=1e-6, atol=1e-6)
    chex.assert_trees_all_close(grads_r, grads, rtol=1e-6, atol=1e-6)
    assert sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads)) > 0


def _grad_temp_bytes(remat: str) -> int:
    fns, (x, t, cond) = _fns("d3dp_tiny", remat=remat)
    params = jax.eval_shape(fns.init_fn, jax.random.key(0), x, t, cond)

    def loss(p):
        return jnp.sum(fns.apply_fn(p, x, t, cond, train=True, rng=jax.random.key(3)))

    compiled = jax.jit(jax.grad(loss), compiler_options=FAST).lower(params).compile()
    return compiled.memory_analysis().temp_size_in_bytes


@pytest.mark.slow
def test_block_remat_lowers_xlas_temporary_memory():
    assert _grad_temp_bytes("block") < 0.8 * _grad_temp_bytes("none")


# -- attention implementations ------------------------------------------------------


@pytest.mark.parametrize(
    "name,extra",
    [
        ("d3dp_tiny", {}),
        ("finepose_tiny", {}),
        ("finepose_tiny", dict(prompt_alignment="tile")),
        ("ktpformer_tiny", {}),
    ],
)
@pytest.mark.slow
def test_attention_implementations_agree(name, extra):
    overrides = dict(CASES[name][0], **extra)
    x, t, cond = _clip_inputs()
    outs = {}
    for impl in ("einsum", "auto", "xla"):
        fns = models.make_model_fns(models.get_model(name, **overrides, attention_impl=impl))
        if impl == "einsum":
            params = jax.jit(fns.init_fn, compiler_options=FAST)(jax.random.key(0), x, t, cond)
        outs[impl] = jax.jit(fns.apply_fn, compiler_options=FAST)(params, x, t, cond)
    chex.assert_tree_all_finite(outs["einsum"])
    for impl in ("auto", "xla"):
        np.testing.assert_allclose(outs[impl], outs["einsum"], atol=1e-5)


def test_dot_product_attention_matches_the_einsum_form():
    q, k, v = jax.random.normal(jax.random.key(2), (3, 2, 9, 4, 8))
    want = layers.dot_product_attention(q, k[:, :6], v[:, :6], implementation="einsum")
    got = layers.dot_product_attention(q, k[:, :6], v[:, :6], implementation="auto")
    assert got.shape == want.shape == (2, 9, 4, 8)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_attention_dropout_needs_the_einsum_form():
    x = jax.random.normal(jax.random.key(1), (2, 7, 16))
    rngs = {"dropout": jax.random.key(4)}

    def run(impl):
        attn = layers.SelfAttention(4, attn_dropout=0.5, implementation=impl)
        p = attn.init(jax.random.key(0), x, deterministic=True)
        return attn.apply(p, x, deterministic=False, rngs=rngs)

    np.testing.assert_array_equal(run("auto"), run("einsum"))  # 'auto' falls back
    with pytest.raises(ValueError, match="attention dropout needs attention_impl='einsum'"):
        run("xla")


# -- bad values ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "key,value,expected",
    [("remat", "all", "'none', 'block', 'dots_saveable'"), ("attention_impl", "flash", "'einsum'")],
)
def test_bad_switch_values_are_refused_by_name(key, value, expected):
    with pytest.raises(ConfigError, match=rf"{key}={value!r}; expected one of \[.*{expected}"):
        models.get_model("d3dp_tiny", **{key: value})
    module = models.get_model("d3dp_tiny", num_frames=F).clone(**{key: value})
    x, t, cond = _clip_inputs()
    with pytest.raises(ConfigError, match=f"MixSTEDenoiser: {key}="):
        jax.eval_shape(module.init, jax.random.key(0), x, t, cond)


def test_config_switches_are_checked_and_resumable():
    from configs import d3dp_h36m
    from pose_jax.training import config_checks
    from pose_jax.training import workdir as workdir_lib

    config = d3dp_h36m.get_config()
    config_checks.check_model_switches(config)  # unset: the model's own
    before = config.to_dict()
    del before["model"]["kwargs"]  # a run saved before the switches existed
    config.model.kwargs.remat = "block"
    config.model.kwargs.attention_impl = "einsum"
    config_checks.check_model_switches(config)
    accepted = workdir_lib.check_resume_config(before, config.to_dict(), where="run")
    assert set(accepted) == {"model.kwargs.remat", "model.kwargs.attention_impl"}
    config.model.kwargs.attention_impl = "flash"
    with pytest.raises(ConfigError, match=r"config.model.kwargs.attention_impl is 'flash'"):
        config_checks.check_model_switches(config)
