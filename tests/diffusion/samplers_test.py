"""DDIM samplers: exactness against hand-computed steps, distribution tests with the
analytic optimal denoiser, determinism, flip TTA, sharding/pmap agreement, errors."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec

from pose_jax import sharding, skeleton
from pose_jax.diffusion import samplers, schedules

COSINE = schedules.make_schedule("cosine", 1000)
LINEAR = schedules.make_schedule("linear", 51)
ONE_DEVICE = sharding.make_mesh(1)
# LLVM at -O0: XLA:CPU compiles these small scans ~5x faster; numerics are unchanged
# up to float32 rounding, which every comparison below tolerates.
FAST = {"xla_backend_optimization_level": 0}


def _jit(sampler):
    """The sampler's pure function, jitted on one device with fast compilation."""
    return jax.jit(sampler.sample, compiler_options=FAST)


def _normal(seed, shape, scale=1.0):
    return scale * jax.random.normal(jax.random.key(seed), shape)


def _pad3(c):
    """2D condition [..., J, 2] -> [..., J, 3] with z = 0 (mirror-compatible)."""
    return jnp.concatenate([c, jnp.zeros_like(c[..., :1])], axis=-1)


# ---------------------------------------------------------------------------
# The analytic optimal denoiser for Gaussian data
# ---------------------------------------------------------------------------

MU = np.array([0.4, -0.3, 0.1])
_A = np.array([[1.0, 0.3, 0.0], [0.2, 0.6, 0.1], [0.0, -0.4, 0.5]])
SIGMA = _A @ _A.T  # eigenvalues spread over ~[0.1, 1.3]


def _gaussian_params(schedule):
    lam, u = np.linalg.eigh(SIGMA)
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    return {"abar": f32(schedule.alphas_cumprod_f64()), "u": f32(u), "lam": f32(lam), "mu": f32(MU)}


def _optimal_denoiser(prediction):
    """E[x0 | x_t] for x0 ~ N(mu, Sigma).

    ``mu + U diag(sqrt(a) lam / (a lam + 1 - a)) U^T (x_t - sqrt(a) mu)`` with
    ``Sigma = U diag(lam) U^T`` and ``a = abar_t``.
    """

    def fn(params, x_t, t, cond):
        del cond
        a = params["abar"][t][:, None]
        sa = jnp.sqrt(a)
        y = (x_t - sa * params["mu"]) @ params["u"]
        x0 = params["mu"] + (sa * params["lam"] / (a * params["lam"] + 1.0 - a) * y) @ params["u"].T
        if prediction == "x0":
            return x0
        return (x_t - sa * x0) / jnp.sqrt(1.0 - a)

    return fn


@pytest.mark.parametrize(
    "prediction,eta,K",
    [("x0", 1.0, 1000), ("eps", 1.0, 1000), ("x0", 0.0, 100)],
    ids=["x0-ddpm-K1000", "eps-ddpm-K1000", "x0-ddim-K100"],
)
def test_sampling_with_optimal_denoiser_reproduces_gaussian(prediction, eta, K):
    B, H = 4, 1000
    smp = samplers.make_sampler(
        _optimal_denoiser(prediction),
        COSINE,
        schedules.make_time_grid("d3dp", 1000, K),
        event_shape=(3,),
        num_hypotheses=H,
        eta=eta,
        prediction=prediction,
        mesh=ONE_DEVICE,
    )
    # x_T ~ N(0, I) is drawn here and passed in (the generation path draws the same
    # thing; see test_d3dp_chain_matches_hand_computation) to spare a compile.
    x_T = _normal(11, (B, H, 3))
    out = _jit(smp)(_gaussian_params(COSINE), {"id": jnp.zeros((B, 1))}, jax.random.key(11), x_T)
    x = np.asarray(out.x, np.float64).reshape(-1, 3)
    n = x.shape[0]
    se_mean = np.sqrt(np.diag(SIGMA) / n)
    np.testing.assert_array_less(np.abs(x.mean(0) - MU), 4.5 * se_mean)
    cov = np.cov(x, rowvar=False)
    se_cov = np.sqrt((np.outer(np.diag(SIGMA), np.diag(SIGMA)) + SIGMA**2) / n)
    np.testing.assert_array_less(np.abs(cov - SIGMA), 4.5 * se_cov)
    # The last x0 estimate is the output (grid ends at t_next = -1).
    np.testing.assert_allclose(out.x0_steps[:, -1], out.x, atol=1e-6)
    # The tolerance is tight enough to reject a 15% error in the variance.
    assert np.any(np.abs(cov - 0.85 * SIGMA) > 4.5 * se_cov)


# ---------------------------------------------------------------------------
# Exact steps
# ---------------------------------------------------------------------------


def test_ddim_step_formula():
    coeffs = samplers.ddim_coefficients(LINEAR, np.array([[12, 0], [0, -1]]), eta=1.0)
    a = np.asarray(LINEAR.alphas_cumprod, np.float64)
    sigma = np.sqrt((1 - a[12] / a[0]) * (1 - a[0]) / (1 - a[12]))
    np.testing.assert_allclose(coeffs.sigma, [sigma, 0.0], rtol=1e-6)
    np.testing.assert_allclose(coeffs.c, [np.sqrt(1 - a[0] - sigma**2), 0.0], rtol=1e-6)
    np.testing.assert_allclose(coeffs.sqrt_abar_next, [np.sqrt(a[0]), 1.0], rtol=1e-7)
    row = jax.tree.map(lambda v: v[0], coeffs)
    x_t = jnp.array([[2.0, -0.5]])
    z = jnp.array([[0.3, 0.7]])
    x_next, x0, eps = samplers.ddim_step(
        lambda x, t: 0.5 * x, x_t, row, z, prediction="x0", clip=0.8
    )
    x0_want = np.clip(0.5 * np.clip([[2.0, -0.5]], -0.8, 0.8), -0.8, 0.8)
    eps_want = ([[2.0, -0.5]] - np.sqrt(a[12]) * x0_want) / np.sqrt(1 - a[12])  # unclamped x_t
    np.testing.assert_allclose(x0, x0_want, rtol=1e-6)
    np.testing.assert_allclose(eps, eps_want, rtol=1e-5)
    np.testing.assert_allclose(
        x_next, np.sqrt(a[0]) * x0_want + coeffs.c[0] * eps_want + sigma * z, rtol=1e-5
    )
    # Final step (abar_{-1} = 1) returns x0_hat exactly.
    last = jax.tree.map(lambda v: v[1], coeffs)
    x_next, x0, _ = samplers.ddim_step(lambda x, t: 0.5 * x, x_t, last, None, prediction="x0")
    np.testing.assert_array_equal(x_next, x0)


def test_d3dp_chain_matches_hand_computation():
    """x0-prediction, clip 1.1, eta 1, K=2 on (999, 499, -1), with the sampler's noise contract."""
    B, H, E = 2, 3, (17, 3)
    denoise = lambda p, x, t, c: p * x + 0.5 + 0.1 * _pad3(c["2d"])  # noqa: E731
    smp = samplers.make_sampler(
        denoise,
        COSINE,
        schedules.make_time_grid("d3dp", 1000, 2),
        event_shape=E,
        num_hypotheses=H,
        eta=1.0,
        clip=1.1,
        mesh=ONE_DEVICE,
    )
    cond = {"2d": _normal(0, (B, 17, 2))}
    key = jax.random.key(42)
    out = _jit(smp)(jnp.float32(1.5), cond, key)
    chex.assert_shape(out.x0_steps, (B, 2, H, *E))
    chex.assert_shape(out.x, (B, H, *E))

    def noise(k):  # the documented contract: fold_in(fold_in(key, k), clip_id), shape [H, *E]
        return np.stack(
            [
                np.asarray(
                    jax.random.normal(jax.random.fold_in(jax.random.fold_in(key, k), b), (H, *E))
                )
                for b in range(B)
            ]
        ).astype(np.float64)

    a = np.asarray(COSINE.alphas_cumprod, np.float64)
    c2 = np.repeat(np.asarray(cond["2d"], np.float64), H, 0).reshape((B, H, 17, 2))
    c3 = np.concatenate([c2, np.zeros_like(c2[..., :1])], -1)
    x = noise(0)
    x0s = []
    for k, (t, tn) in enumerate([(999, 499), (499, -1)]):
        x0 = np.clip(1.5 * np.clip(x, -1.1, 1.1) + 0.5 + 0.1 * c3, -1.1, 1.1)
        eps = (x - np.sqrt(a[t]) * x0) / np.sqrt(1 - a[t])
        x0s.append(x0)
        an = a[tn] if tn >= 0 else 1.0
        sigma = np.sqrt((1 - a[t] / an) * (1 - an) / (1 - a[t]))
        x = (
            np.sqrt(an) * x0
            + np.sqrt(max(1 - an - sigma**2, 0)) * eps
            + (sigma * noise(k + 1) if tn >= 0 else 0)
        )
    np.testing.assert_allclose(out.x0_steps, np.stack(x0s, 1), atol=2e-5)
    np.testing.assert_allclose(out.x, x, atol=2e-5)


def test_diffpose_refinement_matches_hand_computation():
    """eps-prediction on the (24, 2) grid: t=12 then 0, from x_init, no noise added, eta=0."""
    B, E = 3, (17, 5)
    denoise = lambda p, x, t, c: p["w"] * x + p["b"] * t[:, None, None]  # noqa: E731
    params = {"w": jnp.float32(0.3), "b": jnp.float32(0.01)}
    grid = schedules.make_time_grid("diffpose", 24, 2)
    smp = samplers.make_sampler(
        denoise,
        LINEAR,
        grid,
        event_shape=E,
        num_hypotheses=2,
        eta=0.0,
        prediction="eps",
        mesh=ONE_DEVICE,
    )
    x_init = _normal(1, (B, *E))
    out = _jit(smp)(params, {"2d": jnp.zeros((B, 17, 2))}, jax.random.key(0), x_init=x_init)
    a = np.asarray(LINEAR.alphas_cumprod, np.float64)
    x = np.asarray(x_init, np.float64)
    for t, tn in [(12, 0), (0, -1)]:
        eps = 0.3 * x + 0.01 * t
        x0 = (x - np.sqrt(1 - a[t]) * eps) / np.sqrt(a[t])
        an = a[tn] if tn >= 0 else 1.0
        x = np.sqrt(an) * x0 + np.sqrt(1 - an) * eps
    np.testing.assert_allclose(out.x[:, 0], x, atol=1e-5)
    np.testing.assert_array_equal(
        out.x[:, 0], out.x[:, 1]
    )  # eta=0: identical hypotheses (issue Diffpose#9)


# ---------------------------------------------------------------------------
# Determinism and randomness
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tanh_denoiser():
    return lambda p, x, t, c: jnp.tanh(p * x) + 0.3 * _pad3(c["2d"])


def test_ddim_eta0_is_deterministic(tanh_denoiser):
    grid = schedules.make_time_grid("d3dp", 1000, 5)
    cond = {"2d": _normal(0, (2, 17, 2))}
    det = samplers.make_sampler(
        tanh_denoiser,
        COSINE,
        grid,
        event_shape=(17, 3),
        num_hypotheses=2,
        eta=0.0,
        clip=1.1,
        mesh=ONE_DEVICE,
    )
    f = _jit(det)
    # From the same x_T, the same key or different keys give identical outputs.
    x_T = _normal(5, (2, 2, 17, 3))
    r1, r2 = f(0.7, cond, jax.random.key(1), x_T), f(0.7, cond, jax.random.key(1), x_T)
    r3 = f(0.7, cond, jax.random.key(2), x_T)
    np.testing.assert_array_equal(r1.x0_steps, r2.x0_steps)
    np.testing.assert_array_equal(r1.x0_steps, r3.x0_steps)
    # eta=0 adds no noise at all: given step noise is ignored, even NaN.
    nan = jnp.full((2, 5, 2, 17, 3), jnp.nan)
    r4 = f(0.7, cond, jax.random.key(1), x_T, step_noise=nan)
    np.testing.assert_array_equal(r1.x0_steps, r4.x0_steps)
    # ...while eta=1 uses the key, and hypotheses (same x_init) get independent noise.
    sto = samplers.make_sampler(
        tanh_denoiser,
        COSINE,
        grid,
        event_shape=(17, 3),
        num_hypotheses=2,
        eta=1.0,
        clip=1.1,
        mesh=ONE_DEVICE,
    )
    g = _jit(sto)
    s1, s2 = g(0.7, cond, jax.random.key(1), x_T[:, 0]), g(0.7, cond, jax.random.key(2), x_T[:, 0])
    assert not np.allclose(s1.x, s2.x)
    assert not np.allclose(s1.x[:, 0], s1.x[:, 1])


def _key_noise(key, B, K, H, E):
    """What the sampler draws from ``key`` (the documented contract), as explicit noise.

    Returns ``(x_init [B, H, *E], step_noise [B, K, H, *E])``: clip ``b``'s draw at
    ``fold_in(fold_in(key, j), b)`` with ``j = 0`` the start and ``j = k + 1`` step ``k``.
    """
    draw = lambda j, b: jax.random.normal(  # noqa: E731
        jax.random.fold_in(jax.random.fold_in(key, j), b), (H, *E)
    )
    x_init = jnp.stack([draw(0, b) for b in range(B)])
    steps = jnp.stack([jnp.stack([draw(k + 1, b) for k in range(K)]) for b in range(B)])
    return x_init, steps


@pytest.mark.parametrize("flip_mode", [None, "chain"])
def test_given_noise_equal_to_the_key_draws_gives_the_key_result(tanh_denoiser, flip_mode):
    """Passing exactly what the key would draw reproduces the key-driven run bit for bit.

    With ``flip_mode='chain'`` the mirrored chain gets ``flip(z)`` in both cases.
    The final step (sigma = 0) ignores its row, even NaN; the key is then unused.
    """
    B, K, H, E = 3, 3, 2, (17, 3)
    smp = samplers.make_sampler(
        _biased_denoiser,
        COSINE,
        schedules.make_time_grid("d3dp", 1000, K),
        event_shape=E,
        num_hypotheses=H,
        eta=1.0,
        clip=1.1,
        flip_mode=flip_mode,
        mesh=ONE_DEVICE,
    )
    assert smp.coeffs.sigma[-1] == 0 and np.all(smp.coeffs.sigma[:-1] > 0)
    cond = {"2d": _normal(0, (B, 17, 2))}
    key = jax.random.key(7)
    # Drawn under the same XLA options as the sampler: -O0 vs -O2 changes the normal
    # transform's float32 rounding (FMA contraction) by an ulp.
    draw = jax.jit(lambda k: _key_noise(k, B, K, H, E), compiler_options=FAST)
    x_init, step_noise = draw(key)
    step_noise = step_noise.at[:, -1].set(jnp.nan)
    f = _jit(smp)
    drawn = f(jnp.float32(0.6), cond, key)
    given = f(jnp.float32(0.6), cond, jax.random.key(8), x_init, step_noise=step_noise)
    # Same noise, same arithmetic; XLA may still fuse the two programs differently
    # (float32 rounding: a few elements differ by ~1e-7, none at all without flips).
    np.testing.assert_allclose(given.x0_steps, drawn.x0_steps, atol=1e-6, rtol=0)
    np.testing.assert_allclose(given.x, drawn.x, atol=1e-6, rtol=0)
    # The step noise is really used: other noise on step 0 changes steps 1 and 2 only.
    other = f(jnp.float32(0.6), cond, key, x_init, step_noise=step_noise.at[:, 0].multiply(-1.0))
    np.testing.assert_allclose(other.x0_steps[:, 0], drawn.x0_steps[:, 0], atol=1e-6, rtol=0)
    assert np.abs(other.x0_steps[:, 1:] - drawn.x0_steps[:, 1:]).max() > 0.1


# ---------------------------------------------------------------------------
# Flip test-time augmentation
# ---------------------------------------------------------------------------


_PLAIN_RUNS = {}


@pytest.mark.parametrize(
    "prediction,flip_mode,eta", [("x0", "step", 1.0), ("x0", "chain", 1.0), ("eps", "step", 0.0)]
)
def test_flip_tta_with_equivariant_denoiser_equals_no_tta(
    tanh_denoiser, prediction, flip_mode, eta
):
    grid = schedules.make_time_grid("d3dp", 1000, 3)
    kw = dict(
        event_shape=(17, 3),
        num_hypotheses=2,
        eta=eta,
        prediction=prediction,
        mesh=ONE_DEVICE,
        clip=1.1 if prediction == "x0" else None,
    )
    flipped = samplers.make_sampler(tanh_denoiser, COSINE, grid, flip_mode=flip_mode, **kw)
    cond = {"2d": _normal(0, (2, 17, 2))}
    if (prediction, eta) not in _PLAIN_RUNS:  # the no-TTA run is shared by two cases
        plain = samplers.make_sampler(tanh_denoiser, COSINE, grid, **kw)
        _PLAIN_RUNS[prediction, eta] = _jit(plain)(0.7, cond, jax.random.key(3))
    a = _PLAIN_RUNS[prediction, eta]
    b = _jit(flipped)(0.7, cond, jax.random.key(3))
    np.testing.assert_allclose(a.x0_steps, b.x0_steps, atol=1e-5)


def _biased_denoiser(p, x, t, c):
    """Not flip-equivariant: a per-joint offset that the mirror moves to other joints."""
    offset = jnp.linspace(-0.5, 0.5, 17)[:, None] * jnp.ones(x.shape[-1])
    return p * x + offset + 0.2 * _pad3(c["2d"])


def test_flip_step_averages_unmirrored_predictions():
    flip = skeleton.H36M
    grid = schedules.make_time_grid("d3dp", 1000, 1)
    smp = samplers.make_sampler(
        _biased_denoiser,
        COSINE,
        grid,
        event_shape=(17, 3),
        num_hypotheses=1,
        eta=1.0,
        clip=1.1,
        flip_mode="step",
        mesh=ONE_DEVICE,
    )
    cond = {"2d": _normal(0, (2, 17, 2))}
    x_T = _normal(1, (2, 17, 3))
    out = _jit(smp)(jnp.float32(0.5), cond, jax.random.key(0), x_init=x_T)
    xc = jnp.clip(x_T, -1.1, 1.1)
    direct = _biased_denoiser(0.5, xc, None, cond)
    mirrored = skeleton.flip_pose(
        _biased_denoiser(
            0.5, skeleton.flip_pose(xc, flip), None, {"2d": skeleton.flip_pose(cond["2d"], flip)}
        ),
        flip,
    )
    np.testing.assert_allclose(
        out.x[:, 0], jnp.clip(0.5 * (direct + mirrored), -1.1, 1.1), atol=1e-6
    )
    no_tta = _biased_denoiser(0.5, xc, None, cond)
    assert not np.allclose(out.x[:, 0], jnp.clip(no_tta, -1.1, 1.1), atol=1e-3)


def test_flip_chain_averages_two_chains_on_uvxyz():
    """monoMotionDiff: refine x and mirror(x) separately, un-mirror, average.

    The state is uvxyz, whose mirror negates u and x (channels 0 and 2).
    """
    flip = samplers.make_flip_fn("h36m", negate_channels=(0, 2))
    grid = schedules.make_time_grid("diffpose", 12, 2)
    kw = dict(event_shape=(17, 5), num_hypotheses=1, eta=0.0, prediction="eps", mesh=ONE_DEVICE)
    offset = jnp.linspace(-0.5, 0.5, 17)[:, None]

    def den(p, x, t, c):
        return p * x + offset + 0.1 * jnp.concatenate([c["2d"], jnp.zeros_like(x[..., :3])], -1)

    plain = samplers.make_sampler(den, LINEAR, grid, **kw)
    chain = samplers.make_sampler(den, LINEAR, grid, flip_mode="chain", flip_fn=flip, **kw)
    cond = {"2d": _normal(0, (3, 17, 2))}
    x = _normal(1, (3, 17, 5))
    got = _jit(chain)(jnp.float32(0.2), cond, jax.random.key(0), x_init=x)
    run = _jit(plain)
    a = run(jnp.float32(0.2), cond, jax.random.key(0), x_init=x)
    b = run(
        jnp.float32(0.2),
        {"2d": skeleton.flip_pose(cond["2d"], "h36m")},
        jax.random.key(0),
        x_init=flip(x),
    )
    np.testing.assert_allclose(got.x, 0.5 * (a.x + flip(b.x)), atol=1e-5)
    np.testing.assert_allclose(got.x0_steps, 0.5 * (a.x0_steps + flip(b.x0_steps)), atol=1e-5)
    assert not np.allclose(got.x, a.x, atol=1e-3)


def test_make_flip_fn():
    x = _normal(0, (4, 17, 5))
    np.testing.assert_array_equal(samplers.make_flip_fn("h36m")(x), skeleton.flip_pose(x, "h36m"))
    f = samplers.make_flip_fn("h36m", negate_channels=(0, 2))
    np.testing.assert_array_equal(f(f(x)), x)
    perm = skeleton.H36M.flip_permutation
    np.testing.assert_array_equal(f(x)[..., 2], -x[..., perm, 2])
    np.testing.assert_array_equal(f(x)[..., 1], x[..., perm, 1])
    with pytest.raises(ValueError, match="negate_channels"):
        samplers.make_flip_fn("h36m", negate_channels=(7,))(x)


# ---------------------------------------------------------------------------
# Sharding and pmap
# ---------------------------------------------------------------------------


def test_sharded_pmap_and_single_device_agree(tanh_denoiser):
    assert jax.device_count() == 8
    grid = schedules.make_time_grid("d3dp", 1000, 3)
    smp = samplers.make_sampler(
        tanh_denoiser,
        COSINE,
        grid,
        event_shape=(17, 3),
        num_hypotheses=3,
        eta=1.0,
        clip=1.1,
        flip_mode="step",
        compiler_options=FAST,
    )  # default mesh: all 8 devices
    assert smp.mesh.size == 8 and smp.mesh.axis_types == (AxisType.Auto,)
    B = 5  # not a multiple of 8: padded and sliced
    cond = {"2d": _normal(0, (B, 17, 2))}
    key = jax.random.key(9)
    params = jnp.float32(0.7)
    single = _jit(smp)(params, cond, key)
    sharded = smp(params, cond, key)
    pmapped = smp.pmap(params, cond, key)
    chex.assert_shape(sharded.x0_steps, (B, 3, 3, 17, 3))
    np.testing.assert_allclose(sharded.x0_steps, single.x0_steps, atol=1e-6)
    np.testing.assert_allclose(pmapped.x0_steps, single.x0_steps, atol=1e-6)
    # Padding rows (B=5 -> 8) did not change the real clips: each clip's noise is
    # keyed by its index, not by its position in a device shard.
    # Divisible batch: the output stays sharded over the mesh.
    cond8 = {"2d": _normal(0, (8, 17, 2))}
    out8 = smp(params, cond8, key)
    assert out8.x.sharding.spec == PartitionSpec("data")
    np.testing.assert_allclose(
        out8.x0_steps[:B], smp.pmap(params, cond8, key).x0_steps[:B], atol=1e-6
    )


def test_explicit_noise_sharded_pmap_and_single_device_agree():
    """Given x_init and step_noise: batch-sharded and padded (B=5 on 8 devices) in the jit
    path, split along B for pmap, and the same numbers as one device; the key is unused."""
    B, K, H, E = 5, 3, 2, (17, 3)
    smp = samplers.make_sampler(
        _biased_denoiser,
        COSINE,
        schedules.make_time_grid("d3dp", 1000, K),
        event_shape=E,
        num_hypotheses=H,
        eta=1.0,
        clip=1.1,
        flip_mode="chain",
        compiler_options=FAST,
    )  # default mesh: all 8 devices
    cond = {"2d": _normal(0, (B, 17, 2))}
    x_init = _normal(1, (B, H, *E))
    step_noise = _normal(2, (B, K, H, *E))
    params = jnp.float32(0.6)
    single = _jit(smp)(params, cond, jax.random.key(0), x_init, step_noise=step_noise)
    sharded = smp(params, cond, jax.random.key(1), x_init, step_noise=step_noise)
    pmapped = smp.pmap(params, cond, jax.random.key(2), x_init, step_noise=step_noise)
    chex.assert_shape(sharded.x0_steps, (B, K, H, *E))
    np.testing.assert_allclose(sharded.x0_steps, single.x0_steps, atol=1e-6)
    np.testing.assert_allclose(pmapped.x0_steps, single.x0_steps, atol=1e-6)
    np.testing.assert_allclose(pmapped.x, single.x, atol=1e-6)
    # Each clip's result depends on its own rows only: a batch of the last two clips
    # (another padding, other devices) gives the same numbers for them.
    tail = smp(
        params,
        {"2d": cond["2d"][3:]},
        jax.random.key(3),
        x_init[3:],
        step_noise=step_noise[3:],
    )
    np.testing.assert_allclose(tail.x0_steps, single.x0_steps[3:], atol=1e-6)
    # A divisible batch stays sharded over the mesh; the noise array is sharded like cond.
    cond8 = {"2d": _normal(0, (8, 17, 2))}
    noise8 = jax.device_put(_normal(3, (8, K, H, *E)), sharding.batch_sharding(smp.mesh))
    out8 = smp(params, cond8, jax.random.key(0), _normal(4, (8, H, *E)), step_noise=noise8)
    assert out8.x.sharding.spec == PartitionSpec("data")


def test_step_noise_errors(tanh_denoiser):
    B, K, H, E = 2, 3, 2, (17, 3)
    smp = samplers.make_sampler(
        tanh_denoiser,
        COSINE,
        schedules.make_time_grid("d3dp", 1000, K),
        event_shape=E,
        num_hypotheses=H,
        mesh=ONE_DEVICE,
    )
    cond = {"2d": jnp.zeros((B, 17, 2))}
    key = jax.random.key(0)
    want = r"expected \[B, K, H, \*event\] = \(2, 3, 2, 17, 3\) \(B=2 clips, K=3 steps, H=2"
    # The likely slip: step-major [K, B, H, *event]; also a wrong K, a missing H, a wrong B.
    for name, call in [("__call__", smp), ("pmap", smp.pmap), ("sample", smp.sample)]:
        with pytest.raises(
            ValueError,
            match=rf"Sampler\.{name}: argument 'step_noise' has shape \(3, 2, 2, 17, 3\); {want}",
        ):
            call(0.7, cond, key, step_noise=np.zeros((K, B, H, *E), np.float32))
    for shape in [(B, K - 1, H, *E), (B, K, *E), (B + 1, K, H, *E)]:
        with pytest.raises(ValueError, match=re.escape(f"'step_noise' has shape {shape};")):
            smp.sample(0.7, cond, key, step_noise=np.zeros(shape, np.float32))
    with pytest.raises(ValueError, match=r"'step_noise' has dtype int32; expected a float array"):
        smp.sample(0.7, cond, key, step_noise=np.zeros((B, K, H, *E), np.int32))
    # Used rows must be finite (the index is reported in full coordinates)...
    z = np.zeros((B, K, H, *E), np.float32)
    z[1, 1, 0, 4, 2] = np.inf
    with pytest.raises(
        ValueError,
        match=r"Sampler\.pmap: argument 'step_noise' .* first at index \(1, 1, 0, 4, 2\)",
    ):
        smp.pmap(0.7, cond, key, step_noise=z)
    # ...while the final step's row (sigma = 0) may hold anything (abstract run: no compile).
    z = np.zeros((B, K, H, *E), np.float32)
    z[:, -1] = np.nan
    out = jax.eval_shape(lambda k: smp.sample(0.7, cond, k, step_noise=z), key)
    assert out.x0_steps.shape == (B, K, H, *E)
    # Under jit the shape is still checked (traced noise skips only the finiteness check).
    with pytest.raises(ValueError, match=r"'step_noise' has shape \(2, 3, 17, 3\)"):
        jax.eval_shape(lambda z: smp.sample(0.7, cond, key, step_noise=z), z[:, :, 0])


def test_mesh_helpers():
    mesh = sharding.make_mesh(4)
    assert mesh.size == 4 and mesh.axis_names == ("data",) and mesh.axis_types == (AxisType.Auto,)
    assert (
        sharding.padded_size(5, 4) == 8
        and sharding.padded_size(8, 4) == 8
        and sharding.padded_size(1, 4) == 4
    )
    padded = sharding.pad_batch({"a": jnp.arange(3)}, 5)
    np.testing.assert_array_equal(padded["a"], [0, 1, 2, 2, 2])
    with pytest.raises(ValueError, match="make_mesh: argument 'num_devices' is 9"):
        sharding.make_mesh(9)


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


def test_bad_configuration_errors(tanh_denoiser):
    grid = schedules.make_time_grid("d3dp", 1000, 2)
    kw = dict(event_shape=(17, 3), mesh=ONE_DEVICE)
    with pytest.raises(
        ValueError, match=r"make_sampler: argument 'eta' is -0.5; expected a finite float >= 0"
    ):
        samplers.make_sampler(tanh_denoiser, COSINE, grid, eta=-0.5, **kw)
    with pytest.raises(ValueError, match="make_sampler: unknown prediction 'v'"):
        samplers.make_sampler(tanh_denoiser, COSINE, grid, prediction="v", **kw)
    with pytest.raises(ValueError, match="make_sampler: unknown flip_mode 'both'"):
        samplers.make_sampler(tanh_denoiser, COSINE, grid, flip_mode="both", **kw)
    with pytest.raises(ValueError, match="num_hypotheses"):
        samplers.make_sampler(tanh_denoiser, COSINE, grid, num_hypotheses=0, **kw)
    with pytest.raises(ValueError, match="clip"):
        samplers.make_sampler(tanh_denoiser, COSINE, grid, clip=0.0, **kw)
    # A grid longer than the schedule (K > T) and a grid built for a bigger T.
    with pytest.raises(ValueError, match="expected at most num_timesteps=51"):
        schedules.make_time_grid("d3dp", 51, 52)
    with pytest.raises(
        ValueError, match=r"make_sampler: time grid steps t span \[499, 999\]; expected 0 <= t < 51"
    ):
        samplers.make_sampler(tanh_denoiser, LINEAR, grid, **kw)
    with pytest.raises(ValueError, match="unknown time grid"):
        schedules.make_time_grid("ddpm", 1000, 10)
    with pytest.raises(ValueError, match="unknown schedule"):
        schedules.make_schedule("sigmoid")
    with pytest.raises(ValueError, match="1 - abar_next - sigma"):
        samplers.make_sampler(tanh_denoiser, COSINE, grid, eta=3.0, **kw)


def test_bad_input_errors(tanh_denoiser):
    smp = samplers.make_sampler(
        tanh_denoiser,
        COSINE,
        schedules.make_time_grid("d3dp", 1000, 2),
        event_shape=(17, 3),
        num_hypotheses=2,
        mesh=ONE_DEVICE,
    )
    cond = {"2d": jnp.zeros((2, 17, 2))}
    with pytest.raises(
        ValueError, match=r"Sampler.__call__: argument 'x_init' has shape \(3, 17, 3\) \(batch 3\)"
    ):
        smp(0.7, cond, jax.random.key(0), x_init=jnp.zeros((3, 17, 3)))
    with pytest.raises(
        ValueError,
        match=r"Sampler.sample: argument 'x_init' has shape \(2, 16, 3\); expected \[B, \*event\]",
    ):
        smp.sample(0.7, cond, jax.random.key(0), x_init=jnp.zeros((2, 16, 3)))
    with pytest.raises(ValueError, match=r"argument 'x_init' has shape \(2, 3, 17, 3\).*H=2"):
        smp.sample(0.7, cond, jax.random.key(0), x_init=jnp.zeros((2, 3, 17, 3)))
    with pytest.raises(
        ValueError,
        match=r"Sampler.pmap: argument 'cond\['c'\]' has shape \(3, 4\); expected leading batch 2",
    ):
        smp.pmap(0.7, {"2d": jnp.zeros((2, 17, 2)), "c": jnp.zeros((3, 4))}, jax.random.key(0))
    with pytest.raises(ValueError, match=r"Sampler\.sample: argument 'key' is int"):
        smp.sample(0.7, cond, 0)
    # Raw uint32[2] keys are accepted too (abstract evaluation only: no compile).
    jax.eval_shape(lambda k: smp.sample(0.7, cond, k), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="cannot infer the batch size"):
        smp.sample(0.7, {}, jax.random.key(0))
    with pytest.raises(ValueError, match="non-finite"):
        smp.sample(0.7, cond, jax.random.key(0), x_init=jnp.full((2, 17, 3), jnp.nan))
    bad = samplers.make_sampler(
        lambda p, x, t, c: x[..., :2],
        COSINE,
        schedules.make_time_grid("d3dp", 1000, 2),
        event_shape=(17, 3),
        mesh=ONE_DEVICE,
    )
    with pytest.raises(ValueError, match=r"ddim_step: the denoiser returned shape \(2, 17, 2\)"):
        bad.sample(0.7, cond, jax.random.key(0))
    # A condition whose mirror is undefined (not [..., 17, D]) is reported by the flip.
    flip = samplers.make_sampler(
        tanh_denoiser,
        COSINE,
        schedules.make_time_grid("d3dp", 1000, 2),
        event_shape=(17, 3),
        flip_mode="step",
        mesh=ONE_DEVICE,
    )
    with pytest.raises(ValueError, match=r"flip_pose: argument 'x' has shape \(2, 4\)"):
        flip.sample(0.7, {"2d": jnp.zeros((2, 17, 2)), "cam": jnp.zeros((2, 4))}, jax.random.key(0))


# ---------------------------------------------------------------------------
# Small-batch compiler options
# ---------------------------------------------------------------------------


def _small_rule_sampler(rule, mesh=ONE_DEVICE):
    return samplers.make_sampler(
        _optimal_denoiser("x0"),
        COSINE,
        schedules.make_time_grid("d3dp", 1000, 2),
        event_shape=(3,),
        mesh=mesh,
        compiler_options=FAST,
        small_batch_options=rule,
    )


def test_small_calls_compile_with_the_small_batch_options():
    # An option XLA refuses makes the program that uses it observable: calls of at most
    # two inputs must compile with it (and fail), larger ones without it.
    smp = _small_rule_sampler((2, {"xla_pose_jax_no_such_option": True}))
    params, key = _gaussian_params(COSINE), jax.random.key(0)
    big = smp(params, {"id": jnp.zeros((3, 1))}, key)
    assert big.x.shape == (3, 1, 3)
    with pytest.raises(Exception, match="xla_pose_jax_no_such_option"):
        smp(params, {"id": jnp.zeros((2, 1))}, key)
    # the small program computes the same numbers (row 0 draws the same noise at any B)
    small = _small_rule_sampler((2, FAST))(params, {"id": jnp.zeros((1, 1))}, key)
    np.testing.assert_allclose(small.x, big.x[:1], rtol=1e-6, atol=1e-6)
    for rule, says in (((0, FAST), "max_rows=0"), ((2,), "expected \\(max_rows"), (5, "expected")):
        with pytest.raises(ValueError, match=says):
            _small_rule_sampler(rule, mesh=None)
