"""D3DP on MPI-INF-3DHP (REFERENCE.md 2.4, 2.6): GT 2D input, root joint 14, 243 frames."""

from configs import common


def get_config(arg: str | None = None):
    args = common.parse_arg(arg, runlocal=False)
    c = common.d3dp_base()
    c.data.dataset = "mpi_inf_3dhp_pose/ori"
    c.eval.num_hypotheses = 20
    c.eval.num_iterations = 10
    c.eval.batch_size = 2  # hard-coded bs=2 in the reference's 3DHP evaluation
    if args.runlocal:
        common.shrink_for_cpu(c)
    return c
