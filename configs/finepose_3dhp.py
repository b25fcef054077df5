"""FinePOSE on MPI-INF-3DHP (FinePOSE_CVPR2024 main_3dhp.py): GT 2D input, prompt without an action.

``--config=configs/finepose_3dhp.py`` (``mode=reference`` or ``mode=paper``;
``,runlocal`` for a CPU smoke run). The 3DHP prompt layout has no action segment
(subject 5+4, speed 8+4, head 8+4, body 8+4, arm 12+4, leg 12+4 tokens), so no
action label is used; its pooled prompt is position 76.

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
    args = common.parse_arg(arg, mode="reference", runlocal=False, dataset="ori")
    c = common.finepose_base(args.mode)
    c.data.dataset = f"mpi_inf_3dhp_pose/{args.dataset}"
    c.model.name = "finepose_3dhp"
    c.model.action_dropout = 0.0  # no action segment to drop
    c.eval.batch_size = 2  # hard-coded bs=2 in the reference's 3DHP evaluation
    if args.runlocal:
        common.shrink_for_cpu(c)
    return c
