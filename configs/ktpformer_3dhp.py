"""KTPFormer on MPI-INF-3DHP: GT 2D input, root joint 14, 243 frames, the 3DHP joint graph.

The reference trains Human3.6M (and HumanEva) only; this is its recipe on the 3DHP
data of D3DP's ``main_3dhp.py`` layout (``ktpformer_3dhp``: the kinematics prior over
the 3DHP skeleton; the loss's joint weights go to the 3DHP joints of the same meaning).
Add ``:runlocal`` for a CPU smoke run.
"""

from configs import common


def get_config(arg: str | None = None):
    args = common.parse_arg(arg, runlocal=False)
    c = common.ktpformer_base()
    c.data.dataset = "mpi_inf_3dhp_pose/ori"
    c.model.name = "ktpformer_3dhp"
    if args.runlocal:
        common.shrink_for_cpu(c)
        c.eval.num_hypotheses = 1
        c.eval.num_iterations = 1
    return c
