"""pose_jax: diffusion-based 3D human pose estimation in JAX/Flax.

Pure-functional denoisers (D3DP, FinePOSE, DiffPose, monoMotionDiff), DDPM/DDIM
samplers compiled whole with ``jax.jit``, and the geometry and metrics of the
Human3.6M and MPI-INF-3DHP protocols.
"""

__version__ = "0.1.0"
