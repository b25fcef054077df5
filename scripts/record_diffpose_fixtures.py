r"""Records DiffPose / monoMotionDiff reference numbers for the converter tests (PyTorch, not JAX).

Builds the reference models at a reduced size (hidden 16, 2 layers, 2 heads;
MixSTE2 of width 32, depth 2, 9 frames) with seeded random weights (the
zero/identity-initialised tensors -- ChebConv biases, LayerNorm affines, the
GraphNet adjacency, MixSTE position tables -- are moved off their init), and
writes to ``--output_dir``:

* ``diffpose_tiny_gcndiff.npz`` -- DiffPose's GCNdiff checkpoint as its runner
  saves it, ``[model_sd, optim_sd, epoch, step, ema_shadow]`` (model in
  ``DataParallel``, so ``module.`` keys; the EMA shadow is keyed without it),
  flattened with ``/`` (``0/module.gconv_input.weight``, ``4/gconv_input.weight``);
* ``diffpose_tiny_lifter.npz`` -- a ``gcn_xyz_*.pth``-style lifter checkpoint
  (``GCNpose``, ``module.`` keys, its unused ``temb.dense.*`` included);
* ``diffpose_tiny_mixste.npz`` -- DiffPose-video's MixSTE2 initialiser checkpoint
  (``{'model_pos': DataParallel state dict}``);
* ``mmdiff_tiny_checkpoint.npz`` -- monoMotionDiff's DiffModel checkpoint (same list
  layout, no ``module.`` prefix);
* ``diffpose_tiny_io.npz`` / ``mmdiff_tiny_io.npz`` -- inputs and outputs: model
  calls, a training loss with fixed noise and timesteps, and the refinement
  samplers (the references' ``generalized_steps`` with the glue of their test
  loops: lifter init, re-rooting, monoMotionDiff's flip TTA, DiffPose-video's
  MixSTE flip averaging), with every ``torch.randn_like`` draw recorded.

The reference code is imported from checkouts the user provides; nothing of it is
copied here::

  python scripts/record_diffpose_fixtures.py --diffpose_path=/tmp/Diffpose \
      --diffpose_video_path=/tmp/Diffpose_video --mmdiff_path=/tmp/monoMotionDiff

Needs torch, numpy, scipy and einops. The references hard-code ``.cuda()`` in their
samplers; it is redirected to the CPU while recording (as in
``record_d3dp_fixtures.py``, whose helpers are reused).
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import record_d3dp_fixtures as d3dp_rec

JOINTS_LEFT = [4, 5, 6, 11, 12, 13]
JOINTS_RIGHT = [1, 2, 3, 14, 15, 16]
EDGES = [
    [0, 1],
    [1, 2],
    [2, 3],
    [0, 4],
    [4, 5],
    [5, 6],
    [0, 7],
    [7, 8],
    [8, 9],
    [9, 10],
    [8, 11],
    [11, 12],
    [12, 13],
    [8, 14],
    [14, 15],
    [15, 16],
]
J = 17


def _import_from(repo: str, *modules: str) -> list[types.ModuleType]:
    """Imports ``modules`` from checkout ``repo``; the references share package names."""
    for name in [m for m in sys.modules if m.split(".")[0] in ("models", "common", "utils")]:
        del sys.modules[name]
    sys.path.insert(0, os.path.abspath(repo))
    try:
        return [__import__(m, fromlist=["_"]) for m in modules]
    finally:
        sys.path.pop(0)


def _perturb(model: nn.Module, gen: torch.Generator) -> None:
    """Moves zero/identity-initialised tensors off their init (so a mapping error shows)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "A_hat":
                p.copy_(torch.eye(p.shape[0]) + 0.1 * noise.abs())
            elif leaf == "a_2" or (
                p.ndim == 1 and leaf == "weight" and ("norm" in name.lower() or "head.0" in name)
            ):
                p.copy_(1.0 + 0.2 * noise)
            elif leaf in ("b_2", "bias") or name.endswith("_pos_embed"):
                p.copy_(0.2 * noise)


def _flip(x: torch.Tensor) -> torch.Tensor:
    """Mirror of ``[..., J, C]``: negate channel 0, swap left/right (the references' lines)."""
    x = x.clone()
    x[..., 0] *= -1
    x[..., JOINTS_LEFT + JOINTS_RIGHT, :] = x[..., JOINTS_RIGHT + JOINTS_LEFT, :]
    return x


def _reroot(x: torch.Tensor) -> torch.Tensor:
    """``x - x[..., :1, :]``: the references' intent, written without their in-place aliasing.

    The references write ``x[:, :, :] -= x[:, :1, :]``, which reads the root while
    writing it. The result is undefined: on CPU (torch 2.x) the root is zeroed first
    and the other joints are left as they were (tiny tensors raise an overlap error);
    on CUDA it depends on the kernel's thread order. The fixtures record the
    well-defined re-rooting that the code means.
    """
    return x - x[..., :1, :]


def _states(model: nn.Module, ema_cls, gen: torch.Generator) -> list:
    """``[model_sd, optim_sd, epoch, step, ema_shadow]`` with an EMA that differs from the model."""
    ema = ema_cls(mu=0.999)
    ema.register(model)
    with torch.no_grad():
        shadow = {k: v.clone() for k, v in ema.state_dict().items()}
        for v in shadow.values():
            v.add_(0.01 * torch.randn(v.shape, generator=gen))
    ema.load_state_dict(shadow)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-8)
    return [model.state_dict(), optimizer.state_dict(), 3, 1234, ema.state_dict()]


def _config(hid: int, layers: int, heads: int, coords) -> argparse.Namespace:
    model = argparse.Namespace(
        hid_dim=hid,
        emd_dim=hid,
        coords_dim=list(coords),
        num_layer=layers,
        n_head=heads,
        dropout=0.25,
        n_pts=J,
    )
    return argparse.Namespace(model=model)


def _betas(utils) -> torch.Tensor:
    b = utils.get_beta_schedule(
        beta_schedule="linear", beta_start=1e-4, beta_end=1e-3, num_diffusion_timesteps=51
    )
    return torch.from_numpy(b).float()


def _seq(t_test: int, steps: int) -> list[int]:
    return list(range(0, t_test, t_test // steps))


def _train_loss(model_call, x0, e, noise_scale, t, betas):
    """The references' training lines with given e and t."""
    e = e * noise_scale
    a = (1 - betas).cumprod(dim=0).index_select(0, t).view(-1, *([1] * (x0.ndim - 1)))
    x = x0 * a.sqrt() + e * (1.0 - a).sqrt()
    out = model_call(x, t.float())
    return (e - out).square().sum(dim=tuple(range(1, x0.ndim))).mean(dim=0), x


def record_diffpose(args, gen, io, files):
    gcndiff_mod, gcnpose_mod, ema_mod, utils = _import_from(
        args.diffpose_path, "models.gcndiff", "models.gcnpose", "models.ema", "common.utils_diff"
    )
    adj = gcndiff_mod.adj_mx_from_edges(num_pts=J, edges=torch.tensor(EDGES), sparse=False)
    h, L, heads = args.hidden, args.layers, args.heads
    diff = nn.DataParallel(gcndiff_mod.GCNdiff(adj, _config(h, L, heads, (5, 5))))
    pose = nn.DataParallel(gcnpose_mod.GCNpose(adj, _config(h, L, heads, (2, 3))))
    _perturb(diff.module, gen)
    _perturb(pose.module, gen)
    diff.eval()
    pose.eval()
    files["diffpose_tiny_gcndiff"] = _states(diff, ema_mod.EMAHelper, gen)
    files["diffpose_tiny_lifter"] = _states(pose, ema_mod.EMAHelper, gen)
    betas = _betas(utils)
    mask = torch.ones(1, 1, J, dtype=torch.bool)
    n = args.batch

    with torch.no_grad():
        x = torch.cat(
            [torch.rand(n, J, 2, generator=gen) * 2 - 1, 0.3 * torch.randn(n, J, 3, generator=gen)],
            -1,
        )
        t = torch.tensor([0, 7, 25, 50][:n] + [3] * max(0, n - 4))
        io.update(gcndiff_x_t=x, gcndiff_t=t, gcndiff_out=diff(x, mask, t.float(), 0))

        uv = torch.rand(n, J, 2, generator=gen) * 2 - 1
        io.update(lifter_pose_2d=uv, lifter_out=pose(uv, mask))

        # Training loss with a per-sample, per-joint uv scale (the GMM forward process).
        x0 = torch.cat([uv, 0.3 * torch.randn(n, J, 3, generator=gen)], -1)
        e = torch.randn(n, J, 5, generator=gen)
        scale = torch.cat(
            [0.05 + 0.5 * torch.rand(n, J, 2, generator=gen), torch.ones(n, J, 3)], -1
        )
        tt = torch.randint(0, 51, (n // 2 + 1,), generator=gen)
        tt = torch.cat([tt, 51 - tt - 1], 0)[:n]
        loss, _ = _train_loss(lambda xt, tf: diff(xt, mask, tf, 0), x0, e, scale, tt, betas)
        io.update(train_x0=x0, train_noise=e, train_noise_scale=scale, train_t=tt, train_loss=loss)

        # Refinement (test_hyber): lifter init, re-rooted; DDIM from T_test - skip to 0.
        inputs_xyz = pose(uv, mask)
        inputs_xyz = _reroot(inputs_xyz)
        x_init = torch.cat([uv, inputs_xyz], 2)
        io["refine_x_init"] = x_init
        for t_test, steps, eta in ((24, 2, 0.0), (12, 2, 0.0), (24, 2, 0.5)):
            tag = f"refine_{t_test}_{steps}_eta{eta:g}"
            torch.manual_seed(args.seed + t_test + steps)
            with d3dp_rec._NoiseRecorder() as rec:
                xs, x0s = utils.generalized_steps(
                    x_init.clone(), mask, _seq(t_test, steps), diff, betas, eta=eta
                )
            out = xs[-1][:, :, 2:].clone()
            out = _reroot(out)
            io[f"{tag}_xyz"] = out
            io[f"{tag}_x0_steps"] = torch.stack(x0s, 1)  # [N, K, J, 5]
            io[f"{tag}_noise"] = np.stack(rec.draws, 1)  # [N, K, J, 5]
    return diff


def record_video(args, gen, io, files, diff_sd):
    stand_in = d3dp_rec._install_timm_stand_in()
    mixste_mod, gcndiff_mod, utils = _import_from(
        args.diffpose_video_path, "models.mixste", "models.gcndiff", "common.utils_diff"
    )
    adj = gcndiff_mod.adj_mx_from_edges(num_pts=J, edges=torch.tensor(EDGES), sparse=False)
    h, L, heads = args.hidden, args.layers, args.heads
    diff = nn.DataParallel(gcndiff_mod.GCNdiff(adj, _config(h, L, heads, (5, 5))))
    diff.load_state_dict(diff_sd)
    f, c = args.frames, args.mixste_dim
    mixste = nn.DataParallel(
        mixste_mod.MixSTE2(
            num_frame=f,
            num_joints=J,
            in_chans=2,
            embed_dim_ratio=c,
            depth=args.mixste_depth,
            num_heads=8,
            mlp_ratio=2.0,
            qkv_bias=True,
            qk_scale=None,
            drop_path_rate=0,
        )
    )
    _perturb(mixste.module, gen)
    diff.eval()
    mixste.eval()
    files["diffpose_tiny_mixste"] = {"epoch": 5, "model_pos": mixste.state_dict()}
    betas = _betas(utils)
    mask = torch.ones(1, 1, J, dtype=torch.bool)
    b = 2
    with torch.no_grad():
        x2d = torch.rand(b, f, J, 2, generator=gen) * 2 - 1
        pred = mixste(x2d)
        io.update(video_pose_2d=x2d, mixste_out=pred)
        # test_per_action: MixSTE averaged with its mirror, then per-frame refinement.
        pred_flip = _flip(mixste(_flip(x2d)))
        pred = (pred + pred_flip) / 2
        x_init = torch.cat([x2d.reshape(b * f, J, 2), pred.reshape(b * f, J, 3)], 2)
        for t_test, steps in ((6, 1), (12, 2)):
            with d3dp_rec._NoiseRecorder():
                xs, _ = utils.generalized_steps(
                    x_init.clone(), mask, _seq(t_test, steps), diff, betas, eta=0.0
                )
            out = xs[-1][:, :, 2:].clone()
            out = _reroot(out)
            io[f"video_refine_{t_test}_{steps}_xyz"] = out.reshape(b, f, J, 3)
    return stand_in


def record_mmdiff(args, gen, io, files, lifter_sd):
    model_mod, graformer_mod, ema_mod, utils = _import_from(
        args.mmdiff_path,
        "models.model",
        "models.backbone.GraFormer",
        "models.diffusion.ema",
        "models.diffusion.utils",
    )
    edges_2d3d = EDGES + [[i, i + J] for i in range(J)] + (np.array(EDGES) + J).tolist()
    adj_2d3d = model_mod.adj_mx_from_edges(2 * J, torch.tensor(edges_2d3d), sparse=False)
    adj_ctx = model_mod.adj_mx_from_edges(J, torch.tensor(EDGES), sparse=False)
    h, L, heads = args.hidden, args.layers, args.heads
    model = model_mod.DiffModel(
        adj_2d3d=adj_2d3d,
        adj_ctx=adj_ctx,
        hid_dim=h,
        num_layers=L,
        n_head=heads,
        dropout=0.25,
        n_pts=2 * J,
        coords_dim=(3, 3),
    )
    _perturb(model, gen)
    model.eval()
    files["mmdiff_tiny_checkpoint"] = _states(model, ema_mod.EMAHelper, gen)
    # The lifter as the runner loads it: GraFormer in DataParallel, strict=False.
    lifter = nn.DataParallel(
        graformer_mod.GraFormer(
            adj=adj_ctx, hid_dim=h, num_layers=L, n_head=heads, dropout=0.25, n_pts=J
        )
    )
    result = lifter.load_state_dict(lifter_sd, strict=False)
    assert not result.missing_keys, result
    lifter.eval()
    betas = _betas(utils)
    mask = torch.ones(1, 1, J, dtype=torch.bool)
    n = args.batch
    with torch.no_grad():
        x = torch.cat(
            [
                torch.rand(n, 1, J, 2, generator=gen) * 2 - 1,
                0.3 * torch.randn(n, 1, J, 3, generator=gen),
            ],
            -1,
        )
        guide = torch.rand(n, 1, J, 2, generator=gen) * 2 - 1
        t = torch.tensor([0, 7, 25, 50][:n] + [3] * max(0, n - 4))
        out = model(x, guide, mask, t.float())
        io.update(model_x_t=x[:, 0], model_guide=guide[:, 0], model_t=t, model_out=out[:, 0])

        uv = torch.rand(n, 1, J, 2, generator=gen) * 2 - 1
        x0 = torch.cat([uv, 0.3 * torch.randn(n, 1, J, 3, generator=gen)], -1)
        e = torch.randn(n, 1, J, 5, generator=gen)
        scale = torch.tensor([0.1, 0.1, 1.0, 1.0, 1.0]).repeat(n, 1, J, 1)
        tt = torch.randint(0, 51, (n // 2 + 1,), generator=gen)
        tt = torch.cat([tt, 51 - tt - 1], 0)[:n]
        loss, _ = _train_loss(lambda xt, tf: model(xt, uv, mask, tf), x0, e, scale, tt, betas)
        io.update(train_x0=x0[:, 0], train_noise=e[:, 0], train_t=tt, train_loss=loss)

        # runner.test: lifter, re-root, DDIM from t=6; flip TTA runs the chain on the mirror.
        seq = _seq(12, 2)
        targets_2d = uv[:, 0]
        inputs_xyz = lifter(targets_2d, mask)
        inputs_xyz = _reroot(inputs_xyz)
        inputs_xyz, targets_2d = inputs_xyz.unsqueeze(1), targets_2d.unsqueeze(1)
        x_init = torch.cat((targets_2d, inputs_xyz), -1)
        with d3dp_rec._NoiseRecorder():
            xs, _ = utils.generalized_steps(
                x_init.clone(), targets_2d, mask, seq, model, betas, eta=0.0
            )
        out = xs[-1][..., 2:].clone()
        out = _reroot(out)
        out = out.squeeze(1)
        io.update(
            refine_pose_2d=targets_2d[:, 0],
            refine_lifter_xyz=inputs_xyz[:, 0],
            refine_noflip_xyz=out,
        )
        t2d_flip, xyz_flip = _flip(targets_2d), _flip(inputs_xyz)
        with d3dp_rec._NoiseRecorder():
            xs, _ = utils.generalized_steps(
                torch.cat((t2d_flip, xyz_flip), -1), t2d_flip, mask, seq, model, betas, eta=0.0
            )
        out_flip = xs[-1][..., 2:].clone()
        out_flip = _reroot(out_flip)
        out_flip = _flip(out_flip).squeeze(1)
        io["refine_flip_xyz"] = (out + out_flip) / 2


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--diffpose_path", required=True, help="checkout of GONGJIA0208/Diffpose")
    ap.add_argument("--diffpose_video_path", required=True, help="GONGJIA0208/Diffpose_video")
    ap.add_argument("--mmdiff_path", required=True, help="checkout of jjkislele/monoMotionDiff")
    ap.add_argument(
        "--output_dir",
        default=os.path.normpath(
            os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
        ),
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--frames", type=int, default=9)
    ap.add_argument("--mixste_dim", type=int, default=32)
    ap.add_argument("--mixste_depth", type=int, default=2)
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed + 1)
    files: dict = {}
    io_dp: dict = {}
    io_mm: dict = {}
    diff = record_diffpose(args, gen, io_dp, files)
    stand_in = record_video(args, gen, io_dp, files, diff.state_dict())
    lifter_sd = files["diffpose_tiny_lifter"][0]
    record_mmdiff(args, gen, io_mm, files, lifter_sd)

    hparams = dict(
        hidden=args.hidden,
        num_layers=args.layers,
        num_heads=args.heads,
        dropout=0.25,
        num_joints=J,
        batch=args.batch,
        frames=args.frames,
        mixste_dim=args.mixste_dim,
        mixste_depth=args.mixste_depth,
        mixste_heads=8,
        schedule="linear",
        num_timesteps=51,
        joints_left=JOINTS_LEFT,
        joints_right=JOINTS_RIGHT,
        seed=args.seed,
        torch_version=torch.__version__,
        timm_stand_in=stand_in,
    )
    os.makedirs(args.output_dir, exist_ok=True)
    for name, io in (("diffpose_tiny_io", io_dp), ("mmdiff_tiny_io", io_mm)):
        io = {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in io.items()}
        io["hparams_json"] = np.asarray(json.dumps(hparams))
        files[name] = io
    total = 0
    for name, tree in files.items():
        path = os.path.join(args.output_dir, f"{name}.npz")
        np.savez_compressed(path, **d3dp_rec._flatten(tree))
        total += os.path.getsize(path)
        print(f"wrote {path} ({os.path.getsize(path) / 1024:.1f} KiB)")
    print(f"total {total / 1024:.1f} KiB")
    print(json.dumps(hparams))


if __name__ == "__main__":
    main()
