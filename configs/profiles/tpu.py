"""TPU profile: bfloat16 compute (the MXU's native input type)."""

from configs import profiles


def get_profile():
    p = profiles.base()
    p.name = "tpu"
    p.matmul_precision = "default"
    p.compute_dtype = "bfloat16"
    p.batch_sizes.gcn_poses = (1024,)
    p.batch_sizes.d3dp_clips = 4
    p.xla_flags = ()
    # Per chip, from Google Cloud's TPU pages; fp32 matmuls run as multi-pass bf16.
    p.peak_flops.bf16 = {
        "v6": 918e12,
        "v5p": 459e12,
        "v5 lite": 197e12,
        "v4": 275e12,
        "default": None,
    }
    p.peak_flops.fp32 = {"default": None}
    return p
