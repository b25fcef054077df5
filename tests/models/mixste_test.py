"""Tests of the MixSTE denoiser and the model registry."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pose_jax import models
from pose_jax.models import layers


def _inputs(n=2, f=9, j=17, seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(k1, (n, f, j, 3))
    c = {"pose_2d": jax.random.normal(k2, (n, f, j, 2))}
    t = jnp.arange(n, dtype=jnp.int32) * 7
    return x, t, c


@pytest.mark.parametrize("name", ["d3dp_tiny", "d3dp_small"])
def test_shapes_and_dtypes(name):
    fns = models.make_model_fns(models.get_model(name, num_frames=9))
    x, t, c = _inputs()
    params = fns.init_fn(jax.random.key(0), x, t, c)
    y = jax.jit(fns.apply_fn)(params, x, t, c)
    chex.assert_shape(y, (2, 9, 17, 3))
    chex.assert_type(y, jnp.float32)
    chex.assert_tree_all_finite(y)


def test_paper_size_parameter_count():
    # The PyTorch D3DP MixSTE2: 34,835,459 parameters for embed 512, depth 8.
    module = models.get_model("d3dp")
    x, t, c = _inputs(n=1, f=243)
    shapes = jax.eval_shape(
        lambda: models.make_model_fns(module).init_fn(jax.random.key(0), x, t, c)
    )
    assert sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes)) == 34_835_459


def test_positional_embeddings_start_at_zero():
    module = models.get_model("d3dp_tiny", num_frames=9, drop_path_rate=0.1)
    x, t, c = _inputs()
    params = models.make_model_fns(module).init_fn(jax.random.key(0), x, t, c)
    assert not np.any(params["spatial_pos_embed"]) and not np.any(params["temporal_pos_embed"])


def test_train_mode_is_stochastic_and_eval_is_deterministic():
    fns = models.make_model_fns(models.get_model("d3dp_tiny", num_frames=9, drop_path_rate=0.5))
    x, t, c = _inputs()
    params = fns.init_fn(jax.random.key(0), x, t, c)
    a = fns.apply_fn(params, x, t, c, train=True, rng=jax.random.key(1))
    b = fns.apply_fn(params, x, t, c, train=True, rng=jax.random.key(2))
    assert not np.allclose(a, b)
    chex.assert_trees_all_close(fns.apply_fn(params, x, t, c), fns.apply_fn(params, x, t, c))
    with pytest.raises(ValueError, match="rng"):
        fns.apply_fn(params, x, t, c, train=True)


def test_output_depends_on_timestep_and_condition():
    fns = models.make_model_fns(models.get_model("d3dp_tiny", num_frames=9))
    x, t, c = _inputs()
    params = fns.init_fn(jax.random.key(0), x, t, c)
    y = fns.apply_fn(params, x, t, c)
    assert not np.allclose(y, fns.apply_fn(params, x, t + 100, c))
    c2 = {"pose_2d": c["pose_2d"] + 1.0}
    assert not np.allclose(y, fns.apply_fn(params, x, t, c2))


def test_fewer_frames_than_table_and_too_many_frames():
    fns = models.make_model_fns(models.get_model("d3dp_tiny", num_frames=9))
    x, t, c = _inputs(f=9)
    params = fns.init_fn(jax.random.key(0), x, t, c)
    x5, t5, c5 = _inputs(f=5)
    chex.assert_shape(fns.apply_fn(params, x5, t5, c5), (2, 5, 17, 3))
    x11, t11, c11 = _inputs(f=11)
    with pytest.raises(ValueError, match="11 frames"):
        fns.apply_fn(params, x11, t11, c11)


def test_bad_inputs_name_the_argument():
    fns = models.make_model_fns(models.get_model("d3dp_tiny", num_frames=9))
    x, t, c = _inputs()
    params = fns.init_fn(jax.random.key(0), x, t, c)
    with pytest.raises(ValueError, match="x_t"):
        fns.apply_fn(params, x[..., :16, :], t, c)
    with pytest.raises(ValueError, match="pose_2d"):
        fns.apply_fn(params, x, t, {"pose_2d": c["pose_2d"][:1]})
    with pytest.raises(ValueError, match="pose_2d"):
        fns.apply_fn(params, x, t, {})
    with pytest.raises(ValueError, match="'t'"):
        fns.apply_fn(params, x, t[:1], c)


def test_registry_errors():
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        models.get_model("nope")
    with pytest.raises(ValueError, match="no option"):
        models.get_model("d3dp_tiny", embed_size=3)


def test_torch_init_bounds_and_sinusoid():
    params = layers.TorchDense(8).init(jax.random.key(0), jnp.zeros((1, 25)))["params"]
    assert np.abs(params["kernel"]).max() <= 1 / 5 + 1e-7
    assert np.abs(params["bias"]).max() <= 1 / 5 + 1e-7
    emb = np.asarray(layers.sinusoidal_embedding(jnp.array([3.0]), 8))
    freqs = np.exp(-np.log(10000.0) * np.arange(4) / 3)
    np.testing.assert_allclose(
        emb[0], np.concatenate([np.sin(3 * freqs), np.cos(3 * freqs)]), rtol=1e-6
    )


def test_lifter_variant_is_mixste2():
    # The PyTorch vanilla MixSTE (2-channel input, no time MLP) has 33,783,811 params.
    module = models.get_model("mixste_lifter")
    x, t, c = _inputs(n=1, f=243)
    shapes = jax.eval_shape(
        lambda: models.make_model_fns(module).init_fn(jax.random.key(0), x, t, c)
    )
    assert sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes)) == 33_783_811
    fns = models.make_model_fns(models.get_model("mixste_lifter_tiny", num_frames=9))
    x, t, c = _inputs()
    params = fns.init_fn(jax.random.key(0), x, t, c)
    assert "time_embed" not in params
    # x_t and t are ignored: a lifter of the 2D alone.
    y = fns.apply_fn(params, x, t, c)
    np.testing.assert_array_equal(y, fns.apply_fn(params, x * 0 + 3.0, t + 50, c))
