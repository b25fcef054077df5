"""KTPFormer on MPI-INF-3DHP: GT 2D input, root joint 14, 243 frames, the 3DHP joint graph.

The reference trains Human3.6M (and HumanEva) only; this is its recipe on the 3DHP
data of D3DP's ``main_3dhp.py`` layout (``ktpformer_3dhp``: the kinematics prior over
the 3DHP skeleton; the loss's joint weights go to the 3DHP joints of the same meaning).
Add ``:runlocal`` for a CPU smoke run.

``:dataset=<config>`` picks the ``mpi_inf_3dhp_pose`` builder config (default ``ori``,
which reads the activity labels of the paper's per-activity table from
``TS<i>/annot_data.mat`` in the manual directory); ``dataset=ori_test_only`` is built
from the official test files alone, to evaluate a converted checkpoint without the
training npz. With the default ``eval.*`` settings (``hypothesis_aggregation`` and
``frame_weighting`` 'reference', batch 2) the 3DHP tables are those of D3DP's
main_3dhp.py followed by the official MATLAB evaluation.
"""

from configs import common


def get_config(arg: str | None = None):
    args = common.parse_arg(arg, runlocal=False, dataset="ori")
    c = common.ktpformer_base()
    c.data.dataset = f"mpi_inf_3dhp_pose/{args.dataset}"
    c.model.name = "ktpformer_3dhp"
    if args.runlocal:
        common.shrink_for_cpu(c)
        c.eval.num_hypotheses = 1
        c.eval.num_iterations = 1
    return c
