"""train.compute_dtype='bfloat16': bf16 compute, float32 parameters, optimizer state and loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

from launch import experiment
from launch.benchmarks import training as train_bench
from pose_jax.training import loop


def _one_step(config, system, batch):
    optimizer, _ = loop.make_optimizer_from_config(config, steps_per_epoch=10)
    init = loop.make_state_initializer(config, system, batch, optimizer)
    step = loop.make_train_step_from_config(config, system, optimizer)
    state = jax.jit(init)()
    jaxpr = str(jax.make_jaxpr(step)(state, batch))
    new_state, metrics = jax.jit(step)(state, batch)
    return new_state, metrics, jaxpr


@pytest.mark.slow
def test_bfloat16_step_computes_in_bf16_and_keeps_float32_state(tmp_path):
    config = tiny_config(str(tmp_path / "tfds"))
    system = experiment.make_system(config)
    host = train_bench.train_batch(system, config, 8, seed=0)
    batch = {k: jnp.asarray(host[k]) for k in system.batch_keys}
    _, f32_metrics, f32_jaxpr = _one_step(config, system, batch)
    config.train.compute_dtype = "bfloat16"
    bf16_state, bf16_metrics, bf16_jaxpr = _one_step(config, system, batch)

    assert "bf16[" not in f32_jaxpr and "bf16[" in bf16_jaxpr
    for tree in (bf16_state.params, bf16_state.opt_state):
        floats = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
        assert floats and all(x.dtype == jnp.float32 for x in floats)
    assert bf16_metrics["loss"].dtype == jnp.float32
    assert bf16_metrics["grad_norm"].dtype == jnp.float32
    # Same parameters, same draws: the bf16 loss is the float32 one to bf16 accuracy...
    f32_loss, bf16_loss = float(f32_metrics["loss"]), float(bf16_metrics["loss"])
    np.testing.assert_allclose(bf16_loss, f32_loss, rtol=2e-2)
    # ...yet not bitwise equal (the switch did change the arithmetic).
    assert bf16_loss != f32_loss
    # The evaluation system is not touched by the switch.
    assert loop.compute_system(config, system) is not system
    config.train.compute_dtype = "float32"
    assert loop.compute_system(config, system) is system
