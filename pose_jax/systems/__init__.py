"""Systems: how each model family trains (its loss) and samples (its sampler).

A system turns a config into pure functions; the generic training loop and
evaluation only see ``loss_fn(params, batch, rng)`` and a sampler.
"""

from pose_jax.systems.base import System
from pose_jax.systems.d3dp import D3DPSystem
from pose_jax.systems.diffpose import DiffPoseSystem
from pose_jax.systems.finepose import FinePOSESystem
from pose_jax.systems.ktpformer import KTPFormerSystem

# DiffPose frame / video and monoMotionDiff are one refinement system; the config
# picks the parts (lifter, denoiser, noise), the name says which reference a run follows.
SYSTEMS = {
    "d3dp": D3DPSystem,
    "finepose": FinePOSESystem,
    "diffpose_frame": DiffPoseSystem,
    "diffpose_video": DiffPoseSystem,
    "mmdiff": DiffPoseSystem,
    # KTPFormer: a deterministic lifter. Its priors in a denoiser: model d3dp_ktp, system d3dp.
    "ktpformer": KTPFormerSystem,
}


def get_system(name: str) -> type[System]:
    """The system class registered under ``name``."""
    from pose_jax import _checks

    _checks.check_choice("get_system", "system", name, tuple(SYSTEMS))
    return SYSTEMS[name]
