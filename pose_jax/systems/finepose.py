"""FinePOSE (CVPR'24): D3DP's diffusion with a fine-grained, part-aware text prompt.

PKU-ICST-MIPL/FinePOSE_CVPR2024 (common/mixste_finepose.py, main.py).
Training and sampling are D3DP's (:class:`~pose_jax.systems.d3dp.D3DPSystem`);
what changes is the denoiser (:class:`~pose_jax.models.finepose.FinePOSEDenoiser`)
and the prompt that conditions it. Prompt features (CLIP -> prompt encoder ->
``P``, ``xf_proj``) are computed once per clip batch and passed to every
denoiser call in ``cond`` (the reference recomputes them at every call).

Frozen weights are not parameters here: CLIP's text tower (and, in
``'reference'`` mode, the context vectors) live in :attr:`FinePOSESystem.frozen`,
outside the optimizer, so no weight decay or optimizer state touches them
(PyTorch's AdamW skips parameters without gradients). The trainable tree the
training loop sees is the model's tree minus those leaves; :meth:`full_params`
puts them back. In ``'reference'`` mode nothing upstream of the prompt encoder
is trained, so CLIP's output for every prompt of the vocabulary is computed
once when the system is built (:attr:`FinePOSESystem.clip_table`) and CLIP never
runs in the training step.

Variants (``config.model.finepose_variant``, the system's ``mode``):

* ``'reference'``: as the released code: context vectors frozen at their
  initialisation, the ground-truth action word at test time too, and the
  training batch's prompt rows aligned as the reference's ``repeat``
  (``r mod b``, ``config.model.prompt_groups`` chunks as under ``DataParallel``).
* ``'paper'``: context vectors trained (gradients flow through the frozen CLIP),
  each clip its own prompt, and the action word replaced by an action-agnostic
  word with probability ``config.model.action_dropout`` while training, so that
  ``config.eval.action_source='none'`` (the agnostic prompt for every clip, no
  label needed) is a trained condition.

Prompt vocabulary (:attr:`FinePOSESystem.prompt_words`): H36M layout, rows
0..14 the action classes of ``data_pipelines.common.H36M_ACTIONS`` (the batch's
``'action'`` index), row 15 the agnostic word (``config.model.agnostic_word``,
``'unknown'``); 3DHP layout: one row (the prompt has no action).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pose_jax import _checks, diffusion, text
from pose_jax import sharding as sharding_lib
from pose_jax.models import ModelFns, get_model, make_model_fns
from pose_jax.models.finepose import (
    PROMPT_LAYOUTS,
    SEGMENT_WORDS,
    WORD_TOKENS,
    FinePOSEDenoiser,
    PromptBranch,
)
from pose_jax.systems.base import SamplerInputs, SamplerSpec, input_layout, model_kwargs
from pose_jax.systems.d3dp import D3DPSystem

Array = jax.Array

MODES = ("reference", "paper")
ACTION_SOURCES = ("ground_truth", "none")
# The 15 Human3.6M classes in data_pipelines.common.H36M_ACTIONS order (the batch's
# 'action' index); pose_jax does not import data_pipelines.
H36M_ACTIONS = (
    "Directions", "Discussion", "Eating", "Greeting", "Phoning", "Photo", "Posing",
    "Purchases", "Sitting", "SittingDown", "Smoking", "Waiting", "WalkDog", "Walking",
    "WalkTogether",
)  # fmt: skip
# Frozen whatever the mode: CLIP's text tower, under params['prompt'].
CLIP_KEY = "clip_text"
# XLA options of programs that run once per system (the CLIP feature table):
# compiling fast matters more than running fast.
_ONCE = {"xla_backend_optimization_level": 0}


def prompt_tokens(layout: str, action: str | None = None) -> tuple[np.ndarray, int]:
    """One prompt's segment tokens, as the reference builds them from ``clip.tokenize``.

    Args:
      layout: ``'h36m'`` or ``'3dhp'``.
      action: the action text (H36M layout; e.g. ``'SittingDown'``), ignored for 3DHP.

    Returns:
      ``(words [S, 4] int32, pool_index)``: the first 4 tokens of each segment's
      77-token tokenisation (start marker, word pieces, end marker / padding), and
      the position ``xf_proj`` reads: the argmax of the action's tokenisation (its
      end marker) for H36M, 76 for 3DHP.
    """
    segments = PROMPT_LAYOUTS[layout]
    rows, pool = [], 76
    for name, _ in segments:
        if name == "action":
            if action is None:
                raise ValueError(f"prompt_tokens: layout {layout!r} needs an action text.")
            ids = text.tokenize(action)[0]
            pool = int(np.argmax(ids))
        else:
            ids = text.tokenize(SEGMENT_WORDS[name])[0]
        rows.append(ids[:WORD_TOKENS])
    return np.stack(rows).astype(np.int32), pool


def frozen_names(mode: str, layout: str) -> tuple[str, ...]:
    """Leaves of ``params['prompt']`` not trained in ``mode`` (CLIP; + ctx in reference)."""
    if mode == "reference":
        return (CLIP_KEY, *(f"ctx_{s}" for s, _ in PROMPT_LAYOUTS[layout]))
    return (CLIP_KEY,)


def split_params(full_params: Mapping[str, Any], mode: str, layout: str) -> tuple[dict, dict]:
    """``(trainable, frozen)`` of a full FinePOSE tree (e.g. a converted checkpoint's);
    ``frozen`` is what :meth:`FinePOSESystem.from_config` takes as ``frozen_params``."""
    trainable, frozen = _split(full_params, frozen_names(mode, layout))
    return trainable, jax.tree.map(np.asarray, frozen)


def _split(tree: Mapping[str, Any], frozen_names: tuple[str, ...]) -> tuple[dict, dict]:
    """``(trainable, frozen)``: ``params["prompt"][name]`` moved out for ``frozen_names``."""
    trainable = dict(tree)
    prompt = dict(trainable.get("prompt", {}))
    frozen = {k: prompt.pop(k) for k in frozen_names if k in prompt}
    trainable["prompt"] = prompt
    return trainable, {"prompt": frozen}


@dataclasses.dataclass(frozen=True, eq=False)
class FinePOSESystem(D3DPSystem):
    """Pure training and sampling functions of FinePOSE.

    Attributes (besides :class:`D3DPSystem`'s; ``model`` gives every row its own
    prompt and is what sampling uses):
      train_model: the denoiser used by the loss (``'tile'`` rows in reference mode).
      mode: ``'reference'`` or ``'paper'``.
      frozen: ``{'prompt': {'clip_text': ..., ['ctx_*': ...]}}`` numpy arrays.
      prompt_words: ``[A, S, 4]`` int32 token table of the prompt vocabulary.
      pool_index: ``[A]`` int32, the pooled position of each prompt.
      agnostic_id: row of the action-agnostic prompt.
      clip_table: ``[A, 77, D]`` CLIP features of every prompt (reference mode) or None.
      action_dropout: training probability of the agnostic prompt (paper mode).
      clip_source: where CLIP's weights came from (reported in the protocol).
    """

    train_model: ModelFns | None = None
    mode: str = "reference"
    frozen: Any = None
    prompt_words: np.ndarray | None = None
    pool_index: np.ndarray | None = None
    agnostic_id: int = 0
    clip_table: np.ndarray | None = None
    action_dropout: float = 0.0
    agnostic_word: str = "unknown"
    clip_source: str = "random"

    # -- construction -------------------------------------------------------------

    @classmethod
    def from_config(
        cls,
        config: Any,
        *,
        skeleton: str = "h36m",
        keypoints: str | None = None,
        frozen_params: Any = None,
    ) -> FinePOSESystem:
        """Builds the system from ``config.model/data/diffusion``.

        ``config.model``: ``name`` (a FinePOSE variant), ``drop_path_rate``, optional
        ``kwargs`` (model overrides, e.g. a converted checkpoint's ``model_kwargs``), ``mode``,
        ``clip_weights`` (path or None: seeded random CLIP, for tests only),
        ``frozen_seed``, ``prompt_groups``, ``action_dropout``, ``agnostic_word``.
        ``frozen_params``: the frozen leaves to use instead (e.g. from a converted
        checkpoint, see :meth:`with_full_params`).
        """
        m = config.model
        mode = m.get("finepose_variant", "reference")
        _checks.check_choice("FinePOSESystem", "mode", mode, MODES)
        overrides = {
            "num_frames": config.data.num_frames,
            "drop_path_rate": m.drop_path_rate,
            **model_kwargs(config),
        }
        module = get_model(m.name, **overrides)
        if not isinstance(module, FinePOSEDenoiser):
            raise ValueError(
                f"FinePOSESystem: config.model.name={m.name!r} is not a FinePOSE model."
            )
        train_module = module
        if mode == "reference":
            train_module = module.clone(
                prompt_alignment="tile", prompt_groups=int(m.get("prompt_groups", 1))
            )
        layout = module.prompt_layout
        agnostic = m.get("agnostic_word", "unknown")
        if layout == "h36m":
            toks = [prompt_tokens(layout, a) for a in (*H36M_ACTIONS, agnostic)]
        else:
            toks = [prompt_tokens(layout)]
        words = np.stack([w for w, _ in toks])
        pool = np.asarray([p for _, p in toks], np.int32)
        clip_source = "given" if frozen_params is not None else "random"
        if frozen_params is None:
            frozen_params, clip_source = _make_frozen(
                module, mode, words, pool, m.get("clip_weights"), int(m.get("frozen_seed", 0))
            )
        schedule = diffusion.make_schedule(config.diffusion.schedule, config.diffusion.num_steps)
        system = cls(
            make_model_fns(module),
            schedule,
            scale=config.diffusion.scale,
            clip=config.diffusion.clip,
            skeleton=skeleton,
            keypoints=input_layout("FinePOSE", skeleton, keypoints, any_layout=True),
            train_model=make_model_fns(train_module),
            mode=mode,
            frozen=frozen_params,
            prompt_words=words,
            pool_index=pool,
            agnostic_id=len(toks) - 1,
            action_dropout=float(m.get("action_dropout", 0.0)),
            agnostic_word=agnostic if layout == "h36m" else "",
            clip_source=clip_source,
        )
        return system._with_clip_table()

    def _with_clip_table(self) -> FinePOSESystem:
        """Reference mode: CLIP's features of every prompt, computed once."""
        if self.mode != "reference":
            return dataclasses.replace(self, clip_table=None)
        branch = self._branch()
        feats = jax.jit(
            lambda p, w: branch.apply({"params": p}, w, method=PromptBranch.clip_features),
            compiler_options=_ONCE,
        )(self.frozen["prompt"], self.prompt_words)
        return dataclasses.replace(self, clip_table=np.asarray(feats))

    def _branch(self) -> PromptBranch:
        return self.model.module.prompt_branch(name=None)

    @property
    def frozen_names(self) -> tuple[str, ...]:
        """Leaves of ``params['prompt']`` that are not trained in this mode."""
        return frozen_names(self.mode, self.model.module.prompt_layout)

    def with_full_params(self, full_params: Any) -> tuple[FinePOSESystem, Any]:
        """``(system, trainable)`` for a full tree (e.g. ``convert_finepose_state_dict``'s).

        The returned system uses that tree's CLIP (and context vectors), so a
        converted reference checkpoint samples with its own frozen weights.
        """
        trainable, frozen = split_params(full_params, self.mode, self.model.module.prompt_layout)
        system = dataclasses.replace(self, frozen=frozen, clip_source="checkpoint")
        return system._with_clip_table(), trainable

    def full_params(self, params: Any) -> dict:
        """The model's whole tree: trainable ``params`` plus the frozen leaves."""
        out = dict(params)
        out["prompt"] = {**params.get("prompt", {}), **self.frozen["prompt"]}
        return out

    # -- prompts ----------------------------------------------------------------------

    def sampler_inputs(self, params: Any, pose_2d: Array, key: Array) -> SamplerInputs:
        """D3DP's inputs plus the prompt features of action class 0 for every clip."""
        inputs = super().sampler_inputs(params, pose_2d, key)
        ids = self.prompt_ids(jnp.zeros(pose_2d.shape[:1], jnp.int32))
        return inputs._replace(cond={**inputs.cond, **self.prompt_features(params, ids)})

    def with_compute_dtype(self, dtype: Any) -> FinePOSESystem:
        """Both denoisers (sampling and training rows) computing in ``dtype``."""
        return dataclasses.replace(
            self,
            model=make_model_fns(self.model.module.clone(dtype=dtype)),
            train_model=make_model_fns(self.train_model.module.clone(dtype=dtype)),
        )

    def prompt_ids(self, action: Array) -> Array:
        """Batch ``'action'`` class indices ``[B]`` (-1: none) -> prompt rows ``[B]``."""
        action = jnp.asarray(action, jnp.int32)
        if self.model.module.prompt_layout != "h36m":
            return jnp.zeros_like(action)
        ok = (action >= 0) & (action < self.agnostic_id)
        return jnp.where(ok, action, self.agnostic_id)

    def prompt_features(
        self,
        params: Any,
        ids: Array,
        *,
        train: bool = False,
        rng: Array | None = None,
        frozen: Any = None,
        clip_table: Array | None = None,
    ) -> dict[str, Array]:
        """``{'prompt' [B, 77, D], 'prompt_pooled' [B, C]}`` for prompt rows ``ids [B]``.

        ``params``: the trainable tree. Reference mode gathers the precomputed CLIP
        features; paper mode runs CLIP (frozen) with the trained context vectors.
        ``frozen`` / ``clip_table`` default to the system's (pass them to make them
        arguments of a jitted caller rather than constants).
        """
        frozen = self.frozen if frozen is None else frozen
        clip_table = self.clip_table if clip_table is None else clip_table
        branch = self._branch()
        small = {k: v for k, v in frozen["prompt"].items() if k != CLIP_KEY}
        prompt_params = {**params["prompt"], **small}
        rngs = {"dropout": rng} if (train and rng is not None) else None
        idx = jnp.asarray(self.pool_index)[ids]
        if self.mode == "reference":
            feats = jnp.asarray(clip_table)[ids]
            return branch.apply(
                {"params": prompt_params},
                feats,
                idx,
                train=train,
                rngs=rngs,
                method=PromptBranch.prompt_from_clip,
            )
        prompt_params = {**prompt_params, CLIP_KEY: frozen["prompt"][CLIP_KEY]}
        return branch.apply(
            {"params": prompt_params},
            jnp.asarray(self.prompt_words)[ids],
            idx,
            train=train,
            rngs=rngs,
        )

    # -- training -------------------------------------------------------------------

    @property
    def batch_keys(self) -> tuple[str, ...]:
        """D3DP's keys plus the action class where the prompt names it (Human3.6M)."""
        if self.model.module.prompt_layout == "h36m":
            return (*super().batch_keys, "action")
        return super().batch_keys

    def example_batch(self, num_frames: int, num_joints: int = 17) -> dict[str, np.ndarray]:
        out = super().example_batch(num_frames, num_joints)
        out["action"] = np.zeros((1,), np.int32)
        return out

    def init_params(self, key: Array, batch: Mapping[str, Array]) -> Any:
        """Initial trainable parameters (the frozen leaves are left out)."""
        n = batch["pose_3d"].shape[0]
        cond = {
            "pose_2d": batch["pose_2d"],
            "prompt_words": jnp.broadcast_to(
                jnp.asarray(self.prompt_words[:1]), (n, *self.prompt_words.shape[1:])
            ),
            "prompt_pool_index": jnp.full((n,), int(self.pool_index[0]), jnp.int32),
        }
        t0 = jnp.zeros((n,), jnp.int32)
        full = self.model.init_fn(key, batch["pose_3d"], t0, cond)
        return _split(full, self.frozen_names)[0]

    def denoise(self, params: Any, x_t: Array, t: Array, cond: Mapping[str, Array], **kw) -> Array:
        """``x_t`` (scaled units) -> x0_hat; ``cond`` holds ``pose_2d`` and the prompt features."""
        model = self.train_model if kw.get("train") else self.model
        keys = ("pose_2d", "prompt", "prompt_pooled")
        pred = model.apply_fn(params, x_t / self.scale, t, {k: cond[k] for k in keys}, **kw)
        return pred * self.scale

    def loss_fn(self, params: Any, batch: Mapping[str, Array], rng: Array):
        """D3DP's loss with the batch's prompts: ``batch`` adds ``'action' [B]`` int32."""
        k_drop, k_text = jax.random.split(jax.random.fold_in(rng, 0x7E47))
        action = batch.get("action")
        if action is None:  # 3DHP: the prompt has no action segment
            action = jnp.full(batch["pose_3d"].shape[:1], -1, jnp.int32)
        ids = self.training_prompt_ids(action, k_drop)
        feats = self.prompt_features(params, ids, train=True, rng=k_text)
        return super().loss_fn(params, {**batch, **feats}, rng)

    def training_prompt_ids(self, action: Array, key: Array) -> Array:
        """Prompt rows of a training batch: paper mode swaps in the agnostic prompt
        with probability ``action_dropout`` per clip."""
        ids = self.prompt_ids(action)
        if self.mode == "paper" and self.action_dropout > 0:
            drop = jax.random.bernoulli(key, self.action_dropout, ids.shape)
            ids = jnp.where(drop, self.agnostic_id, ids)
        return ids

    # -- sampling -------------------------------------------------------------------

    def make_eval_sample_fn(self, eval_config: Any, params: Any, *, num_frames: int):
        """``sample_fn(pose_2d [b, F, J, 2], key, *, sequence) -> [b, K, H, F, J, 3]`` metres.

        The action of the clips comes from the sequence being evaluated: the
        evaluator passes its window dict as ``sequence`` and its ``'action'`` class
        index is read. With
        ``eval_config.action_source='none'`` every clip gets the agnostic prompt
        and no label is read. ``params`` may be the trainable tree or a full one
        (a converted checkpoint, whose frozen leaves are then used).
        """
        system, params = self, params
        if CLIP_KEY in params.get("prompt", {}):
            system, params = self.with_full_params(params)
        source = eval_config.get("action_source", "ground_truth")
        _checks.check_choice("make_eval_sample_fn", "action_source", source, ACTION_SOURCES)
        sampler = system.make_sampler(
            SamplerSpec.from_eval_config(eval_config, num_frames=num_frames)
        )
        return _EvalSampleFn(system, sampler, sampler.place_params(params), params, source)

    def sample_poses(
        self,
        sampler: diffusion.Sampler,
        params: Any,
        pose_2d: Array,
        key: Array,
        *,
        action: Array | None = None,
        features: Mapping[str, Array] | None = None,
    ):
        """Runs ``sampler`` for clips of ``action`` ``[B]`` (-1 / None: agnostic prompt).

        Returns every iteration's poses ``[B, K, H, F, J, 3]`` in metres. The prompt
        features are computed here once for the batch unless ``features`` are given.
        """
        if features is None:
            b = np.shape(pose_2d)[0]
            action = np.full((b,), -1, np.int32) if action is None else action
            features = self.prompt_features(params, self.prompt_ids(action))
        out = sampler(params, {"pose_2d": pose_2d, **features}, key)
        return out.x0_steps / self.scale

    def protocol_info(self, eval_config: Any) -> dict[str, Any]:
        """What the evaluation's protocol block says about the prompts."""
        layout = self.model.module.prompt_layout
        source = eval_config.get("action_source", "ground_truth")
        if layout != "h36m":
            label = "not used (prompt without action segment)"
        elif source == "ground_truth":
            label = "ground truth (the sequence's action class)"
        else:
            label = f"none (action-agnostic prompt {self.agnostic_word!r})"
        return {
            "finepose_mode": self.mode,
            "prompt_layout": layout,
            "action_label": label,
            "action_label_from_ground_truth": layout == "h36m" and source == "ground_truth",
            "clip_weights": self.clip_source,
        }


class _EvalSampleFn:
    """The evaluation ``sample_fn``: the clips' action comes from ``sequence['action']``."""

    def __init__(self, system, sampler, placed, params, source):
        self.system, self.sampler, self.placed, self.source = system, sampler, placed, source
        # Frozen weights are arguments, not constants compiled into the program.
        self._encode = jax.jit(
            lambda p, fz, table, ids: system.prompt_features(
                p, system.prompt_ids(ids), frozen=fz, clip_table=table
            )
        )
        frozen = system.frozen
        if system.mode == "reference":  # CLIP's output is tabulated: only ctx is needed
            frozen = {"prompt": {k: v for k, v in frozen["prompt"].items() if k != CLIP_KEY}}
        # On the sampler's devices once (all processes' devices in a multi-process
        # evaluation), not copied from the host at every batch.
        self._args = sharding_lib.put(
            (params, frozen, system.clip_table), sharding_lib.replicated(sampler.mesh)
        )

    def __call__(self, pose_2d, key, *, sequence: Mapping[str, Any] | None = None):
        b = np.shape(pose_2d)[0]
        if self.source == "ground_truth" and self.system.model.module.prompt_layout == "h36m":
            if sequence is None or "action" not in sequence:
                raise ValueError(
                    "FinePOSE sample_fn: action_source='ground_truth' needs the sequence's "
                    "action: pass sequence={'action': class_index, ...} (the evaluator passes "
                    "each window dict), or evaluate with action_source='none'."
                )
            action = int(sequence["action"])
        else:
            action = -1
        feats = self._encode(*self._args, np.full((b,), action, np.int32))
        return self.system.sample_poses(self.sampler, self.placed, pose_2d, key, features=feats)


def _make_frozen(module, mode, words, pool, clip_weights, seed) -> tuple[dict, str]:
    """Frozen leaves: CLIP (from ``clip_weights`` or seeded random) [+ ctx in reference mode].

    Without weights, every frozen matrix is drawn ``N(0, 0.02)`` with numpy from
    ``seed`` (the reference's context-vector init; a random CLIP is only good for
    smoke tests), LayerNorm scales 1 and biases 0: no program to compile.
    """
    branch = module.prompt_branch(name=None)
    shapes = jax.eval_shape(
        lambda: branch.init(jax.random.key(0), jnp.asarray(words[:1]), jnp.asarray(pool[:1]))
    )["params"]
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = getattr(path[-1], "key", "")
        if name == "scale":
            return np.ones(leaf.shape, np.float32)
        if name == "bias":
            return np.zeros(leaf.shape, np.float32)
        return (0.02 * rng.standard_normal(leaf.shape)).astype(np.float32)

    prompt = jax.tree_util.tree_map_with_path(draw, dict(shapes))
    source = "random (seeded; not pretrained CLIP)"
    if clip_weights:
        from pose_jax.convert.finepose import load_clip_text_params

        clip, cfg = load_clip_text_params(os.path.expanduser(clip_weights))
        want = jax.tree.map(np.shape, prompt[CLIP_KEY])
        got = jax.tree.map(np.shape, clip)
        if want != got:
            raise ValueError(
                f"FinePOSESystem: CLIP weights at {clip_weights!r} ({cfg}) do not fit the model "
                f"{type(module).__name__} (text_width={module.text_width}, "
                f"clip_layers={module.clip_layers}, vocab {module.clip_vocab_size})."
            )
        prompt[CLIP_KEY] = clip
        source = os.fspath(clip_weights)
    names = [CLIP_KEY]
    if mode == "reference":
        names += [f"ctx_{s}" for s, _ in PROMPT_LAYOUTS[module.prompt_layout]]
    frozen = {"prompt": {k: jax.tree.map(np.asarray, prompt[k]) for k in names}}
    return frozen, source
