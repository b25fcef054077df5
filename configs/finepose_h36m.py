"""FinePOSE on Human3.6M (PKU-ICST-MIPL/FinePOSE_CVPR2024).

``--config=configs/finepose_h36m.py:keypoints=cpn`` (default, CPN detections, 100
epochs as ``main.py``) or ``keypoints=gt`` (ground-truth 2D, 120 epochs as
``main_gt.py``); ``mode=reference`` (default: the released code's behaviour) or
``mode=paper`` (trained context vectors, own prompt per clip, label-free option
``--config.eval.action_source=none``); add ``,runlocal`` for a CPU smoke run.
Real runs need CLIP ViT-B/32 weights: ``--config.model.clip_weights=/path/ViT-B-32.pt``.
"""

from configs import common


def get_config(arg: str | None = None):
    args = common.parse_arg(arg, keypoints="cpn", mode="reference", runlocal=False)
    c = common.finepose_base(args.mode)
    sources = {"cpn": "cpn_ft_h36m_dbb", "gt": "gt"}
    if args.keypoints not in sources:
        raise ValueError(f"keypoints={args.keypoints!r}; expected one of {sorted(sources)}.")
    c.data.dataset = f"h36m_pose/{sources[args.keypoints]}"
    if args.keypoints == "gt":
        c.train.num_epochs = 120  # -e_gt
    if args.runlocal:
        common.shrink_for_cpu(c)
    return c
