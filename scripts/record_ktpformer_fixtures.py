r"""Records KTPFormer reference numbers for the converter tests (needs PyTorch, not JAX).

Builds the reference KTPFormer (``common/model_ktpformer.py``, with the adjacencies of
``common/graph_utils.py`` built as ``run_ktpformer.py`` builds them) at a reduced size
with seeded random weights, moves every zero/one-initialised tensor off its
initialisation (positions, LayerNorm and BatchNorm affines, the learnable adjacency
offsets and modulations) and sets the BatchNorm running statistics to non-trivial
values, then writes:

* ``ktpformer_tiny_checkpoint.npz``: the checkpoint dict ``run_ktpformer.py`` saves
  (``epoch``, ``lr``, ``random_state``, ``optimizer``, ``model_pos``) flattened with ``/``
  (``model_pos/module.kpattention.attn.kpa.gconv.W``), keys and the ``module.`` prefix
  as in a real file (``num_batches_tracked`` counters included);
* ``ktpformer_tiny_io.npz``: hyper-parameters, the two adjacencies, inputs and outputs:
  the eval-mode network, the eval-mode flip TTA as ``run_ktpformer.py`` computes it,
  one train-mode forward (batch statistics) with the running statistics it leaves,
  and the reference's three loss terms on that prediction.

The recorded model has ``drop_path_rate=0`` so that its train-mode forward is
deterministic. The reference code is imported from a checkout the user provides;
nothing of it is copied here::

  python scripts/record_ktpformer_fixtures.py --reference_dir=/tmp/KTPFormer \
      --output_dir=tests/fixtures

Needs torch, numpy, scipy and einops. If ``timm`` or ``matplotlib`` cannot be imported,
stand-ins provide the few names the model file imports (only ``DropPath`` computes,
and it is built with rate 0 here).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import types

import numpy as np
import torch
from torch import nn

# VideoPose3D's 17-joint Human3.6M skeleton (the reference reduces its 32-joint one to it).
PARENTS = [-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15]
JOINTS_LEFT = [4, 5, 6, 11, 12, 13]
JOINTS_RIGHT = [1, 2, 3, 14, 15, 16]
JOINT_WEIGHTS = [1, 1, 2.5, 2.5, 1, 2.5, 2.5, 1, 1, 1, 1.5, 1.5, 4, 4, 1.5, 4, 4]


def _install_stand_ins() -> list[str]:
    """Makes the model file's timm/matplotlib imports work; returns what was stood in for."""
    used = []
    try:
        import timm.models.layers  # noqa: F401
    except Exception:  # timm missing, or its torchvision does not match torch
        used.append("timm")
        for name in [m for m in sys.modules if m == "timm" or m.startswith("timm.")]:
            del sys.modules[name]

        class DropPath(nn.Module):
            def __init__(self, drop_prob=0.0):
                super().__init__()
                if drop_prob:
                    raise NotImplementedError("stand-in DropPath: only rate 0 is recorded")

            def forward(self, x):
                return x

        names = ("timm", "timm.data", "timm.models", "timm.models.helpers",
                 "timm.models.layers", "timm.models.registry")  # fmt: skip
        mods = {n: types.ModuleType(n) for n in names}
        mods["timm.data"].IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
        mods["timm.data"].IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)
        mods["timm.models.helpers"].load_pretrained = None
        mods["timm.models.layers"].DropPath = DropPath
        mods["timm.models.layers"].to_2tuple = lambda x: x if isinstance(x, tuple) else (x, x)
        mods["timm.models.layers"].trunc_normal_ = nn.init.trunc_normal_
        mods["timm.models.registry"].register_model = lambda fn: fn
        sys.modules.update(mods)
    try:
        import matplotlib.pyplot  # noqa: F401
    except Exception:
        used.append("matplotlib")
        mpl, plt = types.ModuleType("matplotlib"), types.ModuleType("matplotlib.pyplot")
        mpl.use = lambda *a, **k: None
        plt.bone = None  # common/loss.py imports it
        mpl.pyplot = plt
        sys.modules.update({"matplotlib": mpl, "matplotlib.pyplot": plt})
    return used


def _perturb(model: nn.Module, gen: torch.Generator) -> None:
    """Moves every constant-initialised tensor off its initialisation, and sets BN statistics."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("_pos_embed"):
                p.copy_(0.3 * noise)
            elif name.endswith(".adj2"):
                p.copy_(0.2 * noise)
            elif name.endswith(".M"):
                p.copy_(1.0 + 0.3 * noise)
            elif p.ndim == 1 and ("norm" in name or ".bn." in name or name.startswith("head.0")):
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * noise)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.3 * torch.randn(b.shape, generator=gen))
            elif name.endswith("running_var"):
                b.copy_(0.5 + 1.5 * torch.rand(b.shape, generator=gen))
            elif name.endswith("num_batches_tracked"):
                b.fill_(123)


def _flatten(tree, prefix: str = "") -> dict[str, np.ndarray]:
    """Nested dicts/lists/tensors -> ``{'a/b/0': array}``; None is dropped."""
    out: dict[str, np.ndarray] = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}{k}/"))
    elif (
        isinstance(tree, (list, tuple))
        and tree
        and all(isinstance(v, (bool, int, float)) for v in tree)
    ):
        out[prefix[:-1]] = np.asarray(tree)
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            out.update(_flatten(v, f"{prefix}{i}/"))
    elif isinstance(tree, torch.Tensor):
        out[prefix[:-1]] = tree.detach().cpu().numpy()
    elif tree is not None:
        out[prefix[:-1]] = np.asarray(tree)
    return out


def _flip(x: torch.Tensor, left, right) -> torch.Tensor:
    """run_ktpformer.py's mirror: negate x, swap the left/right lists."""
    x = x.clone()
    x[..., 0] *= -1
    x[..., left + right, :] = x[..., right + left, :]
    return x


def _build(args):
    """``(model, adj, adj_temporal)``: the reference network with the script's graphs."""
    sys.path.insert(0, os.path.abspath(args.reference_dir))
    from common.graph_utils import adj_mx_from_skeleton, adj_mx_from_skeleton_temporal
    from common.model_ktpformer import KTPFormer
    from common.skeleton import Skeleton

    skeleton = Skeleton(parents=PARENTS, joints_left=JOINTS_LEFT, joints_right=JOINTS_RIGHT)
    adj = adj_mx_from_skeleton(skeleton)
    temporal_skeleton = np.arange(args.frames) - 1
    adj_temporal = adj_mx_from_skeleton_temporal(args.frames, temporal_skeleton)
    model = KTPFormer(
        adj, adj_temporal, num_frame=args.frames, num_joints=17, in_chans=2,
        embed_dim_ratio=args.embed_dim, depth=args.depth - 1, num_heads=args.heads,
        mlp_ratio=2.0, qkv_bias=True, qk_scale=None, drop_path_rate=0.0,
    )  # fmt: skip
    return model, adj, adj_temporal


def _record(model, args, gen) -> dict[str, np.ndarray]:
    from common.loss import mean_velocity_error_train, weighted_mpjpe

    b, f = args.batch, args.frames
    io: dict[str, np.ndarray] = {}
    with torch.no_grad():
        model.eval()
        x2d = torch.rand(b, f, 17, 2, generator=gen) * 2 - 1
        out = model(x2d)
        flipped = _flip(model(_flip(x2d, JOINTS_LEFT, JOINTS_RIGHT)), JOINTS_LEFT, JOINTS_RIGHT)
        io.update(eval_pose_2d=x2d, eval_out=out, eval_tta_out=(out + flipped) / 2)

        model.train()  # BatchNorm on the batch's statistics; drop-path rate 0
        x2d = torch.rand(b, f, 17, 2, generator=gen) * 2 - 1
        pred = model(x2d)
        gt = 0.3 * torch.randn(b, f, 17, 3, generator=gen)
        gt[:, :, 0] = 0
        w = torch.tensor(JOINT_WEIGHTS)
        dif = pred[:, 1:] - pred[:, :-1]
        tc = torch.mean(w[None, None, :, None] * torch.square(dif))
        io.update(
            train_pose_2d=x2d, train_out=pred, train_pose_3d=gt,
            loss_wmpjpe=weighted_mpjpe(pred, gt, w), loss_tc=tc,
            loss_mpjve=mean_velocity_error_train(pred, gt, axis=1),
        )  # fmt: skip
        for k, v in model.state_dict().items():
            if "running_" in k:
                io[f"after_train/{k}"] = v
        model.eval()
    return {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in io.items()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--reference_dir", required=True, help="checkout of JihuaPeng/KTPFormer")
    ap.add_argument(
        "--output_dir",
        default=os.path.normpath(
            os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
        ),
    )
    ap.add_argument("--torch_checkpoint", default=None, help="also torch.save the checkpoint here")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--frames", type=int, default=9)
    ap.add_argument("--embed_dim", type=int, default=32)
    ap.add_argument("--depth", type=int, default=2, help="stages incl. the prior pair (-dep + 1)")
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--batch", type=int, default=2)
    args = ap.parse_args(argv)

    stand_ins = _install_stand_ins()
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed + 1)
    model, adj, adj_temporal = _build(args)
    model_pos = nn.DataParallel(model)  # run_ktpformer.py saves the DataParallel state dict
    _perturb(model, gen)
    # The state dict before the train-mode forward (which updates the running statistics).
    state_dict = {k: v.clone() for k, v in model_pos.state_dict().items()}
    io = _record(model, args, gen)
    optimizer = torch.optim.AdamW(model.parameters(), lr=8e-5, weight_decay=0.1)
    checkpoint = {
        "epoch": 20, "lr": 8e-5,
        "random_state": np.random.RandomState(args.seed).get_state(),
        "optimizer": optimizer.state_dict(), "model_pos": state_dict,
    }  # fmt: skip
    hparams = dict(
        num_frames=args.frames, num_joints=17, embed_dim=args.embed_dim, depth=args.depth,
        num_heads=args.heads, mlp_ratio=2.0, batch=args.batch, joint_weights=JOINT_WEIGHTS,
        joints_left=JOINTS_LEFT, joints_right=JOINTS_RIGHT, seed=args.seed,
        torch_version=torch.__version__, stand_ins=stand_ins,
    )  # fmt: skip
    io.update(adj=adj.numpy(), adj_temporal=adj_temporal.numpy())
    io["hparams_json"] = np.asarray(json.dumps(hparams))

    os.makedirs(args.output_dir, exist_ok=True)
    ckpt_path = os.path.join(args.output_dir, "ktpformer_tiny_checkpoint.npz")
    io_path = os.path.join(args.output_dir, "ktpformer_tiny_io.npz")
    np.savez_compressed(ckpt_path, **_flatten(checkpoint))
    np.savez_compressed(io_path, **io)
    for p in (ckpt_path, io_path):
        print(f"wrote {p} ({os.path.getsize(p) / 1024:.1f} KiB)")
    if args.torch_checkpoint:
        torch.save(checkpoint, args.torch_checkpoint)
        print(f"wrote {args.torch_checkpoint}")
    print(json.dumps(hparams))


if __name__ == "__main__":
    main()
