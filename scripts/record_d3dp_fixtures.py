r"""Records D3DP reference numbers for the converter tests (needs PyTorch, not JAX).

Builds the reference D3DP (``common/diffusionpose.py``, MixSTE2 denoiser) at a
reduced size with seeded random weights, runs its denoiser in both calling
modes and its flip-TTA DDIM sampler with recorded noise, and writes:

* ``d3dp_tiny_checkpoint.npz``: the checkpoint dict D3DP's ``main.py`` saves
  (``epoch``, ``lr``, ``random_state``, ``optimizer``, ``model_pos``), flattened
  with ``/`` (``model_pos/module.pose_estimator.STEblocks.0.attn.qkv.weight``),
  keys, ``module.`` prefix and float64 diffusion buffers as in a real file;
* ``d3dp_tiny_io.npz``: hyper-parameters, inputs, outputs and every
  ``torch.randn``/``torch.randn_like`` draw of the sampler.

Optionally also ``torch.save``s the same checkpoint (``--torch_checkpoint``),
to try ``pose_jax.convert.load_torch_checkpoint`` by hand; that file is not
meant to be committed.

The reference code is imported from a checkout the user provides; nothing of it
is copied here::

  python scripts/record_d3dp_fixtures.py --d3dp_path=/tmp/d3dp_ref \
      --output_dir=tests/fixtures --torch_checkpoint=/tmp/d3dp_tiny.bin

Runs on CPU: the reference hard-codes ``.cuda()``/``device='cuda'`` in its
sampler, which are redirected to the CPU while recording. If ``timm`` cannot be
imported (it needs a torchvision built for the installed torch), a stand-in
provides the few names ``common/mixste.py`` imports; only ``DropPath``
computes anything, and it is the identity in eval mode, where everything here
runs.
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

# H36M-17 as in VideoPose3D (the reference takes them from its dataset skeleton).
JOINTS_LEFT = [4, 5, 6, 11, 12, 13]
JOINTS_RIGHT = [1, 2, 3, 14, 15, 16]
NUM_JOINTS = 17

DIFFUSION_BUFFERS = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
)


def _install_timm_stand_in() -> bool:
    """Makes ``common/mixste.py``'s timm imports work; True if a stand-in was used."""
    try:
        import timm.models.layers  # noqa: F401

        return False
    except Exception:  # timm missing, or its torchvision does not match torch
        for name in [m for m in sys.modules if m == "timm" or m.startswith("timm.")]:
            del sys.modules[name]

    class DropPath(nn.Module):
        """Per-sample stochastic depth (timm semantics); identity in eval mode."""

        def __init__(self, drop_prob=0.0):
            super().__init__()
            self.drop_prob = drop_prob

        def forward(self, x):
            if self.drop_prob == 0.0 or not self.training:
                return x
            keep = 1.0 - self.drop_prob
            mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
            return x * mask / keep

    def _unused(*args, **kwargs):
        raise NotImplementedError("timm stand-in: not needed for recording D3DP fixtures")

    mods = {n: types.ModuleType(n) for n in
            ("timm", "timm.data", "timm.models", "timm.models.helpers",
             "timm.models.layers", "timm.models.registry")}  # fmt: skip
    mods["timm.data"].IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
    mods["timm.data"].IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)
    mods["timm.models.helpers"].load_pretrained = _unused
    mods["timm.models.layers"].DropPath = DropPath
    mods["timm.models.layers"].to_2tuple = lambda x: x if isinstance(x, tuple) else (x, x)
    mods["timm.models.layers"].trunc_normal_ = nn.init.trunc_normal_
    mods["timm.models.registry"].register_model = lambda fn: fn
    sys.modules.update(mods)
    return True


class _NoiseRecorder:
    """Wraps ``torch.randn``/``torch.randn_like`` (CPU only) and keeps every draw."""

    def __init__(self):
        self.draws: list[np.ndarray] = []
        self._randn, self._randn_like, self._cuda = torch.randn, torch.randn_like, torch.Tensor.cuda

    def __enter__(self):
        def randn(*size, **kwargs):
            kwargs.pop("device", None)
            out = self._randn(*size, **kwargs)
            self.draws.append(out.numpy().copy())
            return out

        def randn_like(x, **kwargs):
            kwargs.pop("device", None)
            out = self._randn_like(x, **kwargs)
            self.draws.append(out.numpy().copy())
            return out

        torch.randn, torch.randn_like = randn, randn_like
        torch.Tensor.cuda = lambda self, *a, **k: self
        return self

    def __exit__(self, *exc):
        torch.randn, torch.randn_like, torch.Tensor.cuda = self._randn, self._randn_like, self._cuda


def _perturb(model: nn.Module, gen: torch.Generator) -> None:
    """Moves the zero-initialised position tables and the LayerNorm affines off their init."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("_pos_embed"):
                p.copy_(0.3 * noise)
            elif p.ndim == 1 and (
                "norm" in name.lower() or name.startswith("pose_estimator.head.0")
            ):
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * noise)


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


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--d3dp_path", required=True, help="checkout of paTRICK-swk/D3DP")
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
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--hypotheses", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=3)
    args = ap.parse_args(argv)

    stand_in = _install_timm_stand_in()
    sys.path.insert(0, os.path.abspath(args.d3dp_path))
    from common.diffusionpose import D3DP  # the reference, from the user's checkout

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed + 1)
    B, H, F, J, K = args.batch, args.hypotheses, args.frames, NUM_JOINTS, args.iterations
    ref_args = argparse.Namespace(
        number_of_frames=F, test_time_augmentation=True, timestep=1000, scale=1.0,
        cs=args.embed_dim, dep=args.depth,
    )  # fmt: skip

    # As main.py: a training model (saved), and sampling models loaded from its state dict.
    model_train = nn.DataParallel(D3DP(ref_args, JOINTS_LEFT, JOINTS_RIGHT, is_train=True))
    _perturb(model_train.module, gen)
    state_dict = model_train.state_dict()
    samplers = {}
    for k in sorted({K, 1}):
        m = D3DP(
            ref_args,
            JOINTS_LEFT,
            JOINTS_RIGHT,
            is_train=False,
            num_proposals=H,
            sampling_timesteps=k,
        )
        m = nn.DataParallel(m)
        result = m.load_state_dict(state_dict, strict=False)
        assert not result.missing_keys and not result.unexpected_keys, result
        samplers[k] = m.eval()
    model_train.eval()  # no dropout / drop-path: the numbers are the inference ones

    optimizer = torch.optim.AdamW(model_train.parameters(), lr=6e-5, weight_decay=0.1)
    checkpoint = {
        "epoch": 7,
        "lr": 6e-5,
        "random_state": np.random.RandomState(args.seed).get_state(),
        "optimizer": optimizer.state_dict(),
        "model_pos": state_dict,
    }

    rnd = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    io: dict[str, np.ndarray] = {}
    with torch.no_grad():
        # Denoiser, training-mode call: x2d [B,F,J,2], x_t [B,F,J,3], t [B].
        x2d = torch.rand(B, F, J, 2, generator=gen) * 2 - 1
        x3d = 0.6 * rnd(B, F, J, 3)
        t = torch.randint(0, 1000, (B,), generator=gen)
        out = model_train.module.pose_estimator(x2d, x3d, t)
        io.update(train_pose_2d=x2d, train_x_t=x3d, train_t=t, train_out=out)

        # Denoiser, sampling-mode call: x2d [B,F,J,2], x_t [B,H,F,J,3], t [B].
        x2d = torch.rand(B, F, J, 2, generator=gen) * 2 - 1
        x3d = 0.6 * rnd(B, H, F, J, 3)
        t = torch.randint(0, 1000, (B,), generator=gen)
        out = samplers[K].module.pose_estimator(x2d, x3d, t)
        io.update(test_pose_2d=x2d, test_x_t=x3d, test_t=t, test_out=out)

        # Full sampler with flip TTA; 2D flipped as main.py does (kps == joints for H36M).
        x2d = torch.rand(B, F, J, 2, generator=gen) * 2 - 1
        x2d_flip = x2d.clone()
        x2d_flip[:, :, :, 0] *= -1
        x2d_flip[:, :, JOINTS_LEFT + JOINTS_RIGHT, :] = x2d_flip[
            :, :, JOINTS_RIGHT + JOINTS_LEFT, :
        ]
        io.update(sample_pose_2d=x2d, sample_pose_2d_flip=x2d_flip)
        for k, m in samplers.items():
            torch.manual_seed(args.seed + 100 + k)
            with _NoiseRecorder() as rec:
                x0_steps = m(x2d, torch.zeros(B, F, J, 3), input_2d_flip=x2d_flip)  # [B,K,H,F,J,3]
            assert len(rec.draws) == k, len(rec.draws)
            io[f"sample_k{k}_noise_init"] = rec.draws[0]
            if k > 1:
                io[f"sample_k{k}_noise_steps"] = np.stack(rec.draws[1:])  # [K-1,B,H,F,J,3]
            io[f"sample_k{k}_x0_steps"] = x0_steps

    hparams = dict(
        num_frames=F, num_joints=J, embed_dim=args.embed_dim, depth=args.depth, num_heads=8,
        mlp_ratio=2.0, timestep=1000, scale=1.0, batch=B, num_proposals=H,
        sampling_timesteps=sorted(samplers), joints_left=JOINTS_LEFT, joints_right=JOINTS_RIGHT,
        seed=args.seed, torch_version=torch.__version__, timm_stand_in=stand_in,
    )  # fmt: skip
    io = {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in io.items()}
    io["hparams_json"] = np.asarray(json.dumps(hparams))

    os.makedirs(args.output_dir, exist_ok=True)
    ckpt_path = os.path.join(args.output_dir, "d3dp_tiny_checkpoint.npz")
    io_path = os.path.join(args.output_dir, "d3dp_tiny_io.npz")
    np.savez_compressed(ckpt_path, **_flatten(checkpoint))
    np.savez_compressed(io_path, **io)
    for p in (ckpt_path, io_path):
        print(f"wrote {p} ({os.path.getsize(p) / 1024:.1f} KiB)")
    if args.torch_checkpoint:
        torch.save(checkpoint, args.torch_checkpoint)
        size_kib = os.path.getsize(args.torch_checkpoint) / 1024
        print(f"wrote {args.torch_checkpoint} ({size_kib:.1f} KiB)")
    print(json.dumps(hparams))


if __name__ == "__main__":
    main()
