"""pose_jax.sharding: the FSDP placement rule and the train-state shardings."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from pose_jax import sharding
from pose_jax.training import train_state


@pytest.mark.parametrize(
    "shape, spec",
    [
        ((512, 2048), P(None, "data")),  # largest dim
        ((2048, 512), P("data", None)),
        ((1024, 1024), P("data", None)),  # ties: the first
        ((1001, 520), P(None, "data")),  # 1001 % 8 != 0: the next largest that divides
        ((999, 77), P()),  # nothing divisible
        ((17, 3), P()),  # small: replicated
        ((), P()),
        ((256, 256, 3), P("data", None, None)),
    ],
)
def test_fsdp_spec(shape, spec):
    assert sharding.fsdp_spec(shape, 8, min_size=1000) == spec


def test_fsdp_spec_one_device_and_min_size():
    assert sharding.fsdp_spec((4096, 4096), 1) == P()
    assert sharding.fsdp_spec((64, 64), 8) == P()  # 4096 < 2**16 by default
    assert sharding.fsdp_spec((64, 64), 8, min_size=4096) == P("data", None)


def _state():
    params = {"w": jnp.ones((64, 128)), "b": jnp.zeros((128,)), "emb": jnp.ones((3, 256))}
    return train_state.create_train_state(params, optax.adam(1e-3), jax.random.key(0), use_ema=True)


def test_state_shardings_split_params_moments_and_ema_alike():
    mesh = sharding.make_mesh(8)
    abstract = jax.eval_shape(_state)
    sh = sharding.state_shardings(abstract, mesh, "fsdp", min_size=512)
    assert sh.params["w"].spec == P(None, "data")
    assert sh.params["b"].spec == P()
    assert sh.params["emb"].spec == P(None, "data")
    assert sh.ema_params["w"].spec == P(None, "data")
    adam = sh.opt_state[0]
    assert adam.mu["w"].spec == P(None, "data") and adam.nu["w"].spec == P(None, "data")
    assert adam.count.spec == P() and sh.step.spec == P() and sh.rng.spec == P()

    state = jax.jit(_state, out_shardings=sh)()
    assert state.params["w"].addressable_shards[0].data.shape == (64, 16)
    np.testing.assert_array_equal(np.asarray(state.params["w"]), np.ones((64, 128)))

    rep = sharding.state_shardings(abstract, mesh, "replicated")
    full = sharding.bytes_per_device(abstract, rep)
    split = sharding.bytes_per_device(abstract, sh)
    # w (and its EMA, mu, nu) and emb shrink 8x; b, step, count and the key do not.
    small = 4 * (128 * 4) + 4 + 4 + 8
    assert full - small == 8 * (split - small)


def test_state_shardings_rejects_unknown_mode():
    mesh = sharding.make_mesh(2)
    with pytest.raises(ValueError, match=r"mesh\.param_sharding"):
        sharding.state_shardings({"w": jnp.ones(3)}, mesh, "zero2")


def test_put_passes_placed_leaves_through_and_places_the_rest():
    mesh = sharding.make_mesh()
    rep = sharding.replicated(mesh)
    placed = jax.device_put(jnp.arange(3.0), rep)
    tree = {"placed": placed, "host": np.ones((2,), np.float32), "none": None}
    out = sharding.put(tree, rep)
    assert out["placed"] is placed  # no copy, no transfer
    assert out["none"] is None
    assert isinstance(out["host"], jax.Array) and out["host"].sharding == rep
    np.testing.assert_array_equal(np.asarray(out["host"]), tree["host"])
    key = sharding.put(jax.random.key(0), rep)
    assert sharding.put(key, rep) is key
