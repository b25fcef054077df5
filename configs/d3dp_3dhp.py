"""D3DP on MPI-INF-3DHP (paTRICK-swk/D3DP main_3dhp.py): GT 2D input, root joint 14, 243 frames.

``denoiser=d3dp_ktp``: KTPFormer's prior blocks over the 3DHP skeleton (``d3dp_ktp_3dhp``).

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
    args = common.parse_arg(arg, denoiser="d3dp", runlocal=False, dataset="ori")
    c = common.d3dp_base()
    c.model.name = common.d3dp_denoiser(args.denoiser, skeleton="3dhp")
    c.data.dataset = f"mpi_inf_3dhp_pose/{args.dataset}"
    c.eval.num_hypotheses = 20
    c.eval.num_iterations = 10
    c.eval.batch_size = 2  # hard-coded bs=2 in the reference's 3DHP evaluation
    if args.runlocal:
        common.shrink_for_cpu(c)
    return c
