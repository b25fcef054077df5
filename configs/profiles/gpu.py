"""NVIDIA A100/H100-class GPU profile (the monoMotionDiff speed table used an A100)."""

from configs import profiles


def get_profile():
    p = profiles.base()
    p.name = "gpu"
    # 'default' lets XLA use TF32 for float32 matmuls on Ampere and later.
    p.matmul_precision = "default"
    p.compute_dtype = "float32"
    p.batch_sizes.gcn_poses = (1024,)
    p.batch_sizes.d3dp_clips = 4  # D3DP's eval batch (configs/common.py)
    p.xla_flags = ("--xla_gpu_enable_latency_hiding_scheduler=true",)
    # Dense peaks from the vendors' data sheets (SXM parts); matched by substring
    # of jax's device_kind.
    p.peak_flops.bf16 = {"h200": 989e12, "h100": 989e12, "a100": 312e12, "default": None}
    p.peak_flops.fp32 = {"h200": 67e12, "h100": 67e12, "a100": 19.5e12, "default": None}
    return p
