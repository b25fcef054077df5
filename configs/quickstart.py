"""Quickstart: a small D3DP trained on the built-in ``synthetic_pose`` data on a CPU.

Switch to any built dataset with ``--config.data.dataset=NAME/CONFIG
--config.data.data_dir=DIR``. ``:runlocal`` shrinks it further (smoke tests);
``:keypoints=coco`` trains on COCO-17 2D (``synthetic_pose/coco``), the input layout of
D3DP's in-the-wild model, so detector output is lifted without converting joints.
"""

from configs import common


def get_config(arg: str | None = None):
    args = common.parse_arg(arg, runlocal=False, keypoints="h36m")
    if args.keypoints not in ("h36m", "coco"):
        raise ValueError(f"keypoints={args.keypoints!r}; expected 'h36m' or 'coco'.")
    suffix = "_coco" if args.keypoints == "coco" else ""
    c = common.d3dp_base()
    c.data.dataset = "synthetic_pose/coco" if suffix else "synthetic_pose/default"
    c.data.num_frames = 27
    c.data.batch_size = 16
    c.model.name = "d3dp_tiny"
    c.model.drop_path_rate = 0.0
    c.optim.lr = 2e-3
    c.optim.lr_decay = 0.99
    common.train_for_steps(c, 1500)
    c.train.log_every_steps = 50
    c.train.checkpoint_every_steps = 500
    # Ten updates per jitted call (the same updates): on a 2-core CPU the loop runs
    # 1.8x faster than one update per call (BENCHMARKS.md, training loop). The
    # 20-step ``runlocal`` smoke run keeps one per call.
    c.train.steps_per_call = 1 if args.runlocal else 10
    # Each update in chunks of 4 clips per device (the same gradient): on that CPU a
    # chunk's activations stay in cache and the update takes ~0.83 of its time.
    c.train.microbatch_size = 0 if args.runlocal else 4
    c.eval.num_hypotheses = 3
    c.eval.num_iterations = 3
    c.eval.batch_size = 16
    c.eval.max_sequences = 0
    if args.runlocal:
        common.shrink_for_cpu(c)
        c.data.dataset = f"synthetic_pose/tiny{suffix}"
    return c
