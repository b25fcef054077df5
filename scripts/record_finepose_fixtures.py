r"""Records FinePOSE reference numbers for the converter tests (needs PyTorch, not JAX).

Builds the reference FinePOSE (``common/finepose.py`` + ``common/mixste_finepose.py``,
and the 3DHP pair) at a reduced size with seeded random weights, runs its
denoiser and its flip-TTA DDIM sampler with recorded noise, and writes:

* ``finepose_tiny_checkpoint.npz``: the checkpoint dict FinePOSE's ``main.py``
  saves (``epoch``, ``lr``, ``random_state``, ``optimizer``, ``model_pos``),
  flattened with ``/``, keys as in a real file: ``module.pose_estimator.*``
  including the embedded CLIP model (``clip_text.*``, visual tower too) and the
  ``ctx_*`` vectors, plus the float64 diffusion buffers;
* ``finepose_tiny_io.npz``: hyper-parameters, token inputs, denoiser inputs and
  outputs (training-shaped call with two different actions, so the reference's
  prompt-row tiling shows; hypotheses-shaped call), the sampler's outputs and
  every noise draw, the 3DHP variant's state dict and one denoiser call, and the
  reference tokenizer's ids of the words pose_jax records
  (``pose_jax.text.KNOWN_TOKEN_IDS``).

Reduced size: the reference hard-codes the prompt branch's width (512), the
prompt encoder's FFN (2048) and depth (4) as literals; the recorder loads
``mixste_finepose*.py`` from the checkout, replaces exactly those literals by
the reduced values (asserting how many it replaced) and runs the result; nothing
else of the reference changes. ``clip.load`` is replaced by a small CLIP built
with the ``CLIP`` class of the ``openai-clip`` package (``clip/model.py``,
loaded by path so torchvision is not needed) and ``clip.tokenize`` by the same
package's ``SimpleTokenizer`` with ``clip.tokenize``'s padding/truncation. To
keep the fixture small, the unused visual tower is zeroed and only the token
table rows the prompts use are non-zero.

  pip install openai-clip   # (+ torch, einops) in the recording environment
  python scripts/record_finepose_fixtures.py --finepose_path=/tmp/finepose_ref \
      --output_dir=tests/fixtures
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import sys
import types

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from record_d3dp_fixtures import (
    JOINTS_LEFT,
    JOINTS_RIGHT,
    NUM_JOINTS,
    _flatten,
    _install_timm_stand_in,
    _NoiseRecorder,
    _perturb,
)

CONTEXT = 77
PRE_TEXT = ["A person", "speed", "head", "body", "arm", "leg"]
H36M_ACTIONS = (
    "Directions", "Discussion", "Eating", "Greeting", "Phoning", "Photo", "Posing",
    "Purchases", "Sitting", "SittingDown", "Smoking", "Waiting", "WalkDog", "Walking",
    "WalkTogether",
)  # fmt: skip
KNOWN_WORDS = [*PRE_TEXT, "unknown", *H36M_ACTIONS]
# literal -> (replacement name, occurrences in mixste_finepose.py, in mixste_finepose_3dhp.py)
LITERALS = {
    r"\b512\b": ("_W", 14, 13),
    r"\b2048\b": ("_FF", 1, 1),
    r"num_layers=4\b": (None, 1, 1),
}


def _load_by_path(name: str, path: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _clip_package_dir() -> str:
    spec = importlib.util.find_spec("clip")  # located, not imported (it needs torchvision)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("record_finepose_fixtures: `pip install openai-clip` first.")
    return next(iter(spec.submodule_search_locations))


def _install_clip_stand_in(width: int, layers: int, heads: int, seed: int) -> types.ModuleType:
    """A ``clip`` module: ``load`` gives a reduced CLIP, ``tokenize`` is clip.tokenize's."""
    folder = _clip_package_dir()
    model_mod = _load_by_path("_clip_model", os.path.join(folder, "model.py"))
    tok_mod = _load_by_path("_clip_simple_tokenizer", os.path.join(folder, "simple_tokenizer.py"))
    tokenizer = tok_mod.SimpleTokenizer()
    sot, eot = tokenizer.encoder["<|startoftext|>"], tokenizer.encoder["<|endoftext|>"]

    def tokenize(texts, context_length=CONTEXT, truncate=False):
        texts = [texts] if isinstance(texts, str) else texts
        out = torch.zeros(len(texts), context_length, dtype=torch.int)
        for i, text in enumerate(texts):
            ids = [sot, *tokenizer.encode(text), eot]
            if len(ids) > context_length:
                if not truncate:
                    raise RuntimeError(f"{text!r} is too long")
                ids = ids[:context_length]
                ids[-1] = eot
            out[i, : len(ids)] = torch.tensor(ids)
        return out

    def load(name, device="cpu", jit=False):
        del name, device, jit
        torch.manual_seed(seed)
        model = model_mod.CLIP(
            embed_dim=16, image_resolution=8, vision_layers=1, vision_width=64,
            vision_patch_size=8, context_length=CONTEXT, vocab_size=49408,
            transformer_width=width, transformer_heads=heads, transformer_layers=layers,
        )  # fmt: skip
        used = set(tokenize(KNOWN_WORDS).flatten().tolist())
        with torch.no_grad():
            for p in model.visual.parameters():
                p.zero_()
            keep = torch.zeros(49408, 1, dtype=torch.bool)
            keep[sorted(used)] = True
            table = model.token_embedding.weight
            table.copy_(torch.where(keep, table, torch.zeros_like(table)))  # +0.0, not -0.0
        return model.float().eval(), None

    mod = types.ModuleType("clip")
    mod.load, mod.tokenize = load, tokenize
    mod.encode_words = lambda words: {w: tokenizer.encode(w) for w in words}
    sys.modules["clip"] = mod
    return mod


def _load_reduced(finepose_path: str, stem: str, width: int, ffn: int, text_layers: int):
    """``common/<stem>.py`` with the prompt branch's literal sizes replaced; registered."""
    with open(os.path.join(finepose_path, "common", f"{stem}.py")) as f:
        src = f.read()
    for pattern, (name, *counts) in LITERALS.items():
        count = counts[stem.endswith("_3dhp")]
        found = len(re.findall(pattern, src))
        assert found == count, (stem, pattern, found)
        repl = f"num_layers={text_layers}" if name is None else name
        src = re.sub(pattern, repl, src)
    mod = types.ModuleType(f"common.{stem}")
    mod.__file__ = os.path.join(finepose_path, "common", f"{stem}.py")
    mod._W, mod._FF = width, ffn
    sys.modules[f"common.{stem}"] = mod
    exec(compile(src, mod.__file__, "exec"), mod.__dict__)
    return mod


def _perturb_prompt_branch(model: nn.Module, gen: torch.Generator) -> None:
    """Moves the zero-initialised PTS output and the prompt-branch LayerNorms off their init."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if "proj_out.out_layers.2" in name:
                p.copy_(0.2 * noise)
            elif p.ndim == 1 and ("text_ln" in name or ".ln_" in name):
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * noise)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--finepose_path", required=True, help="checkout of FinePOSE_CVPR2024")
    ap.add_argument(
        "--output_dir",
        default=os.path.normpath(
            os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
        ),
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--frames", type=int, default=9)
    ap.add_argument("--width", type=int, default=32, help="backbone = prompt width")
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--ffn", type=int, default=64)
    ap.add_argument("--text_layers", type=int, default=2)
    ap.add_argument("--clip_layers", type=int, default=2)
    ap.add_argument("--clip_heads", type=int, default=4)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--hypotheses", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=3)
    args = ap.parse_args(argv)

    stand_in = _install_timm_stand_in()
    clip = _install_clip_stand_in(args.width, args.clip_layers, args.clip_heads, args.seed + 7)
    sys.path.insert(0, os.path.abspath(args.finepose_path))
    red = dict(width=args.width, ffn=args.ffn, text_layers=args.text_layers)
    _load_reduced(args.finepose_path, "mixste_finepose", **red)
    _load_reduced(args.finepose_path, "mixste_finepose_3dhp", **red)
    from common.finepose import FinePOSE  # the reference, on the reduced modules above
    from common.finepose_3dhp import FinePOSE as FinePOSE3DHP

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed + 1)
    B, H, F, J, K = args.batch, args.hypotheses, args.frames, NUM_JOINTS, args.iterations
    ref_args = argparse.Namespace(
        number_of_frames=F, test_time_augmentation=True, timestep=1000, scale=1.0,
        cs=args.width, dep=args.depth,
    )  # fmt: skip

    model_train = nn.DataParallel(FinePOSE(ref_args, JOINTS_LEFT, JOINTS_RIGHT, is_train=True))
    _perturb(model_train.module, gen)
    _perturb_prompt_branch(model_train.module, gen)
    state_dict = model_train.state_dict()
    samplers = {}
    for k in sorted({K, 1}):
        m = FinePOSE(
            ref_args, JOINTS_LEFT, JOINTS_RIGHT, is_train=False, num_proposals=H,
            sampling_timesteps=k,
        )  # fmt: skip
        m = nn.DataParallel(m)
        result = m.load_state_dict(state_dict, strict=True)
        assert not result.missing_keys and not result.unexpected_keys, result
        samplers[k] = m.eval()
    model_train.eval()

    optimizer = torch.optim.AdamW(model_train.parameters(), lr=6e-5, weight_decay=0.1)
    checkpoint = {
        "epoch": 7,
        "lr": 6e-5,
        "random_state": np.random.RandomState(args.seed).get_state(),
        "optimizer": optimizer.state_dict(),
        "model_pos": state_dict,
    }

    pre_text = clip.tokenize(PRE_TEXT)  # [6, 77], as main.py builds it
    rnd = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    io: dict[str, np.ndarray] = {"pre_text": pre_text}
    pe = lambda m: m.module.pose_estimator  # noqa: E731
    with torch.no_grad():
        # Training-shaped call with two different actions (the row tiling shows).
        actions = ["Phoning", "SittingDown"][:B] + ["Directions"] * max(0, B - 2)
        text = clip.tokenize(actions, truncate=True)
        x2d = torch.rand(B, F, J, 2, generator=gen) * 2 - 1
        x3d = 0.6 * rnd(B, F, J, 3)
        t = torch.randint(0, 1000, (B,), generator=gen)
        out = pe(model_train)(x2d, x3d, t, text, pre_text[None].repeat(B, 1, 1))
        io.update(train_actions=np.asarray(actions), train_text=text, train_pose_2d=x2d)
        io.update(train_x_t=x3d, train_t=t, train_out=out)

        # Hypotheses-shaped call; one action for the batch, as the evaluation has.
        text = clip.tokenize(["WalkDog"] * B, truncate=True)
        x2d = torch.rand(B, F, J, 2, generator=gen) * 2 - 1
        x3d = 0.6 * rnd(B, H, F, J, 3)
        t = torch.randint(0, 1000, (B,), generator=gen)
        out = pe(samplers[K])(x2d, x3d, t, text, pre_text[None].repeat(B, 1, 1))
        io.update(test_action=np.asarray("WalkDog"), test_text=text, test_pose_2d=x2d)
        io.update(test_x_t=x3d, test_t=t, test_out=out)

        # Full sampler with flip TTA (main.py's flip of the 2D input).
        text = clip.tokenize(["Eating"] * B, truncate=True)
        x2d = torch.rand(B, F, J, 2, generator=gen) * 2 - 1
        x2d_flip = x2d.clone()
        x2d_flip[:, :, :, 0] *= -1
        x2d_flip[:, :, JOINTS_LEFT + JOINTS_RIGHT, :] = x2d_flip[
            :, :, JOINTS_RIGHT + JOINTS_LEFT, :
        ]
        io.update(sample_action=np.asarray("Eating"), sample_text=text)
        io.update(sample_pose_2d=x2d, sample_pose_2d_flip=x2d_flip)
        pre = pre_text[None].repeat(B, 1, 1)
        for k, m in samplers.items():
            torch.manual_seed(args.seed + 100 + k)
            with _NoiseRecorder() as rec:
                x0_steps = m(x2d, torch.zeros(B, F, J, 3), text, pre, input_2d_flip=x2d_flip)
            assert len(rec.draws) == k, len(rec.draws)
            io[f"sample_k{k}_noise_init"] = rec.draws[0]
            if k > 1:
                io[f"sample_k{k}_noise_steps"] = np.stack(rec.draws[1:])  # [K-1,B,H,F,J,3]
            io[f"sample_k{k}_x0_steps"] = x0_steps

        # 3DHP variant (no action segment, pooled index 76): its own weights, one call.
        model_3dhp = FinePOSE3DHP(ref_args, JOINTS_LEFT, JOINTS_RIGHT, is_train=True)
        _perturb(model_3dhp, gen)
        _perturb_prompt_branch(model_3dhp, gen)
        model_3dhp.eval()
        x2d = torch.rand(B, F, J, 2, generator=gen) * 2 - 1
        x3d = 0.6 * rnd(B, F, J, 3)
        t = torch.randint(0, 1000, (B,), generator=gen)
        out = model_3dhp.pose_estimator(x2d, x3d, t, pre_text[None].repeat(B, 1, 1))
        io.update(hp3d_pose_2d=x2d, hp3d_x_t=x3d, hp3d_t=t, hp3d_out=out)
        sd_3dhp = {f"module.{k}": v for k, v in model_3dhp.state_dict().items()}

    hparams = dict(
        num_frames=F, num_joints=J, embed_dim=args.width, depth=args.depth, num_heads=8,
        mlp_ratio=2.0, text_width=args.width, text_ffn_dim=args.ffn,
        text_layers=args.text_layers, clip_layers=args.clip_layers, clip_heads=args.clip_heads,
        timestep=1000, scale=1.0, batch=B, num_proposals=H,
        sampling_timesteps=sorted(samplers), joints_left=JOINTS_LEFT, joints_right=JOINTS_RIGHT,
        seed=args.seed, torch_version=torch.__version__, timm_stand_in=stand_in,
    )  # fmt: skip
    io = {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in io.items()}
    io["hparams_json"] = np.asarray(json.dumps(hparams))
    io["known_words_json"] = np.asarray(json.dumps(clip.encode_words(KNOWN_WORDS)))

    os.makedirs(args.output_dir, exist_ok=True)
    ckpt_path = os.path.join(args.output_dir, "finepose_tiny_checkpoint.npz")
    io_path = os.path.join(args.output_dir, "finepose_tiny_io.npz")
    np.savez_compressed(ckpt_path, **_flatten(checkpoint))
    np.savez_compressed(io_path, **io, **_flatten({"hp3d_model_pos": sd_3dhp}))
    for p in (ckpt_path, io_path):
        print(f"wrote {p} ({os.path.getsize(p) / 1024:.1f} KiB)")
    print(json.dumps(hparams))


if __name__ == "__main__":
    main()
