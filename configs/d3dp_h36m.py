"""D3DP on Human3.6M (paTRICK-swk/D3DP main.py).

``--config=configs/d3dp_h36m.py:keypoints=cpn`` (default, CPN detections),
``keypoints=gt`` (ground-truth 2D), ``keypoints=detectron`` or ``keypoints=coco``
(Detectron's COCO-17 detections: D3DP's in-the-wild model, main_in_the_wild.py
``-k detectron_pt_coco``, COCO-17 2D in, Human3.6M-17 3D out, the model a lifter
of detector output uses without converting joints); add ``,runlocal`` for a CPU smoke run.
``denoiser=d3dp_ktp`` puts KTPFormer's kinematics/trajectory prior blocks in the
first spatial/temporal stage of the denoiser (``d3dp_ktp``; ``_tiny`` with runlocal).
"""

from configs import common


def get_config(arg: str | None = None):
    args = common.parse_arg(arg, keypoints="cpn", denoiser="d3dp", runlocal=False)
    c = common.d3dp_base()
    c.model.name = common.d3dp_denoiser(args.denoiser, skeleton="h36m")
    sources = {
        "cpn": "cpn_ft_h36m_dbb",
        "gt": "gt",
        "detectron": "detectron_ft_h36m",
        "coco": "detectron_pt_coco",
    }
    if args.keypoints not in sources:
        raise ValueError(f"keypoints={args.keypoints!r}; expected one of {sorted(sources)}.")
    c.data.dataset = f"h36m_pose/{sources[args.keypoints]}"
    if args.runlocal:
        common.shrink_for_cpu(c)
    return c
