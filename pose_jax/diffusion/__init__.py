"""Diffusion core: schedules, forward process and losses, per-joint GMMs, DDIM samplers.

Never imports ``pose_jax.models``: samplers take a ``denoise_fn``.
"""

from pose_jax.diffusion.gmm import (
    GMMParams,
    fit_gmm,
    gmm_log_likelihood,
    gmm_noise_scale,
    sample_gmm_noise,
    select_gmm_component,
)
from pose_jax.diffusion.objectives import (
    antithetic_timesteps,
    apply_noise_scale,
    eps_loss,
    mpjpe_x0_loss,
    predict_eps_from_x0,
    predict_x0_from_eps,
    q_sample,
    uniform_timesteps,
)
from pose_jax.diffusion.samplers import (
    FLIP_MODES,
    PREDICTIONS,
    SampleOutput,
    Sampler,
    StepCoefficients,
    ddim_coefficients,
    ddim_step,
    make_flip_fn,
    make_sampler,
)
from pose_jax.diffusion.schedules import (
    SCHEDULES,
    TIME_GRIDS,
    Schedule,
    cosine_betas,
    d3dp_time_grid,
    diffpose_time_grid,
    linear_betas,
    make_schedule,
    make_time_grid,
    schedule_from_betas,
    validate_time_grid,
)

__all__ = [
    "FLIP_MODES",
    "PREDICTIONS",
    "SCHEDULES",
    "TIME_GRIDS",
    "GMMParams",
    "SampleOutput",
    "Sampler",
    "Schedule",
    "StepCoefficients",
    "antithetic_timesteps",
    "apply_noise_scale",
    "cosine_betas",
    "d3dp_time_grid",
    "ddim_coefficients",
    "ddim_step",
    "diffpose_time_grid",
    "eps_loss",
    "fit_gmm",
    "gmm_log_likelihood",
    "gmm_noise_scale",
    "linear_betas",
    "make_flip_fn",
    "make_sampler",
    "make_schedule",
    "make_time_grid",
    "mpjpe_x0_loss",
    "predict_eps_from_x0",
    "predict_x0_from_eps",
    "q_sample",
    "sample_gmm_noise",
    "schedule_from_betas",
    "select_gmm_component",
    "uniform_timesteps",
    "validate_time_grid",
]
