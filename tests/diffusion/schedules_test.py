"""Schedules and DDIM time grids against D3DP common/diffusionpose.py
and DiffPose get_beta_schedule."""

import jax
import numpy as np
import pytest

from pose_jax.diffusion import schedules

# (index, value, absolute tolerance = half a unit of the last listed digit)
COSINE_VALUES = [
    (0, 0.99996, 5e-6),
    (199, 0.8987, 5e-5),
    (399, 0.6475, 5e-5),
    (599, 0.3408, 5e-5),
    (799, 0.0940, 5e-5),
]
LINEAR_VALUES = [
    (0, 0.9999, 5e-5),
    (6, 0.998922, 5e-7),
    (12, 0.997299, 5e-7),
    (24, 0.99213, 5e-6),
    (50, 0.97233, 5e-6),
]


@pytest.mark.parametrize(
    "name,values,T", [("cosine", COSINE_VALUES, 1000), ("linear", LINEAR_VALUES, 51)]
)
def test_alphas_cumprod_match_reference(name, values, T):
    s = schedules.make_schedule(name)
    assert s.num_steps == T and s.name == name
    for idx, want, tol in values:
        assert abs(float(s.alphas_cumprod[idx]) - want) <= tol, (
            name,
            idx,
            float(s.alphas_cumprod[idx]),
            want,
        )


def test_cosine_end_and_derived_fields():
    s = schedules.make_schedule("cosine", 1000)
    for field in (
        "betas",
        "alphas",
        "alphas_cumprod",
        "alphas_cumprod_prev",
        "sqrt_alphas_cumprod",
        "sqrt_one_minus_alphas_cumprod",
        "sqrt_recip_alphas_cumprod",
        "sqrt_recipm1_alphas_cumprod",
    ):
        arr = getattr(s, field)
        assert arr.dtype == np.float32 and arr.shape == (1000,), field
    assert float(s.betas[-1]) == pytest.approx(0.999, abs=1e-7)  # clipped
    assert float(s.alphas_cumprod[-1]) < 1e-8
    assert np.all(np.diff(np.asarray(s.alphas_cumprod, np.float64)) < 0)
    # Built in float64 and cast once (not accumulated in float32).
    betas64 = schedules.cosine_betas(1000)
    np.testing.assert_array_equal(s.alphas_cumprod, np.cumprod(1.0 - betas64).astype(np.float32))
    np.testing.assert_allclose(
        s.sqrt_one_minus_alphas_cumprod**2 + s.sqrt_alphas_cumprod**2, 1.0, atol=1e-6
    )
    assert float(s.alphas_cumprod_prev[0]) == 1.0


def test_linear_betas_are_numpy_linspace():
    s = schedules.make_schedule("linear", 51, beta_start=1e-4, beta_end=1e-3)
    np.testing.assert_array_equal(s.betas, np.linspace(1e-4, 1e-3, 51).astype(np.float32))


def test_schedule_is_a_pytree_usable_under_jit():
    s = schedules.make_schedule("linear")
    got = jax.jit(lambda sch, t: sch.sqrt_alphas_cumprod[t])(s, 6)
    assert float(got) == pytest.approx(float(np.sqrt(s.alphas_cumprod[6])), rel=1e-6)
    assert len(jax.tree.leaves(s)) == 8


def test_bad_schedule_arguments():
    with pytest.raises(
        ValueError, match=r"make_schedule: unknown schedule 'quad'.*'cosine', 'linear'"
    ):
        schedules.make_schedule("quad")
    with pytest.raises(ValueError, match="num_steps"):
        schedules.make_schedule("cosine", 0)
    with pytest.raises(ValueError, match="beta_start"):
        schedules.make_schedule("linear", 10, beta_start=0.5, beta_end=0.1)
    with pytest.raises(ValueError, match="betas"):
        schedules.schedule_from_betas(np.array([0.1, 1.0]))


D3DP_GRIDS = {
    1: [999, -1],
    2: [999, 499, -1],
    3: [999, 665, 332, -1],
    5: [999, 799, 599, 399, 199, -1],
    10: [999, 899, 799, 699, 599, 499, 399, 299, 199, 99, -1],
    20: [
        999,
        949,
        899,
        849,
        799,
        749,
        699,
        649,
        599,
        549,
        499,
        449,
        399,
        349,
        299,
        249,
        199,
        149,
        99,
        49,
        -1,
    ],
}


@pytest.mark.parametrize("K", sorted(D3DP_GRIDS))
def test_d3dp_grid_matches_reference(K):
    times = D3DP_GRIDS[K]
    grid = schedules.make_time_grid("d3dp", 1000, K)
    assert grid.dtype == np.int32 and grid.shape == (K, 2)
    np.testing.assert_array_equal(grid, np.stack([times[:-1], times[1:]], axis=1))


def test_d3dp_full_grid_is_every_step():
    grid = schedules.d3dp_time_grid(1000, 1000)
    np.testing.assert_array_equal(grid[:, 0], np.arange(999, -1, -1))
    np.testing.assert_array_equal(grid[:, 1], np.arange(998, -2, -1))


def test_d3dp_grid_follows_float32_linspace():
    # Exact rationals give -1 + 13 * 1000/26 = 499 at i=13; torch's float32 linspace
    # (step 38.46154, second half computed as 999 - 13*step) gives 498.99997 -> .int() 498.
    grid = schedules.d3dp_time_grid(1000, 26)
    assert 498 in grid[:, 0] and 499 not in grid[:, 0]


@pytest.mark.parametrize(
    "T_test,S,want", [(24, 2, [(12, 0), (0, -1)]), (12, 2, [(6, 0), (0, -1)]), (6, 1, [(0, -1)])]
)
def test_diffpose_grid_matches_reference(T_test, S, want):
    grid = schedules.make_time_grid("diffpose", T_test, S)
    np.testing.assert_array_equal(grid, np.array(want, np.int32))


def test_bad_grids():
    with pytest.raises(
        ValueError, match=r"make_time_grid: unknown time grid 'quad'.*'d3dp', 'diffpose'"
    ):
        schedules.make_time_grid("quad", 1000, 2)
    with pytest.raises(
        ValueError,
        match=r"d3dp_time_grid: argument 'num_steps' is 1001; expected at most num_timesteps=1000",
    ):
        schedules.make_time_grid("d3dp", 1000, 1001)
    with pytest.raises(ValueError, match="diffpose_time_grid: argument 'num_steps'"):
        schedules.make_time_grid("diffpose", 6, 7)
    with pytest.raises(ValueError, match="num_steps"):
        schedules.make_time_grid("d3dp", 1000, 0)
    with pytest.raises(ValueError, match="t_next < t"):
        schedules.validate_time_grid(np.array([[5, 5]]), 10)
    with pytest.raises(ValueError, match="not a chain"):
        schedules.validate_time_grid(np.array([[5, 3], [2, -1]]), 10)
    with pytest.raises(ValueError, match="0 <= t < 10"):
        schedules.validate_time_grid(np.array([[10, -1]]), 10)
