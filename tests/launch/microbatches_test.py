"""train.microbatches: the batch's loss and gradient computed in chunks (gradient accumulation)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import tiny_config

from launch import experiment
from launch.benchmarks import training as train_bench
from pose_jax import sharding as sharding_lib
from pose_jax.errors import ConfigError
from pose_jax.training import config_checks, loop, train_state, train_step


def _quadratic_loss(params, batch, rng):
    """A per-sample mean that draws nothing: chunked and whole-batch steps must agree."""
    del rng
    residual = batch["x"] @ params["w"] + params["b"] - batch["y"]
    loss = jnp.mean(jnp.square(residual))
    return loss, {"mse": loss, "abs": jnp.mean(jnp.abs(residual))}


def _objective(loss_fn):
    """A system's ``loss_fn`` as ``accumulated_value_and_grad``'s objective (no running state)."""

    def objective(weights, running, batch, rng):
        loss, aux = loss_fn(weights, batch, rng)
        return loss, (aux, {})

    return objective


def _state(params, optimizer):
    return train_state.TrainState(
        step=jnp.int32(0),
        params=params,
        ema_params=params,
        opt_state=optimizer.init(params),
        rng=jax.random.key(0),
    )


def _problem(batch_size=16):
    k = jax.random.split(jax.random.key(1), 4)
    params = {"w": jax.random.normal(k[0], (5, 3)), "b": jax.random.normal(k[1], (3,))}
    batch = {
        "x": jax.random.normal(k[2], (batch_size, 5)),
        "y": jax.random.normal(k[3], (batch_size, 3)),
    }
    return params, batch


@pytest.mark.parametrize("gradient_mode", ["standard", "loss_times_grad"])
def test_chunked_step_equals_the_whole_batch_step(gradient_mode):
    params, batch = _problem()
    optimizer = optax.adamw(1e-2)
    results = {}
    for chunks in (1, 4):
        step = train_step.make_train_step(
            _quadratic_loss, optimizer, ema_decay=0.5, gradient_mode=gradient_mode,
            microbatches=chunks,
        )  # fmt: skip
        state = _state(params, optimizer)
        for _ in range(3):
            state, metrics = jax.jit(step)(state, batch)
        results[chunks] = (state, metrics)
    (one, m1), (four, m4) = results[1], results[4]
    trees = [jax.tree.leaves((s.params, s.ema_params, s.opt_state)) for s in (one, four)]
    for a, b in zip(*trees, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for key in ("loss", "grad_norm", "mse", "abs"):
        np.testing.assert_allclose(m1[key], m4[key], rtol=1e-5)
    assert int(four.step) == 3


def test_chunks_are_strided_and_each_draws_its_own_key():
    """Part i holds samples i, i + m, ... and draws with fold_in(rng, i)."""
    seen = []

    def loss_fn(params, batch, rng):
        seen.append(batch["i"])
        draw = jax.random.uniform(rng, ())
        return jnp.mean(batch["i"]) * params["a"] + draw, {"draw": draw}

    weights = {"a": jnp.float32(1.0)}
    rng = jax.random.key(3)
    loss, aux, grads = train_step.accumulated_value_and_grad(
        _objective(loss_fn),
        weights, None, {"i": jnp.arange(8.0)}, rng, 2,
    )  # fmt: skip
    assert seen[0].shape == (4,)
    draws = [float(jax.random.uniform(jax.random.fold_in(rng, i), ())) for i in range(2)]
    # part 0 = samples 0, 2, 4, 6 (mean 3), part 1 = 1, 3, 5, 7 (mean 4)
    np.testing.assert_allclose(loss, (3.0 + 4.0) / 2 + np.mean(draws), rtol=1e-6)
    np.testing.assert_allclose(aux["draw"], np.mean(draws), rtol=1e-6)
    np.testing.assert_allclose(grads["a"], 3.5, rtol=1e-6)


@pytest.mark.slow
def test_chunked_d3dp_step_is_the_mean_of_its_parts(tmp_path):
    """Through the config on the real system: loss and gradient of each strided part."""
    config = tiny_config(str(tmp_path / "tfds"), **{"train.microbatch_size": 2})
    assert loop.microbatches_from_config(config, num_devices=1) == 4  # 8 clips
    system = experiment.make_system(config)
    host = train_bench.train_batch(system, config, 4, seed=0)
    batch = {k: jnp.asarray(host[k]) for k in system.batch_keys}
    params = system.init_params(jax.random.key(0), batch)
    rng = jax.random.key(7)
    objective = _objective(system.loss_fn)
    loss, _, grads = jax.jit(
        lambda p, b: train_step.accumulated_value_and_grad(objective, p, None, b, rng, 2)
    )(params, batch)
    parts = [jax.tree.map(lambda a, i=i: a[i::2], batch) for i in range(2)]
    part_vg = jax.jit(
        jax.value_and_grad(lambda p, b, i: system.loss_fn(p, b, jax.random.fold_in(rng, i))[0])
    )
    vg = [part_vg(params, parts[i], i) for i in range(2)]
    np.testing.assert_allclose(loss, (vg[0][0] + vg[1][0]) / 2, rtol=1e-5)
    for g, g0, g1 in zip(jax.tree.leaves(grads), jax.tree.leaves(vg[0][1]),
                         jax.tree.leaves(vg[1][1]), strict=True):  # fmt: skip
        np.testing.assert_allclose(g, (g0 + g1) / 2, rtol=1e-4, atol=1e-6)


def test_the_loop_builds_its_update_with_the_configs_microbatches(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(train_step, "make_train_step", lambda *a, **kw: seen.update(kw))
    config = tiny_config(str(tmp_path / "tfds"), **{"train.microbatch_size": 2})
    config.mesh.num_devices = 1
    loop.make_train_step_from_config(config, experiment.make_system(config), optax.sgd(0.1))
    assert seen["microbatches"] == 4  # 8 clips on one device, at most 2 per chunk


@pytest.mark.parametrize(
    "batch, devices, size, chunks",
    [(16, 1, 4, 4), (16, 1, 0, 1), (16, 1, 16, 1), (16, 8, 4, 1), (16, 2, 4, 2),
     (12, 1, 5, 3), (14, 1, 4, 7), (16, 1, 5, 4)],
)  # fmt: skip
def test_microbatch_size_caps_the_samples_per_device_in_a_chunk(batch, devices, size, chunks):
    config = tiny_config("unused", **{"data.batch_size": batch, "train.microbatch_size": size})
    assert loop.microbatches_from_config(config, num_devices=devices) == chunks


def test_chunked_step_keeps_a_sharded_batch_on_its_devices():
    """8 devices, 16 samples: the chunks split each device's shard; same result as unsharded."""
    params, batch = _problem(16)
    optimizer = optax.sgd(0.1)
    step = jax.jit(train_step.make_train_step(_quadratic_loss, optimizer, microbatches=2))
    mesh = sharding_lib.make_mesh(None)
    sharded = jax.device_put(batch, sharding_lib.batch_sharding(mesh))
    state, metrics = step(_state(params, optimizer), sharded)
    ref, ref_metrics = step(_state(params, optimizer), batch)
    np.testing.assert_allclose(state.params["w"], ref.params["w"], rtol=1e-6)
    np.testing.assert_allclose(metrics["loss"], ref_metrics["loss"], rtol=1e-6)
    hlo = step.lower(_state(params, optimizer), sharded).compile().as_text()
    assert "all-to-all" not in hlo and "all-gather" not in hlo


def test_bad_microbatches_get_clear_errors(tmp_path):
    params, batch = _problem(6)
    with pytest.raises(ValueError, match=r"make_train_step: microbatches=0; expected an int >= 1"):
        train_step.make_train_step(_quadratic_loss, optax.sgd(0.1), microbatches=0)
    step = train_step.make_train_step(_quadratic_loss, optax.sgd(0.1), microbatches=4)
    with pytest.raises(ValueError, match=r"microbatches=4 must divide the batch.*'x': 6"):
        step(_state(params, optax.sgd(0.1)), batch)
    config = tiny_config(str(tmp_path / "tfds"), **{"train.microbatch_size": -1})
    with pytest.raises(ConfigError, match=r"train.microbatch_size is -1; expected an integer >= 0"):
        config_checks.check_train_config(config, num_devices=1, num_processes=1)
    config.train.microbatch_size = 2
    stateful = {"params": {"w": jnp.ones(2)}, "batch_stats": {"mean": jnp.zeros(2)}}
    says = r"microbatch_size=2 splits each update into 4 chunks.*BatchNorm"
    with pytest.raises(ConfigError, match=says):
        loop._check_microbatches_fit(config, stateful, 1)
    loop._check_microbatches_fit(config, {"w": jnp.ones(2)}, 1)
    loop._check_microbatches_fit(config, stateful, 8)  # one clip per device: no chunks
