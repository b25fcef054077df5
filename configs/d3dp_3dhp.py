"""D3DP on MPI-INF-3DHP (paTRICK-swk/D3DP main_3dhp.py): GT 2D input, root joint 14, 243 frames.

``denoiser=d3dp_ktp``: KTPFormer's prior blocks over the 3DHP skeleton (``d3dp_ktp_3dhp``).
"""

from configs import common


def get_config(arg: str | None = None):
    args = common.parse_arg(arg, denoiser="d3dp", runlocal=False)
    c = common.d3dp_base()
    c.model.name = common.d3dp_denoiser(args.denoiser, skeleton="3dhp")
    c.data.dataset = "mpi_inf_3dhp_pose/ori"
    c.eval.num_hypotheses = 20
    c.eval.num_iterations = 10
    c.eval.batch_size = 2  # hard-coded bs=2 in the reference's 3DHP evaluation
    if args.runlocal:
        common.shrink_for_cpu(c)
    return c
