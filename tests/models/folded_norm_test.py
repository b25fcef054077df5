"""LayerNorm folded into the next projection: same parameters, same numbers."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pose_jax.models import layers


class _Unfolded(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.LayerNorm(epsilon=1e-6, name="norm")(x)
        return layers.TorchDense(12, name="dense")(h)


class _Folded(nn.Module):
    @nn.compact
    def __call__(self, x):
        h, affine = layers.FoldedLayerNorm(1e-6, name="norm")(x)
        return layers.TorchDense(12, name="dense")(h, affine)


def _random_affine(params, key, name="norm"):
    """``params`` with the LayerNorm ``name``'s scale and bias away from 1 and 0."""
    k1, k2 = jax.random.split(key)
    norm = params[name]
    return {
        **params,
        name: {
            "scale": 1.0 + 0.5 * jax.random.normal(k1, norm["scale"].shape),
            "bias": 0.3 * jax.random.normal(k2, norm["bias"].shape),
        },
    }


def test_folded_layernorm_keeps_the_tree_and_the_output():
    x = jax.random.normal(jax.random.key(0), (3, 5, 8)) * 2.0 + 1.0
    params = _Unfolded().init(jax.random.key(1), x)["params"]
    folded_params = _Folded().init(jax.random.key(1), x)["params"]
    assert jax.tree.structure(params) == jax.tree.structure(folded_params)
    params = _random_affine(params, jax.random.key(2))
    want = _Unfolded().apply({"params": params}, x)
    got = _Folded().apply({"params": params}, x)
    np.testing.assert_allclose(got, want, atol=2e-6, rtol=1e-5)
    g_want = jax.grad(lambda p: jnp.sum(_Unfolded().apply({"params": p}, x) ** 2))(params)
    g_got = jax.grad(lambda p: jnp.sum(_Folded().apply({"params": p}, x) ** 2))(params)
    for a, b in zip(jax.tree.leaves(g_got), jax.tree.leaves(g_want), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-5)


def test_transformer_block_folds_norm1_only_when_told():
    x = jax.random.normal(jax.random.key(0), (2, 7, 16))
    plain = layers.TransformerBlock(num_heads=2)
    folded = plain.clone(fold_attn_norm=True)
    params = plain.init(jax.random.key(1), x, deterministic=True)["params"]
    assert jax.tree.structure(params) == jax.tree.structure(
        folded.init(jax.random.key(1), x, deterministic=True)["params"]
    )
    params = _random_affine(
        _random_affine(params, jax.random.key(2), "norm1"), jax.random.key(3), "norm2"
    )
    np.testing.assert_allclose(
        folded.apply({"params": params}, x, deterministic=True),
        plain.apply({"params": params}, x, deterministic=True),
        atol=1e-5,
    )


def test_fold_affine_names_a_wrong_width():
    with pytest.raises(ValueError, match=r"fold_affine: .* must be \[4\]"):
        layers.fold_affine(jnp.ones((4, 3)), None, (jnp.ones(5), jnp.zeros(5)))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_normalize_matches_layernorm_and_its_autodiff_gradient(dtype):
    """``layers.normalize``'s written-out backward pass against autodiff of nn.LayerNorm."""
    k1, k2 = jax.random.split(jax.random.key(4))
    x = (jax.random.normal(k1, (4, 6, 32)) * 3.0 + 2.0).astype(dtype)
    w = jax.random.normal(k2, (32,))
    plain = nn.LayerNorm(epsilon=1e-5, use_scale=False, use_bias=False, dtype=dtype)

    def loss(norm):
        return lambda x: jnp.sum(jnp.sin(norm(x).astype(jnp.float32)) * w)

    ours, ref = loss(lambda x: layers.normalize(x, 1e-5)), loss(lambda x: plain.apply({}, x))
    tol = 1e-5 if dtype == jnp.float32 else 3e-2
    assert layers.normalize(x, 1e-5).dtype == dtype
    np.testing.assert_allclose(ours(x), ref(x), rtol=tol)
    g, g_ref = jax.grad(ours)(x), jax.grad(ref)(x)
    assert g.dtype == dtype
    scale = float(jnp.max(jnp.abs(g_ref.astype(jnp.float32))))
    np.testing.assert_allclose(
        np.asarray(g, np.float32), np.asarray(g_ref, np.float32), atol=tol * scale
    )
