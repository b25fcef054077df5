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
    """D3DP on Human3.6M with the settings of paTRICK-swk/D3DP common/arguments.py, main.py."""
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
    c.data.worker_count = 0

    c.model = ml_collections.ConfigDict()
    c.model.name = "d3dp"
    c.model.drop_path_rate = 0.1
    c.model.kwargs = ml_collections.ConfigDict()  # fields of the model; None: the model's own
    # Sizes (MixSTE: 512 wide, 8 stages, 8 heads, MLP ratio 2 in the paper), settable as
    # --config.model.kwargs.depth=4; any other field of the model may be added in a config.
    c.model.kwargs.embed_dim = ml_collections.FieldReference(None, field_type=int)
    c.model.kwargs.depth = ml_collections.FieldReference(None, field_type=int)
    c.model.kwargs.num_heads = ml_collections.FieldReference(None, field_type=int)
    c.model.kwargs.mlp_ratio = ml_collections.FieldReference(None, field_type=float)
    # How, not what, the denoiser computes (parameters and results unchanged):
    # remat 'none' | 'block' | 'dots_saveable' (per-block rematerialisation);
    # attention_impl 'auto' | 'xla' | 'cudnn' | 'einsum' (pose_jax.models.layers).
    c.model.kwargs.remat = ml_collections.FieldReference(None, field_type=str)
    c.model.kwargs.attention_impl = ml_collections.FieldReference(None, field_type=str)

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
    # One training duration: exactly one of num_epochs / num_steps is > 0 (0: unset).
    c.train.num_epochs = 400
    c.train.num_steps = 0
    c.train.log_every_steps = 50
    c.train.checkpoint_every_steps = 1000
    c.train.tensorboard = True
    # 'bfloat16': mixed-precision training (the denoiser computes in bf16; parameters,
    # gradients, optimizer state and the loss reduction stay float32).
    c.train.compute_dtype = "float32"
    # Updates per jitted call (a lax.scan over that many batches): the same updates with
    # one dispatch, transfer and allocation of XLA's temporaries per call.
    c.train.steps_per_call = 1
    # Samples per device in one chunk of an update (gradients summed over the chunks):
    # the same gradient with a smaller working set, for CPUs whose caches then hold it.
    # 0: the whole batch at once; models with BatchNorm need 0.
    c.train.microbatch_size = 0

    c.eval = ml_collections.ConfigDict()
    c.eval.num_hypotheses = 5
    c.eval.num_iterations = 5
    c.eval.eta = 1.0
    c.eval.flip_tta = True
    # Rows per device in one denoiser call; larger calls run in parts (the same numbers).
    # None: the family's default for the platform (GCN refiners on CPU: parts); 0: one call.
    c.eval.max_denoise_rows = ml_collections.FieldReference(None, field_type=int)
    # 'reference' in a value always means "as the reference code computes it".
    c.eval.batch_size = 4  # clips per sampler call; the 'reference' P-Best depends on it
    # How P-Best and J-Agg's P2 aggregate: 'reference' (P-Best picked once per evaluation
    # batch, J-Agg P2 from separately aligned hypotheses, as D3DP's main.py) or 'per_pose'.
    c.eval.hypothesis_aggregation = "reference"
    # Which frames count: 'reference' (every slot of every window, so overlapping and
    # padded frames count again, as D3DP does) or 'exact' (every real frame once).
    c.eval.frame_weighting = "reference"
    c.eval.use_ema = False
    c.eval.seed = 0
    c.eval.max_sequences = 0  # > 0 evaluates only the first sequences (smoke tests)
    c.eval.plots = True

    c.mesh = ml_collections.ConfigDict()
    c.mesh.num_devices = 0  # 0: all devices on one 'data' axis
    # 'replicated': every device holds the whole train state (data parallelism);
    # 'fsdp': params, EMA and optimizer moments of >= fsdp_min_size elements are split
    # over the 'data' axis too (ZeRO-3), for models whose state does not fit replicated.
    c.mesh.param_sharding = "replicated"
    c.mesh.fsdp_min_size = 2**16

    c.ckpt = ml_collections.ConfigDict()
    c.ckpt.max_to_keep = 3
    return c


def finepose_base(mode: str = "reference") -> ml_collections.ConfigDict:
    """FinePOSE on Human3.6M (FinePOSE_CVPR2024 main.py): D3DP's settings plus the prompts.

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
    c.model.finepose_variant = mode  # 'reference' (the released code) or 'paper'
    # CLIP ViT-B/32 weights: OpenAI's ViT-B-32.pt, a FinePOSE checkpoint, an .npz state
    # dict or a launch.convert output. None: seeded random CLIP (smoke tests only).
    c.model.clip_weights = ml_collections.FieldReference(None, field_type=str)
    c.model.frozen_seed = 0  # frozen leaves drawn when no weights are given
    c.model.prompt_groups = 1  # reference mode: DataParallel chunks of the row tiling
    c.model.action_dropout = 0.1 if mode == "paper" else 0.0
    c.model.agnostic_word = "unknown"
    c.train.num_epochs = 100  # main.py (CPN); main_gt.py trains 120
    c.eval.num_hypotheses = 20  # FinePOSE README: H=20, K=10
    c.eval.num_iterations = 10
    c.eval.action_source = "ground_truth"  # or 'none': the action-agnostic prompt
    return c


def d3dp_denoiser(name: str, *, skeleton: str) -> str:
    """The registry name of a D3DP config's ``denoiser=`` argument (``d3dp`` or ``d3dp_ktp``).

    ``d3dp_ktp`` builds KTPFormer's kinematics prior over the dataset's skeleton.
    """
    if name not in ("d3dp", "d3dp_ktp"):
        raise ValueError(f"denoiser={name!r}; expected one of ['d3dp', 'd3dp_ktp'].")
    return f"{name}_3dhp" if name == "d3dp_ktp" and skeleton == "3dhp" else name


def ktpformer_base() -> ml_collections.ConfigDict:
    """KTPFormer on Human3.6M: the settings of JihuaPeng/KTPFormer common/arguments.py and
    run_ktpformer.py (a deterministic lifter: no diffusion block, one prediction per clip)."""
    c = d3dp_base()
    c.system = "ktpformer"
    del c["diffusion"]
    c.data.num_frames = 243
    c.data.batch_size = 8  # clips of 243 frames per step (-b 1024 // -s 128)
    c.data.flip = "duplicate"  # every chunk once as is and once mirrored per epoch

    c.model.name = "ktpformer"
    c.model.drop_path_rate = 0.1  # the training model's; evaluation is deterministic
    c.model.tc_weight = 0.5  # L = wMPJPE + 0.5 L_tc + 2.0 MPJVE
    c.model.velocity_weight = 2.0

    c.optim.lr = 8e-5
    c.optim.weight_decay = 0.1
    c.optim.lr_schedule = "epoch_exponential"
    c.optim.lr_decay = 0.99
    # run_ktpformer.py calls loss.backward(loss): the gradient is L * grad L.
    c.optim.gradient_mode = "loss_times_grad"
    c.optim.ema_decay = 0.0

    c.train.num_epochs = 200

    c.eval.num_hypotheses = 1  # deterministic: H = K = 1
    c.eval.num_iterations = 1
    c.eval.eta = 0.0  # unused
    c.eval.flip_tta = True  # always on in the reference
    c.eval.batch_size = 8
    return c


def train_for_steps(c: ml_collections.ConfigDict, steps: int) -> None:
    """Sets the one training duration to ``steps`` updates (``num_epochs`` unset)."""
    c.train.num_steps = steps
    c.train.num_epochs = 0


def shrink_for_cpu(c: ml_collections.ConfigDict) -> None:
    """``runlocal``: the config's model at its tiny size, a run small enough for a 2-core CPU."""
    c.model.name = _tiny(c.model.name)
    c.model.drop_path_rate = 0.0
    c.data.num_frames = 27
    c.data.batch_size = 8
    train_for_steps(c, 20)
    c.train.log_every_steps = 5
    c.train.checkpoint_every_steps = 10
    c.eval.num_hypotheses = 2
    c.eval.num_iterations = 2
    c.eval.max_sequences = 4


def diffpose_base() -> ml_collections.ConfigDict:
    """DiffPose / monoMotionDiff refinement on Human3.6M single frames.

    Settings of GONGJIA0208/Diffpose, Diffpose_video and jjkislele/monoMotionDiff.

    The DiffPose-frame diffusion stage with the references' training settings
    (Adam 1e-3, x0.9 every 60 epochs, clip 1.0, EMA 0.999, batch 1024, T = 51
    linear); the experiment files choose the variant and the stage.
    """
    c = d3dp_base()
    c.system = "diffpose_frame"

    c.data.num_frames = 1  # evaluation window; single-frame models see each frame alone
    c.data.batch_size = 1024
    c.data.flip = "none"

    c.model = ml_collections.ConfigDict()
    c.model.stage = "diffusion"  # 'lifter': train the initialiser first
    c.model.name = "gcndiff"  # the denoiser
    c.model.kwargs = ml_collections.ConfigDict()  # size overrides of the denoiser; None: default
    c.model.kwargs.hidden = ml_collections.FieldReference(None, field_type=int)
    c.model.kwargs.num_layers = ml_collections.FieldReference(None, field_type=int)
    c.model.kwargs.num_heads = ml_collections.FieldReference(None, field_type=int)
    c.model.kwargs.dropout = ml_collections.FieldReference(None, field_type=float)
    c.model.kwargs.remat = ml_collections.FieldReference(None, field_type=str)  # as d3dp_base
    c.model.lifter = "graformer"  # the initialiser
    c.model.lifter_kwargs = ml_collections.ConfigDict()
    # Run directory of the trained lifter (or a launch.convert output); needed to evaluate.
    c.model.lifter_path = ml_collections.FieldReference(None, field_type=str)
    c.model.lifter_use_ema = False

    c.diffusion = ml_collections.ConfigDict()
    c.diffusion.schedule = "linear"
    c.diffusion.num_steps = 51
    c.diffusion.noise_scale = (0.1, 0.1, 1.0, 1.0, 1.0)  # uvxyz; also the GMM fallback
    c.diffusion.uv_noise = "constant"  # or 'gmm': fitted on detected - GT training 2D
    c.diffusion.gmm_scale_kind = "std"
    c.diffusion.gmm_components = 3
    c.diffusion.gmm_iters = 50
    c.diffusion.gmm_fit_frames = 200_000
    c.diffusion.train_uv = "input"  # or 'gt': the 3D projected with the camera
    c.diffusion.reroot_init = True

    c.optim.name = "adam"
    c.optim.lr = 1e-3
    c.optim.weight_decay = 0.0
    c.optim.lr_schedule = "epoch_step"
    c.optim.lr_decay = 0.9
    c.optim.decay_every_epochs = 60
    c.optim.grad_clip_norm = 1.0
    c.optim.ema_decay = 0.999  # kept; the references evaluate the raw weights

    c.train.seed = 19960903
    c.train.num_epochs = 80
    c.train.log_every_steps = 100
    c.train.checkpoint_every_steps = 5000

    c.eval.num_hypotheses = 1  # eta = 0: more hypotheses would be identical
    c.eval.num_timesteps = 24  # T_test: the chain starts at T_test - T_test // S
    c.eval.num_iterations = 2  # S
    c.eval.eta = 0.0
    c.eval.flip_tta = False  # monoMotionDiff: run the chain on the mirror too
    c.eval.init_flip_tta = False  # DiffPose-video: flip-average the initialiser
    c.eval.batch_size = 1024  # windows per call (frames for single-frame windows)
    return c


def diffpose_lifter_stage(c: ml_collections.ConfigDict) -> None:
    """``stage=lifter``: train the GraFormer initialiser alone (MPJPE), same optimiser.

    The references ship ``gcn_xyz_*.pth`` without training code; 50 epochs is our choice.
    """
    c.model.stage = "lifter"
    c.train.num_epochs = 50


def _tiny(name: str) -> str:
    return name if name.endswith("_tiny") else name + "_tiny"


def shrink_diffpose_for_cpu(c: ml_collections.ConfigDict) -> None:
    """``runlocal`` for the DiffPose family: tiny models, a few steps, synthetic_pose/tiny."""
    c.data.dataset = "synthetic_pose/tiny"
    c.data.batch_size = 64
    c.model.name = _tiny(c.model.name)
    c.model.lifter = _tiny(c.model.lifter)
    c.diffusion.gmm_fit_frames = 2000
    c.diffusion.gmm_iters = 10
    train_for_steps(c, 20)
    c.train.log_every_steps = 5
    c.train.checkpoint_every_steps = 10
    c.train.tensorboard = False
    c.eval.max_sequences = 2
    c.eval.batch_size = 128 if c.data.num_frames == 1 else 2
    c.eval.plots = False


# 2D source of the DiffPose-family configs: dataset argument -> keypoints argument -> TFDS name.
DIFFPOSE_2D_SOURCES = {
    "h36m": {"cpn": "h36m_pose/cpn_ft_h36m_dbb", "gt": "h36m_pose/gt"},
    "synthetic": {"cpn": "synthetic_pose/noisy", "gt": "synthetic_pose/default"},
}


def diffpose_experiment(arg: str | None, system: str):
    """Parses the DiffPose-family arguments and starts the config.

    Arguments: ``keypoints=cpn|gt``, ``dataset=h36m|synthetic``,
    ``stage=lifter|diffusion``, ``runlocal``. Returns ``(args, config)`` with
    ``config.system`` and ``config.data.dataset`` set on :func:`diffpose_base`.
    """
    args = parse_arg(arg, keypoints="cpn", dataset="h36m", stage="diffusion", runlocal=False)
    allowed = {
        "keypoints": ("cpn", "gt"),
        "dataset": tuple(DIFFPOSE_2D_SOURCES),
        "stage": ("lifter", "diffusion"),
    }
    for name, choices in allowed.items():
        if args[name] not in choices:
            raise ValueError(f"{name}={args[name]!r}; expected one of {list(choices)}.")
    c = diffpose_base()
    c.system = system
    c.data.dataset = DIFFPOSE_2D_SOURCES[args.dataset][args.keypoints]
    return args, c
