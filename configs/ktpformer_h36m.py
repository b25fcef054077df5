"""KTPFormer on Human3.6M (JihuaPeng/KTPFormer run_ktpformer.py): a 243-frame lifter.

``--config=configs/ktpformer_h36m.py:keypoints=cpn`` (default, CPN detections) or
``keypoints=gt`` (ground-truth 2D); add ``,runlocal`` for a CPU smoke run
(``ktpformer_tiny``, 27 frames, 20 steps). Its priors inside D3DP's denoiser:
``configs/d3dp_h36m.py:denoiser=d3dp_ktp``.
"""

from configs import common


def get_config(arg: str | None = None):
    args = common.parse_arg(arg, keypoints="cpn", runlocal=False)
    c = common.ktpformer_base()
    sources = {"cpn": "cpn_ft_h36m_dbb", "gt": "gt"}
    if args.keypoints not in sources:
        raise ValueError(f"keypoints={args.keypoints!r}; expected one of {sorted(sources)}.")
    c.data.dataset = f"h36m_pose/{sources[args.keypoints]}"
    if args.runlocal:
        common.shrink_for_cpu(c)
        c.eval.num_hypotheses = 1
        c.eval.num_iterations = 1
    return c
