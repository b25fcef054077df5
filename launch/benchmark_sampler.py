r"""Times the compiled DDIM sampler with a small stand-in denoiser.

Reports, for every (B, H, K): the first call (trace + compile + one run), the
steady-state time per call (median of ``--repeats`` after ``--warmup`` calls,
each ended with ``block_until_ready``), poses per second (``B * H`` final
samples per call) and denoiser rows per second (``B * H * K``, doubled with
flip TTA). The numbers describe this machine only; nothing is asserted.

  python -m launch.benchmark_sampler                       # defaults, < 1 min on 2 CPU cores
  python -m launch.benchmark_sampler --configs=4x20x10 --frames=27 --flip=step
  python -m launch.benchmark_sampler --fake_devices=8       # CPU mesh of 8 fake devices
"""

from __future__ import annotations

import os
import statistics
import sys
import time

from absl import app, flags

_CONFIGS = flags.DEFINE_list(
    "configs",
    ["8x1x1", "8x5x5", "32x5x10", "4x20x10"],
    "Comma-separated BxHxK triples (clips x hypotheses x DDIM iterations).",
)
_FRAMES = flags.DEFINE_integer("frames", 1, "Frames per clip F; the state is [F, 17, 3].")
_HIDDEN = flags.DEFINE_integer("hidden", 256, "Hidden width of the stand-in MLP.")
_FLIP = flags.DEFINE_enum("flip", "step", ["none", "step", "chain"], "Flip TTA mode.")
_PREDICTION = flags.DEFINE_enum("prediction", "x0", ["x0", "eps"], "What the stand-in predicts.")
_ETA = flags.DEFINE_float("eta", 1.0, "DDIM eta.")
_WARMUP = flags.DEFINE_integer("warmup", 1, "Untimed calls after the first (compiling) call.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls; the median is reported.")
_PATH = flags.DEFINE_enum("path", "jit", ["jit", "pmap"], "Sharded jit (default) or pmap.")
_FAKE_DEVICES = flags.DEFINE_integer(
    "fake_devices", 0, "If > 0, ask XLA for this many host (CPU) devices; set before jax starts."
)


def _parse(config: str) -> tuple[int, int, int]:
    try:
        b, h, k = (int(v) for v in config.lower().split("x"))
    except ValueError:
        raise app.UsageError(f"--configs entry {config!r} is not BxHxK (e.g. 8x5x5).") from None
    if min(b, h, k) < 1:
        raise app.UsageError(f"--configs entry {config!r}: B, H and K must be >= 1.")
    return b, h, k


def main(argv):
    del argv
    configs = [_parse(c) for c in _CONFIGS.value]
    if _FAKE_DEVICES.value > 0:
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "")
            + f" --xla_force_host_platform_device_count={_FAKE_DEVICES.value}"
        )
    # jax is imported only now so that --fake_devices can still take effect.
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from pose_jax import diffusion

    num_joints, frames = 17, _FRAMES.value

    class StandInDenoiser(nn.Module):
        """2-layer MLP over the joints of each frame: [x_t (J*3), 2D (J*2), t-embedding] -> J*3."""

        hidden: int

        @nn.compact
        def __call__(self, x_t, t, cond):
            n = x_t.shape[0]
            half = 16
            freqs = jnp.exp(-jnp.log(10000.0) * jnp.arange(half) / (half - 1))
            arg = t.astype(jnp.float32)[:, None] * freqs
            temb = jnp.concatenate([jnp.sin(arg), jnp.cos(arg)], axis=-1)  # [N, 32]
            temb = jnp.broadcast_to(temb[:, None], (n, frames, 2 * half))
            h = jnp.concatenate(
                [x_t.reshape(n, frames, -1), cond["pose_2d"].reshape(n, frames, -1), temb], axis=-1
            )
            h = nn.gelu(nn.Dense(self.hidden)(h))
            return nn.Dense(num_joints * 3)(h).reshape(x_t.shape)

    model = StandInDenoiser(_HIDDEN.value)
    event = (frames, num_joints, 3)
    params = model.init(
        jax.random.key(0),
        jnp.zeros((1, *event)),
        jnp.zeros((1,), jnp.int32),
        {"pose_2d": jnp.zeros((1, frames, num_joints, 2))},
    )
    n_params = sum(x.size for x in jax.tree.leaves(params))

    def denoise_fn(p, x_t, t, cond):
        return model.apply(p, x_t, t, cond)

    schedule = diffusion.make_schedule("cosine", 1000)
    flip_mode = None if _FLIP.value == "none" else _FLIP.value
    print(
        f"devices: {jax.device_count()} x {jax.devices()[0].device_kind} "
        f"({jax.default_backend()}); "
        f"path={_PATH.value}; event={event}; stand-in MLP params={n_params}; flip={_FLIP.value}; "
        f"prediction={_PREDICTION.value}; eta={_ETA.value}"
    )
    header = (
        f"{'B':>5} {'H':>4} {'K':>5} | {'first call s':>12} {'step s':>9} | "
        f"{'poses/s':>10} {'denoiser rows/s':>15}"
    )
    print(header)
    print("-" * len(header))
    for b, h, k in configs:
        sampler = diffusion.make_sampler(
            denoise_fn,
            schedule,
            diffusion.make_time_grid("d3dp", schedule.num_steps, k),
            event_shape=event,
            num_hypotheses=h,
            eta=_ETA.value,
            prediction=_PREDICTION.value,
            clip=1.1 if _PREDICTION.value == "x0" else None,
            flip_mode=flip_mode,
        )
        placed = sampler.place_params(params)
        cond = {"pose_2d": jax.random.normal(jax.random.key(1), (b, frames, num_joints, 2))}
        run = sampler if _PATH.value == "jit" else sampler.pmap

        def call(seed, run=run, placed=placed, cond=cond):
            return jax.block_until_ready(run(placed, cond, jax.random.key(seed)).x0_steps)

        t0 = time.perf_counter()
        call(0)
        first = time.perf_counter() - t0
        for i in range(_WARMUP.value):
            call(1 + i)
        times = []
        for i in range(_REPEATS.value):
            t0 = time.perf_counter()
            call(100 + i)
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        rows = b * h * k * (2 if flip_mode else 1)
        print(
            f"{b:>5} {h:>4} {k:>5} | {first:>12.2f} {med:>9.4f} | "
            f"{b * h / med:>10.1f} {rows / med:>15.0f}"
        )
        sys.stdout.flush()


if __name__ == "__main__":
    app.run(main)
