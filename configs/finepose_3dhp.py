"""FinePOSE on MPI-INF-3DHP (FinePOSE_CVPR2024 main_3dhp.py): GT 2D input, prompt without an action.

``--config=configs/finepose_3dhp.py`` (``mode=reference`` or ``mode=paper``;
``,runlocal`` for a CPU smoke run). The 3DHP prompt layout has no action segment
(subject 5+4, speed 8+4, head 8+4, body 8+4, arm 12+4, leg 12+4 tokens), so no
action label is used; its pooled prompt is position 76.
"""

from configs import common


def get_config(arg: str | None = None):
    args = common.parse_arg(arg, mode="reference", runlocal=False)
    c = common.finepose_base(args.mode)
    c.data.dataset = "mpi_inf_3dhp_pose/ori"
    c.model.name = "finepose_3dhp"
    c.model.action_dropout = 0.0  # no action segment to drop
    c.eval.batch_size = 2  # hard-coded bs=2 in the reference's 3DHP evaluation
    if args.runlocal:
        common.shrink_for_cpu(c)
    return c
