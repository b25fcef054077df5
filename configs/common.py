"""Blocks shared by the experiment configs (ml_collections only, no jax)."""

from __future__ import annotations

import ml_collections


def parse_arg(arg: str | None, **defaults):
    """Parses ``'variant=gt,runlocal'``-style config arguments into a ConfigDict.

    A bare word sets a boolean flag; ``k=v`` sets a string (ints/floats/bools parsed).
    Unknown names are refused, listing the known ones.
    """
    out = ml_collections.ConfigDict(defaults)
    for part in filter(None, (arg or "").split(",")):
        key, _, value = part.partition("=")
        key = key.strip()
        if key not in defaults:
            raise ValueError(
                f"config argument {key!r} is unknown; expected one of {sorted(defaults)}."
            )
        if not value:
            out[key] = True
            continue
        default = defaults[key]
        if isinstance(default, bool):
            out[key] = value.lower() in ("1", "true", "yes")
        elif isinstance(default, int):
            out[key] = int(value)
        elif isinstance(default, float):
            out[key] = float(value)
        else:
            out[key] = value
    return out


def d3dp_base() -> ml_collections.ConfigDict:
    """D3DP on Human3.6M with the reference's settings (REFERENCE.md 2.2-2.5, 2.10)."""
    c = ml_collections.ConfigDict()
    c.system = "d3dp"

    c.data = ml_collections.ConfigDict()
    c.data.dataset = "h36m_pose/cpn_ft_h36m_dbb"
    c.data.data_dir = ml_collections.FieldReference(None, field_type=str)
    c.data.manual_dir = ml_collections.FieldReference(None, field_type=str)
    c.data.train_split = "train"
    c.data.eval_split = "test"
    c.data.num_frames = 243
    c.data.batch_size = 4  # clips of 243 frames per step (1024 // 243 in the reference)
    c.data.flip = "duplicate"
    c.data.single_frame = False  # True: [B, J, ...] batches of single frames (DiffPose)
    c.data.worker_count = 0

    c.model = ml_collections.ConfigDict()
    c.model.name = "d3dp"
    c.model.drop_path_rate = 0.1

    c.diffusion = ml_collections.ConfigDict()
    c.diffusion.schedule = "cosine"
    c.diffusion.num_steps = 1000
    c.diffusion.scale = 1.0
    c.diffusion.clip = 1.1

    c.optim = ml_collections.ConfigDict()
    c.optim.name = "adamw"
    c.optim.lr = 6e-5
    c.optim.weight_decay = 0.1
    c.optim.lr_schedule = "epoch_exponential"
    c.optim.lr_decay = 0.993
    c.optim.decay_every_epochs = 1
    c.optim.grad_clip_norm = 0.0
    # 'loss_times_grad' reproduces the reference's loss.backward(loss) exactly.
    c.optim.gradient_mode = "standard"
    c.optim.ema_decay = 0.0  # 0 disables EMA (the reference has none)

    c.train = ml_collections.ConfigDict()
    c.train.seed = 1
    c.train.num_epochs = 400
    c.train.num_steps = 0  # > 0 overrides num_epochs
    c.train.log_every_steps = 50
    c.train.checkpoint_every_steps = 1000
    c.train.eval_every_steps = 0
    c.train.batch_keys = ("pose_3d", "pose_2d")
    c.train.tensorboard = True

    c.eval = ml_collections.ConfigDict()
    c.eval.num_hypotheses = 5
    c.eval.num_iterations = 5
    c.eval.eta = 1.0
    c.eval.flip_tta = True
    c.eval.batch_size = 4  # clips per sampler call; P-Best (reference mode) depends on it
    c.eval.mode = "reference"  # or 'per_pose'
    c.eval.weighting = (
        "reference"  # 'reference' double counts overlaps; 'exact' counts each frame once
    )
    c.eval.use_ema = False
    c.eval.seed = 0
    c.eval.max_sequences = 0  # > 0 evaluates only the first sequences (smoke tests)
    c.eval.plots = True

    c.mesh = ml_collections.ConfigDict()
    c.mesh.num_devices = 0  # 0: all devices on one 'data' axis

    c.ckpt = ml_collections.ConfigDict()
    c.ckpt.max_to_keep = 3
    return c


def finepose_base(mode: str = "reference") -> ml_collections.ConfigDict:
    """FinePOSE on Human3.6M (REFERENCE.md 2.7): D3DP's settings plus the prompt branch.

    ``mode='reference'`` is the released code (frozen context vectors, the ground-truth
    action at test time, the training batch's prompt-row tiling); ``'paper'`` trains
    the context vectors, gives each clip its own prompt and drops the action word
    (10%) so that label-free evaluation (``eval.action_source='none'``) is trained.
    """
    if mode not in ("reference", "paper"):
        raise ValueError(f"mode={mode!r}; expected 'reference' or 'paper'.")
    c = d3dp_base()
    c.system = "finepose"
    c.model.name = "finepose"
    c.model.mode = mode
    # CLIP ViT-B/32 weights: OpenAI's ViT-B-32.pt, a FinePOSE checkpoint, an .npz state
    # dict or a launch.convert output. None: seeded random CLIP (smoke tests only).
    c.model.clip_weights = ml_collections.FieldReference(None, field_type=str)
    c.model.frozen_seed = 0  # frozen leaves drawn when no weights are given
    c.model.prompt_groups = 1  # reference mode: DataParallel chunks of the row tiling
    c.model.action_dropout = 0.1 if mode == "paper" else 0.0
    c.model.agnostic_word = "unknown"
    c.train.num_epochs = 100  # main.py (CPN); main_gt.py trains 120
    c.train.batch_keys = ("pose_3d", "pose_2d", "action")
    c.eval.num_hypotheses = 20  # FinePOSE README: H=20, K=10
    c.eval.num_iterations = 10
    c.eval.action_source = "ground_truth"  # or 'none': the action-agnostic prompt
    return c


def shrink_for_cpu(c: ml_collections.ConfigDict) -> None:
    """``runlocal``: a model and run small enough for a 2-core CPU smoke test."""
    c.model.name = "d3dp_tiny"
    c.model.drop_path_rate = 0.0
    c.data.num_frames = 27
    c.data.batch_size = 8
    c.train.num_steps = 20
    c.train.log_every_steps = 5
    c.train.checkpoint_every_steps = 10
    c.eval.num_hypotheses = 2
    c.eval.num_iterations = 2
    c.eval.max_sequences = 4
