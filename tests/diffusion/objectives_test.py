"""Forward process, parameterisations, timestep samplers and losses."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pose_jax.diffusion import objectives, schedules


@pytest.fixture(scope="module")
def cosine():
    return schedules.make_schedule("cosine")


@pytest.fixture(scope="module")
def linear():
    return schedules.make_schedule("linear")


def test_q_sample_formula(cosine):
    k1, k2 = jax.random.split(jax.random.key(0))
    x0 = jax.random.normal(k1, (4, 7, 17, 3))
    eps = jax.random.normal(k2, x0.shape)
    t = jnp.array([0, 10, 500, 999])
    got = objectives.q_sample(cosine, x0, t, eps)
    a = np.asarray(cosine.alphas_cumprod, np.float64)[np.asarray(t)][:, None, None, None]
    want = np.sqrt(a) * np.asarray(x0) + np.sqrt(1 - a) * np.asarray(eps)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_q_sample_noise_scale_is_per_channel(linear):
    x0 = jnp.zeros((3, 17, 5))
    eps = jnp.ones((3, 17, 5))
    scale = jnp.array([0.1, 0.1, 1.0, 1.0, 1.0])
    t = jnp.array([50, 50, 50])
    got = objectives.q_sample(linear, x0, t, eps, noise_scale=scale)
    s1a = float(linear.sqrt_one_minus_alphas_cumprod[50])
    np.testing.assert_allclose(got[..., :2], 0.1 * s1a, rtol=1e-6)
    np.testing.assert_allclose(got[..., 2:], s1a, rtol=1e-6)
    # Per-sample, per-joint scales (DiffPose's GMM kernels) broadcast too.
    per = jnp.broadcast_to(scale, (3, 17, 5)) * jnp.arange(1, 4.0)[:, None, None]
    got = objectives.q_sample(linear, x0, t, eps, noise_scale=per)
    np.testing.assert_allclose(got, per * s1a, rtol=1e-6)
    with pytest.raises(
        ValueError, match=r"apply_noise_scale: argument 'noise_scale' has shape \(3,\)"
    ):
        objectives.q_sample(linear, x0, t, eps, noise_scale=jnp.ones(3))


def test_q_sample_shape_errors(linear):
    x0 = jnp.zeros((3, 17, 5))
    with pytest.raises(ValueError, match=r"q_sample: argument 't' has shape \(2,\)"):
        objectives.q_sample(linear, x0, jnp.array([1, 2]), x0)
    with pytest.raises(ValueError, match="q_sample: arguments must have the same shape"):
        objectives.q_sample(linear, x0, jnp.array([1, 2, 3]), x0[:, :3])


def test_x0_eps_conversions_round_trip(cosine):
    k1, k2 = jax.random.split(jax.random.key(1))
    x0 = jax.random.normal(k1, (5, 17, 3))
    eps = jax.random.normal(k2, x0.shape)
    t = jnp.array([0, 100, 400, 700, 900])
    x_t = objectives.q_sample(cosine, x0, t, eps)
    np.testing.assert_allclose(objectives.predict_x0_from_eps(cosine, x_t, t, eps), x0, atol=2e-4)
    np.testing.assert_allclose(objectives.predict_eps_from_x0(cosine, x_t, t, x0), eps, atol=2e-3)
    # At t=999 (abar ~ 2e-9) eps from x0 stays accurate in float32.
    t = jnp.full((5,), 999)
    x_t = objectives.q_sample(cosine, x0, t, eps)
    np.testing.assert_allclose(objectives.predict_eps_from_x0(cosine, x_t, t, x0), eps, atol=1e-5)


@pytest.mark.parametrize("n", [1, 2, 7, 1024])
def test_antithetic_timesteps(n):
    t = np.asarray(objectives.antithetic_timesteps(jax.random.key(3), n, 51))
    assert t.shape == (n,) and t.dtype == np.int32
    assert t.min() >= 0 and t.max() <= 50
    half = n // 2 + 1
    for i in range(n - half):
        assert t[half + i] == 50 - t[i]


def test_uniform_timesteps_cover_range():
    t = np.asarray(objectives.uniform_timesteps(jax.random.key(4), 20000, 10))
    assert t.dtype == np.int32 and set(np.unique(t)) == set(range(10))
    with pytest.raises(ValueError, match="uniform_timesteps: argument 'num_steps'"):
        objectives.uniform_timesteps(jax.random.key(0), 3, 0)


def test_mpjpe_x0_loss():
    target = jnp.zeros((2, 4, 17, 3))
    pred = target.at[..., 0].set(3.0).at[..., 1].set(4.0)
    assert float(objectives.mpjpe_x0_loss(pred, target)) == pytest.approx(5.0)
    pred = pred.at[1].set(0.0)
    assert float(objectives.mpjpe_x0_loss(pred, target)) == pytest.approx(2.5)
    assert float(
        objectives.mpjpe_x0_loss(pred, target, weights=jnp.array([1.0, 0.0]))
    ) == pytest.approx(5.0)


def test_eps_loss_sums_state_dims_and_averages_batch():
    eps = jnp.zeros((4, 17, 5))
    pred = eps.at[0].set(1.0)
    # Sample 0 contributes 85, the others 0 -> 85 / 4.
    assert float(objectives.eps_loss(pred, eps)) == pytest.approx(85.0 / 4)
    assert float(
        objectives.eps_loss(pred, eps, weights=jnp.array([1.0, 1.0, 0.0, 0.0]))
    ) == pytest.approx(42.5)
    with pytest.raises(ValueError, match="eps_loss: arguments must have the same shape"):
        objectives.eps_loss(pred, eps[:, :3])


def test_losses_jit_and_grad():
    target = jax.random.normal(jax.random.key(0), (2, 17, 3))
    g = jax.jit(jax.grad(lambda p: objectives.mpjpe_x0_loss(p, target)))(target + 0.1)
    chex.assert_tree_all_finite(g)
