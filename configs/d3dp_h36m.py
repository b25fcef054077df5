"""D3DP on Human3.6M (paTRICK-swk/D3DP main.py).

``--config=configs/d3dp_h36m.py:keypoints=cpn`` (default, CPN detections) or
``keypoints=gt`` (ground-truth 2D); add ``,runlocal`` for a CPU smoke run.
``denoiser=d3dp_ktp`` puts KTPFormer's kinematics/trajectory prior blocks in the
first spatial/temporal stage of the denoiser (``d3dp_ktp``; ``_tiny`` with runlocal).
"""

from configs import common


def get_config(arg: str | None = None):
    args = common.parse_arg(arg, keypoints="cpn", denoiser="d3dp", runlocal=False)
    c = common.d3dp_base()
    c.model.name = common.d3dp_denoiser(args.denoiser, skeleton="h36m")
    sources = {"cpn": "cpn_ft_h36m_dbb", "gt": "gt", "detectron": "detectron_ft_h36m"}
    if args.keypoints not in sources:
        raise ValueError(f"keypoints={args.keypoints!r}; expected one of {sorted(sources)}.")
    c.data.dataset = f"h36m_pose/{sources[args.keypoints]}"
    if args.runlocal:
        common.shrink_for_cpu(c)
    return c
