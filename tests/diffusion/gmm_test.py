"""EM fitting and sampling of per-joint Gaussian mixtures."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pose_jax.diffusion import gmm

# Two joints, each a 2-component 2D mixture (means well separated).
TRUE_W = np.array([[0.3, 0.7], [0.6, 0.4]])
TRUE_MU = np.array([[[-4.0, 0.0], [3.0, 1.0]], [[0.0, -5.0], [2.0, 4.0]]])
TRUE_VAR = np.array([[[0.5, 1.0], [1.5, 0.3]], [[1.0, 1.0], [0.4, 2.0]]])


def _draw(rng, n):
    out = np.empty((n, 2, 2))
    for j in range(2):
        comp = rng.choice(2, size=n, p=TRUE_W[j])
        out[:, j] = TRUE_MU[j, comp] + np.sqrt(TRUE_VAR[j, comp]) * rng.standard_normal((n, 2))
    return out.astype(np.float32)


@pytest.fixture(scope="module")
def data():
    return _draw(np.random.default_rng(0), 4000)


# Every fit below uses data [4000, 2, 2], K=2 and 60 iterations, so XLA compiles
# the EM loop once per init (the fit is jitted inside fit_gmm).
FIT = dict(num_components=2, num_iters=60)


@pytest.mark.parametrize("init", ["kmeans++", "random"])
def test_em_recovers_known_mixture(data, init):
    params, ll = gmm.fit_gmm(jax.random.key(0), data, init=init, **FIT)
    assert (
        params.weights.shape == (2, 2)
        and params.means.shape == (2, 2, 2)
        and params.variances.shape == (2, 2, 2)
    )
    assert ll.shape == (2, 60)
    for j in range(2):
        order = np.argsort(np.asarray(params.means[j, :, 0]))  # true components sorted by mean x
        true_order = np.argsort(TRUE_MU[j, :, 0])
        np.testing.assert_allclose(params.weights[j, order], TRUE_W[j, true_order], atol=0.03)
        np.testing.assert_allclose(params.means[j, order], TRUE_MU[j, true_order], atol=0.1)
        np.testing.assert_allclose(params.variances[j, order], TRUE_VAR[j, true_order], rtol=0.12)
    # EM never decreases the log-likelihood (float32 slack).
    assert np.all(np.diff(np.asarray(ll), axis=1) >= -1e-4)
    assert np.all(ll[:, -1] > ll[:, 0])
    np.testing.assert_allclose(params.weights.sum(-1), 1.0, atol=1e-5)


def test_fit_is_deterministic_and_traceable_under_jit(data):
    a, lla = gmm.fit_gmm(jax.random.key(5), data, **FIT)
    b, llb = gmm.fit_gmm(jax.random.key(5), data, **FIT)
    c, _ = gmm.fit_gmm(jax.random.key(6), data, init="random", **FIT)
    np.testing.assert_array_equal(a.means, b.means)
    np.testing.assert_array_equal(lla, llb)
    assert not np.array_equal(a.means, c.means)
    # Traceable inside a user's jit (abstract evaluation, no second compile).
    shapes = jax.eval_shape(jax.jit(lambda k, x: gmm.fit_gmm(k, x, **FIT)), jax.random.key(0), data)
    assert shapes[0].means.shape == (2, 2, 2) and shapes[1].shape == (2, 60)


def test_log_likelihood_matches_scipy(data):
    from scipy.stats import multivariate_normal

    params = gmm.GMMParams(
        weights=jnp.asarray(TRUE_W, jnp.float32),
        means=jnp.asarray(TRUE_MU, jnp.float32),
        variances=jnp.asarray(TRUE_VAR, jnp.float32),
    )
    got = np.asarray(gmm.gmm_log_likelihood(params, data[:50]))
    for j in range(2):
        dens = sum(
            TRUE_W[j, k]
            * multivariate_normal(TRUE_MU[j, k], np.diag(TRUE_VAR[j, k])).pdf(data[:50, j])
            for k in range(2)
        )
        np.testing.assert_allclose(got[:, j], np.log(dens), rtol=1e-4, atol=1e-4)


def test_variance_floor_and_duplicate_points():
    # Every point identical (zero variance) -> variances sit on the floor, all finite.
    x = np.zeros((4000, 2, 2), np.float32)
    params, ll = gmm.fit_gmm(jax.random.key(0), x, var_floor=1e-3, **FIT)
    np.testing.assert_allclose(params.variances, 1e-3, rtol=1e-5)
    assert np.all(np.isfinite(ll)) and np.all(np.isfinite(params.means))


def test_sample_weights_mask_points(data):
    both = data.copy()
    both[-100:] = 50.0
    w = np.concatenate([np.ones(3900), np.zeros(100)]).astype(np.float32)
    masked, _ = gmm.fit_gmm(jax.random.key(1), both, sample_weights=w, **FIT)
    assert np.all(np.abs(np.asarray(masked.means)) < 10)
    unmasked, _ = gmm.fit_gmm(jax.random.key(1), both, **FIT)
    assert np.any(np.abs(np.asarray(unmasked.means)) > 10)


def test_sample_gmm_noise_moments():
    params = gmm.GMMParams(
        weights=jnp.asarray(TRUE_W, jnp.float32),
        means=jnp.asarray(TRUE_MU, jnp.float32),
        variances=jnp.asarray(TRUE_VAR, jnp.float32),
    )
    x = np.asarray(
        jax.jit(functools.partial(gmm.sample_gmm_noise, shape=(40000,)))(jax.random.key(2), params)
    )
    assert x.shape == (40000, 2, 2)
    mean = np.einsum("jk,jkd->jd", TRUE_W, TRUE_MU)
    second = np.einsum("jk,jkd->jd", TRUE_W, TRUE_VAR + TRUE_MU**2)
    np.testing.assert_allclose(x.mean(0), mean, atol=0.06)
    np.testing.assert_allclose(x.var(0), second - mean**2, rtol=0.05)


def test_select_component_and_noise_scale():
    params = gmm.GMMParams(
        weights=jnp.asarray(TRUE_W, jnp.float32),
        means=jnp.asarray(TRUE_MU, jnp.float32),
        variances=jnp.asarray(TRUE_VAR, jnp.float32),
    )
    idx, mean, var = gmm.select_gmm_component(jax.random.key(0), params, (20000,))
    assert idx.shape == (20000, 2) and mean.shape == (20000, 2, 2)
    np.testing.assert_allclose(np.mean(np.asarray(idx) == 0, axis=0), TRUE_W[:, 0], atol=0.02)
    np.testing.assert_allclose(mean, TRUE_MU[np.arange(2)[None], np.asarray(idx)], atol=0)
    std, m2 = gmm.gmm_noise_scale(jax.random.key(0), params, (20000,))
    np.testing.assert_allclose(std, np.sqrt(var), rtol=1e-6)
    np.testing.assert_allclose(m2, mean)
    v2, _ = gmm.gmm_noise_scale(jax.random.key(0), params, (20000,), kind="variance")
    np.testing.assert_allclose(v2, var)
    # Per-frame mixtures [B, J, K] (DiffPose's data files) broadcast against shape=(B,).
    per_frame = jax.tree.map(lambda a: jnp.broadcast_to(a, (3, *a.shape)), params)
    idx, mean, _ = gmm.select_gmm_component(jax.random.key(1), per_frame, (3,))
    assert idx.shape == (3, 2) and mean.shape == (3, 2, 2)
    with pytest.raises(ValueError, match="select_gmm_component: mixture weights of shape"):
        gmm.select_gmm_component(jax.random.key(1), per_frame, (4,))
    with pytest.raises(ValueError, match="gmm_noise_scale: unknown kind 'sigma'"):
        gmm.gmm_noise_scale(jax.random.key(1), params, (4,), kind="sigma")


def test_fit_errors(data):
    with pytest.raises(ValueError, match=r"fit_gmm: argument 'data' has shape \(4000, 4\)"):
        gmm.fit_gmm(jax.random.key(0), data.reshape(4000, 4), 2)
    with pytest.raises(ValueError, match="expected at most N=3"):
        gmm.fit_gmm(jax.random.key(0), data[:3], 4)
    with pytest.raises(ValueError, match="fit_gmm: unknown init 'kmeans'"):
        gmm.fit_gmm(jax.random.key(0), data, 2, init="kmeans")
    with pytest.raises(ValueError, match="var_floor"):
        gmm.fit_gmm(jax.random.key(0), data, 2, var_floor=0.0)
    bad = data[:10].copy()
    bad[3, 1, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        gmm.fit_gmm(jax.random.key(0), bad, 2)
