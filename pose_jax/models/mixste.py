"""MixSTE-based x0-predicting denoiser of D3DP (REFERENCE.md 2.2).

Tokens are (frame, joint) pairs. Each of ``depth`` stages runs a spatial block
over the J joints of every frame and a temporal block over the F frames of every
joint; one spatial and one temporal LayerNorm are shared by all stages. The 2D
keypoints and the timestep enter only at the input.
"""

from __future__ import annotations

from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pose_jax import _checks
from pose_jax.models import layers

Array = jax.Array


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

    def _block(self, name: str, rate: float) -> layers.TransformerBlock:
        return layers.TransformerBlock(
            num_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio,
            dropout=self.dropout,
            attn_dropout=self.attn_dropout,
            drop_path=rate,
            ln_eps=1e-6,
            dtype=self.dtype,
            name=name,
        )

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
        deterministic = not train
        cond = self.prepare_condition(cond, n, deterministic=deterministic)
        c = self.embed_dim
        rates = np.linspace(0.0, self.drop_path_rate, self.depth)

        if self.diffusion_inputs:
            x = jnp.concatenate([x2d, x_t], axis=-1)
        else:  # deterministic MixSTE2 lifter: 2D in, no timestep (x_t and t are ignored)
            x = x2d
        x = layers.TorchDense(c, dtype=self.dtype, name="joint_embed")(
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
            x = self._block(f"spatial_{i}", float(rates[i]))(
                x.reshape(n * f, j, c), deterministic=deterministic
            )
            x = spatial_norm(x).reshape(n, f, j, c)
            if i == 0:
                x = self.after_first_spatial(x, emb, cond, deterministic=deterministic)
                x = x + temporal_pos[:, :f]
                x = nn.Dropout(self.dropout)(x, deterministic=deterministic)
            # Temporal attention over frames: [N*J, F, C].
            x = x.transpose(0, 2, 1, 3).reshape(n * j, f, c)
            x = self._block(f"temporal_{i}", float(rates[i]))(x, deterministic=deterministic)
            x = temporal_norm(x).reshape(n, j, f, c).transpose(0, 2, 1, 3)

        x = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="head_norm")(x)
        out = layers.TorchDense(self.out_dim, dtype=self.dtype, name="head")(x)
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
