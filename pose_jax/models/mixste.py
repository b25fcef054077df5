"""MixSTE-based x0-predicting denoiser of D3DP.

The network is ``MixSTE2`` of paTRICK-swk/D3DP ``common/mixste.py``. Tokens are
(frame, joint) pairs. Each of ``depth`` stages runs a spatial block over the J
joints of every frame and a temporal block over the F frames of every joint; one
spatial and one temporal LayerNorm are shared by all stages. The 2D keypoints and
the timestep enter only at the input.

Pluggable parts (module fields of :class:`MixSTEDenoiser`; the defaults give
D3DP's network, parameter for parameter):

* ``embedding`` builds the per-token input projection ``joint_embed``: called as
  ``embedding(features=C, dtype=, name='joint_embed')``, the module maps
  ``[N, F, J, D_in] -> [N, F, J, C]`` (default :class:`~pose_jax.models.layers.TorchDense`).
* ``spatial_block`` / ``temporal_block`` build stage ``i``'s blocks
  ``spatial_i`` / ``temporal_i``. A block factory is any callable (a module class,
  a ``functools.partial`` of one, :func:`transformer_block`, :class:`PerStage`)
  taking the keyword arguments of :data:`BLOCK_ARGS` and returning a module
  ``(x [B, L, C], *, deterministic) -> [B, L, C]`` (``L = J`` spatial, ``F``
  temporal; a call may carry fewer frames than ``num_frames``). ``kind``,
  ``stage``, ``depth`` and ``num_tokens`` let a factory build a different block
  for some stages, e.g. a graph-prior block at stage 0 only::

      MixSTEDenoiser(spatial_block=PerStage({0: MyGraphBlock}),
                     temporal_block=PerStage({0: MyChainBlock}))

  (KTPFormer itself, ``pose_jax/models/ktpformer.py``, puts its kinematics prior in
  the ``embedding`` field, since the reference's graph convolution is the joint
  embedding, and its stage-0 attention blocks in ``PerStage``.)

  Anything else a block needs (a skeleton :class:`~pose_jax.models.graph.Graph`,
  another attention) is bound with ``functools.partial``, e.g.
  ``functools.partial(transformer_block, attention=MyAttention)``.

Factories must be hashable (classes, functions, partials, :class:`PerStage`):
they are Flax module fields.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pose_jax import _checks
from pose_jax.models import layers

Array = jax.Array

BlockFactory = Callable[..., nn.Module]

# The keyword arguments every block factory receives.
BLOCK_ARGS = (
    "name",  # 'spatial_<i>' or 'temporal_<i>' (the parameter subtree)
    "kind",  # 'spatial' (attends over joints) or 'temporal' (over frames)
    "stage",  # i, 0-based
    "depth",  # number of stages
    "num_tokens",  # the attended axis' configured length: num_joints or num_frames
    "drop_path",  # this stage's stochastic-depth rate
    "num_heads",
    "mlp_ratio",
    "dropout",
    "attn_dropout",
    "ln_eps",
    "dtype",
    "attention_impl",  # the model's attention implementation (layers.ATTENTION_IMPLEMENTATIONS)
)


def transformer_block(
    *, kind: str, stage: int, depth: int, num_tokens: int, attention_impl: str, **hparams
) -> layers.TransformerBlock:
    """MixSTE's block factory: a :class:`~pose_jax.models.layers.TransformerBlock` per stage.

    ``kind``, ``stage``, ``depth`` and ``num_tokens`` do not change it; ``hparams``
    (the shared hyper-parameters, ``name``, and e.g. ``attention=`` or
    ``attn_ln_eps=`` bound with ``functools.partial``) are its fields.
    ``attention_impl`` is the implementation of the default attention
    (:class:`~pose_jax.models.layers.SelfAttention`, into which ``norm1`` is folded:
    ``fold_attn_norm``); a bound ``attention`` ignores it and is called unfolded unless
    ``fold_attn_norm=True`` is bound with it.
    """
    del kind, stage, depth, num_tokens
    if "attention" not in hparams:
        attention = functools.partial(layers.SelfAttention, implementation=attention_impl)
        hparams = {"attention": attention, "fold_attn_norm": True, **hparams}
    return layers.TransformerBlock(**hparams)


@dataclasses.dataclass(frozen=True)
class PerStage:
    """A block factory picking a factory per stage: ``PerStage({0: MyBlock})``.

    Attributes:
      stages: stage index -> block factory (a mapping, stored as sorted pairs so
        the spec stays hashable).
      default: the factory of every other stage (:func:`transformer_block`).
    """

    stages: Mapping[int, BlockFactory] | tuple[tuple[int, BlockFactory], ...]
    default: BlockFactory = transformer_block

    def __post_init__(self):
        stages = dict(self.stages)
        bad = [i for i in stages if not isinstance(i, int) or i < 0]
        if bad:
            raise ValueError(f"PerStage: stage indices must be ints >= 0; got {bad}.")
        object.__setattr__(self, "stages", tuple(sorted(stages.items())))

    def __call__(self, *, stage: int, depth: int, **kwargs) -> nn.Module:
        too_deep = [i for i, _ in self.stages if i >= depth]
        if too_deep:
            raise ValueError(
                f"PerStage: stage(s) {too_deep} do not exist in a stack of depth {depth} "
                f"(stages 0..{depth - 1})."
            )
        factory = dict(self.stages).get(stage, self.default)
        return factory(stage=stage, depth=depth, **kwargs)


class MixSTEDenoiser(nn.Module):
    """D3DP's MixSTE2 denoiser: ``(x_t, t, cond) -> x0_hat``.

    Attributes:
      num_frames: F, frames per clip (the temporal positional table's length).
      num_joints: J.
      embed_dim: token width (512 in the paper).
      depth: number of spatial+temporal stages (8 in the paper).
      num_heads: attention heads (8).
      mlp_ratio: MLP hidden width / embed_dim (2).
      drop_path_rate: the last stage's stochastic-depth rate; stage i uses
        ``linspace(0, rate, depth)[i]`` in both its spatial and temporal block.
      dropout: dropout after the input embedding and in the MLPs (0 in D3DP).
      attn_dropout: attention-probability dropout (0 in D3DP).
      out_dim: channels predicted per joint (3).
      diffusion_inputs: False gives MixSTE2, the deterministic lifter DiffPose-video
        starts from: the input embedding reads only the 2D (``Linear(2 -> C)``), there
        is no time embedding, and ``x_t``/``t`` are ignored (33,783,811 parameters at
        paper size).
      dtype: compute dtype (parameters stay float32).
      embedding: builds ``joint_embed``, ``[N, F, J, D_in] -> [N, F, J, C]`` (see the
        module docstring; default :class:`~pose_jax.models.layers.TorchDense`).
      spatial_block: block factory of ``spatial_<i>`` (default :func:`transformer_block`).
      temporal_block: block factory of ``temporal_<i>`` (default :func:`transformer_block`).
      remat: what each spatial/temporal block and the norm after it keep for the
        backward pass (:data:`~pose_jax.models.layers.REMAT_POLICIES`: 'none', 'block',
        'dots_saveable'); the parameters and the maths do not change.
      attention_impl: how the blocks' attention is computed
        (:data:`~pose_jax.models.layers.ATTENTION_IMPLEMENTATIONS`), given to every
        block factory.
    """

    num_frames: int = 243
    num_joints: int = 17
    embed_dim: int = 512
    depth: int = 8
    num_heads: int = 8
    mlp_ratio: float = 2.0
    drop_path_rate: float = 0.1
    dropout: float = 0.0
    attn_dropout: float = 0.0
    out_dim: int = 3
    diffusion_inputs: bool = True
    dtype: jnp.dtype | None = None
    embedding: Callable[..., nn.Module] = layers.TorchDense
    spatial_block: BlockFactory = transformer_block
    temporal_block: BlockFactory = transformer_block
    remat: str = "none"
    attention_impl: str = "auto"

    def _block(self, kind: str, stage: int, rate: float) -> nn.Module:
        """Stage ``stage``'s ``kind`` block, built by its factory (see :data:`BLOCK_ARGS`)."""
        factory = self.spatial_block if kind == "spatial" else self.temporal_block
        return factory(
            name=f"{kind}_{stage}",
            kind=kind,
            stage=stage,
            depth=self.depth,
            num_tokens=self.num_joints if kind == "spatial" else self.num_frames,
            drop_path=rate,
            num_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio,
            dropout=self.dropout,
            attn_dropout=self.attn_dropout,
            ln_eps=1e-6,
            dtype=self.dtype,
            attention_impl=self.attention_impl,
        )

    def _run_block(self, kind: str, stage: int, rate: float, x: Array, deterministic: bool):
        """Stage ``stage``'s ``kind`` block on ``x [B, L, C]``, rematerialised per ``remat``."""
        block = self._block(kind, stage, rate)
        return layers.call_block(block, x, remat=self.remat, deterministic=deterministic)

    @nn.compact
    def __call__(
        self, x_t: Array, t: Array, cond: Mapping[str, Array], *, train: bool = False
    ) -> Array:
        """Predicts the clean pose.

        Args:
          x_t: ``[N, F, J, 3]`` noisy 3D poses (root-relative, metres).
          t: ``[N]`` integer timesteps.
          cond: ``{'pose_2d': [N, F, J, 2]}`` normalised 2D keypoints.
          train: enables dropout and stochastic depth (needs a 'dropout' rng).

        Returns:
          ``[N, F, J, out_dim]`` predicted x0.
        """
        fn = type(self).__name__
        if "pose_2d" not in cond:
            raise ValueError(f"{fn}: cond needs key 'pose_2d'; got keys {sorted(cond)}.")
        x2d = cond["pose_2d"]
        n, f, j, _ = _checks.check_trailing(fn, "x_t", x_t, (None, self.num_joints, 3), min_ndim=4)
        if len(x_t.shape) != 4:
            raise ValueError(f"{fn}: argument 'x_t' has shape {x_t.shape}; expected [N, F, J, 3].")
        if tuple(x2d.shape) != (n, f, j, 2):
            raise ValueError(
                f"{fn}: cond['pose_2d'] has shape {tuple(x2d.shape)}; expected {(n, f, j, 2)} "
                "to match x_t."
            )
        if f > self.num_frames:
            raise ValueError(
                f"{fn}: x_t has {f} frames; this model was built for at most num_frames="
                f"{self.num_frames}."
            )
        _checks.check_trailing(fn, "t", t, (n,))
        layers.check_remat(fn, self.remat)
        layers.check_attention_implementation(fn, self.attention_impl)
        deterministic = not train
        cond = self.prepare_condition(cond, n, deterministic=deterministic)
        c = self.embed_dim
        rates = np.linspace(0.0, self.drop_path_rate, self.depth)

        if self.diffusion_inputs:
            x = jnp.concatenate([x2d, x_t], axis=-1)
        else:  # deterministic MixSTE2 lifter: 2D in, no timestep (x_t and t are ignored)
            x = x2d
        x = self.embedding(features=c, dtype=self.dtype, name="joint_embed")(
            x.astype(self.dtype or jnp.float32)
        )
        x = x + self.param("spatial_pos_embed", nn.initializers.zeros, (1, 1, j, c))
        if self.diffusion_inputs:
            temb = layers.TimeEmbedding(c, 2 * c, c, dtype=self.dtype, name="time_embed")(t)
        else:
            temb = jnp.zeros((n, c), x.dtype)
        emb = self.token_conditioning(temb, cond)
        x = x + emb[:, None, None, :]
        x = nn.Dropout(self.dropout)(x, deterministic=deterministic)

        spatial_norm = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="spatial_norm")
        temporal_norm = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="temporal_norm")
        temporal_pos = self.param(
            "temporal_pos_embed", nn.initializers.zeros, (1, self.num_frames, 1, c)
        )
        for i in range(self.depth):
            # Spatial attention over joints: [N*F, J, C].
            x = x.reshape(n * f, j, c)
            x = self._run_block("spatial", i, float(rates[i]), x, deterministic)
            x = layers.call_block(spatial_norm, x, remat=self.remat).reshape(n, f, j, c)
            if i == 0:
                x = self.after_first_spatial(x, emb, cond, deterministic=deterministic)
                x = x + temporal_pos[:, :f]
                x = nn.Dropout(self.dropout)(x, deterministic=deterministic)
            # Temporal attention over frames: [N*J, F, C].
            x = x.transpose(0, 2, 1, 3).reshape(n * j, f, c)
            x = self._run_block("temporal", i, float(rates[i]), x, deterministic)
            x = layers.call_block(temporal_norm, x, remat=self.remat)
            x = x.reshape(n, j, f, c).transpose(0, 2, 1, 3)

        x, affine = layers.FoldedLayerNorm(1e-5, self.dtype, name="head_norm")(x)
        out = layers.TorchDense(self.out_dim, dtype=self.dtype, name="head")(x, affine)
        return out.astype(jnp.float32)

    # -- Hooks for conditioned variants (FinePOSE). D3DP's own are no-ops without
    # parameters, so its parameter tree and outputs do not depend on them. They run
    # inside ``__call__``'s compact scope: submodules they create are children of
    # this module (name them explicitly).

    def prepare_condition(
        self, cond: Mapping[str, Array], n: int, *, deterministic: bool
    ) -> Mapping[str, Array]:
        """Validates/derives extra conditioning once per call; ``n`` is the batch ``N``."""
        del n, deterministic
        return cond

    def token_conditioning(self, temb: Array, cond: Mapping[str, Array]) -> Array:
        """``[N, C]`` embedding added to every token (D3DP: the timestep embedding)."""
        del cond
        return temb

    def after_first_spatial(
        self, x: Array, emb: Array, cond: Mapping[str, Array], *, deterministic: bool
    ) -> Array:
        """Stage after spatial block 0 and its norm, before the temporal positions.

        ``x: [N, F, J, C]``, ``emb: [N, C]`` (the output of :meth:`token_conditioning`).
        """
        del emb, cond, deterministic
        return x
