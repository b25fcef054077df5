"""D3DP on Human3.6M (REFERENCE.md 2).

``--config=configs/d3dp_h36m.py:keypoints=cpn`` (default, CPN detections) or
``keypoints=gt`` (ground-truth 2D); add ``,runlocal`` for a CPU smoke run.
"""

from configs import common


def get_config(arg: str | None = None):
    args = common.parse_arg(arg, keypoints="cpn", runlocal=False)
    c = common.d3dp_base()
    sources = {"cpn": "cpn_ft_h36m_dbb", "gt": "gt", "detectron": "detectron_ft_h36m"}
    if args.keypoints not in sources:
        raise ValueError(f"keypoints={args.keypoints!r}; expected one of {sorted(sources)}.")
    c.data.dataset = f"h36m_pose/{sources[args.keypoints]}"
    if args.runlocal:
        common.shrink_for_cpu(c)
    return c
