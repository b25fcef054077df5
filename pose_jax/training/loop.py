"""The training loop, read top to bottom: mesh, model + optimizer, shard, restore, loop.

The loop is generic: a *system* supplies ``loss_fn(params, batch, rng)`` and the
denoiser's ``init_fn``; the caller supplies a checkpointable batch iterator
(``get_state``/``set_state``, e.g. grain's). Nothing here imports the data
pipelines, so any iterator of dict batches works.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from pose_jax import model_state
from pose_jax import sharding as sharding_lib
from pose_jax.training import checkpointing, optimizers, train_state, train_step


class NonFiniteLossError(FloatingPointError):
    """Raised when the loss (or gradient norm) becomes NaN or inf."""


def _is_main() -> bool:
    return jax.process_index() == 0


class MetricWriter:
    """JSONL (always) and TensorBoard (when ``tensorboardX`` is installed) on process 0."""

    def __init__(self, workdir: epath.Path, tensorboard: bool = True):
        self._jsonl = None
        self._tb = None
        if not _is_main():
            return
        workdir.mkdir(parents=True, exist_ok=True)
        self._jsonl = (workdir / "metrics.jsonl").open("a")
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                SummaryWriter = None
            if SummaryWriter is not None:
                self._tb = SummaryWriter(str(workdir / "tensorboard"))

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        if self._jsonl is None:
            return
        self._jsonl.write(
            json.dumps({"step": int(step), **{k: float(v) for k, v in scalars.items()}})
        )
        self._jsonl.write("\n")
        self._jsonl.flush()
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, float(v), int(step))

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


class _Preemption:
    """Turns SIGTERM (what TPU VMs and SLURM send before preempting) into a stop decision.

    One process: the loop stops after the step during which the signal arrived.
    Several processes: the signal may reach one worker only (a TPU host being
    maintained) or all of them at slightly different steps, yet every process
    must run the same steps and join the same checkpoint save. Each step
    therefore all-reduces the local flags with a small jitted ``any`` over the
    mesh (dispatched asynchronously, like the update) and the loop acts on the
    previous step's result, which is already computed: all processes see the
    same value at the same step and stop together one step after the signal.
    """

    def __init__(self, mesh=None):
        self.requested = False
        self._previous = None
        self._pending = None
        self._mesh = mesh if mesh is not None and jax.process_count() > 1 else None
        if self._mesh is not None:
            self._any = jax.jit(jnp.any, out_shardings=sharding_lib.replicated(self._mesh))
            self._local_devices = len(self._mesh.local_devices)
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        del signum, frame
        self.requested = True

    def should_stop(self) -> bool:
        """Whether every process stops now (call exactly once per step on every process)."""
        if self._mesh is None:
            return self.requested
        local = np.full((self._local_devices,), self.requested)
        flags = jax.make_array_from_process_local_data(
            sharding_lib.batch_sharding(self._mesh), local
        )
        previous, self._pending = self._pending, self._any(flags)
        return previous is not None and bool(np.asarray(previous.addressable_data(0)))

    def restore(self):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _progress(total: int, initial: int):
    if not _is_main():
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, mininterval=1.0)


def _report_resume(manager, restored: checkpointing.Restored, total: int) -> None:
    """Says which step a run resumed from; sets damaged newer checkpoints aside."""
    if restored.skipped:
        moved = []
        if _is_main():
            moved = checkpointing.set_aside(manager, [s for s, _ in restored.skipped])
        else:
            manager.reload()
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("pose_jax: damaged checkpoints set aside")
        if _is_main():
            for (step, reason), path in zip(restored.skipped, moved, strict=False):
                print(
                    f"train: checkpoint step {step} does not restore ({reason}); "
                    f"moved to {path} and resuming from an older one.",
                    flush=True,
                )
    if _is_main():
        print(
            f"train: resumed from step {restored.step} of {total} "
            f"({epath.Path(manager.directory) / str(restored.step)}).",
            flush=True,
        )


def global_batch(local: Mapping[str, Any], mesh, keys: tuple[str, ...]) -> dict[str, jax.Array]:
    """Assembles the global batch from this process's rows (``[b_local, ...]`` per key)."""
    sh = sharding_lib.batch_sharding(mesh)
    out = {}
    for k in keys:
        if k not in local:
            raise KeyError(f"global_batch: the batch has no key '{k}'; it has {sorted(local)}.")
        out[k] = jax.make_array_from_process_local_data(sh, np.asarray(local[k]))
    return out


def total_steps(config: Any, steps_per_epoch: int) -> int:
    """Updates a run makes: ``train.num_steps``, or ``train.num_epochs * steps_per_epoch``.

    Exactly one of the two is set (> 0); :mod:`pose_jax.training.config_checks` refuses
    a config that sets both or neither.
    """
    tcfg = config.train
    if tcfg.get("num_steps"):
        return int(tcfg.num_steps)
    return int(tcfg.num_epochs * steps_per_epoch)


def make_optimizer_from_config(config: Any, steps_per_epoch: int):
    """``(optimizer, lr_schedule)`` from ``config.optim``."""
    ocfg = config.optim
    schedule = optimizers.make_lr_schedule(
        base_lr=ocfg.lr,
        steps_per_epoch=steps_per_epoch,
        kind=ocfg.lr_schedule,
        decay=ocfg.lr_decay,
        decay_every_epochs=ocfg.get("decay_every_epochs", 1),
    )
    optimizer = optimizers.make_optimizer(
        name=ocfg.name,
        lr_schedule=schedule,
        weight_decay=ocfg.weight_decay,
        grad_clip_norm=ocfg.get("grad_clip_norm") or None,
    )
    return optimizer, schedule


def make_state_initializer(
    config: Any, system: Any, init_batch: Mapping[str, Any], optimizer
) -> Callable[[], train_state.TrainState]:
    """A function creating the initial state (jit it with ``out_shardings``).

    Keys: ``(init_key, state_key) = split(key(config.train.seed))``; only the shapes
    of ``init_batch`` matter (its first row is used).
    """
    keys = tuple(system.batch_keys)
    init_key, state_key = jax.random.split(jax.random.key(config.train.seed))
    example = {k: jnp.asarray(np.asarray(init_batch[k])[:1]) for k in keys}

    def init_state():
        params = system.init_params(init_key, example)
        return train_state.create_train_state(
            params, optimizer, state_key, use_ema=bool(config.optim.get("ema_decay"))
        )

    return init_state


def make_train_step_from_config(config: Any, system: Any, optimizer):
    """The (unjitted) update :func:`train` runs: ``config.optim``'s EMA and gradient mode."""
    return train_step.make_train_step(
        system.loss_fn,
        optimizer,
        ema_decay=config.optim.get("ema_decay") or None,
        gradient_mode=config.optim.gradient_mode,
    )


def state_shardings_from_config(config: Any, init_state: Callable, mesh) -> tuple[Any, Any]:
    """``(abstract state, shardings)``: ``init_state``'s layout on ``mesh`` per ``config.mesh``.

    ``mesh.param_sharding`` ('replicated' or 'fsdp') and ``mesh.fsdp_min_size``
    (see :func:`pose_jax.sharding.state_shardings`); nothing is allocated.
    """
    abstract = jax.eval_shape(init_state)
    shardings = sharding_lib.state_shardings(
        abstract,
        mesh,
        config.mesh.get("param_sharding", "replicated"),
        min_size=config.mesh.get("fsdp_min_size", sharding_lib.FSDP_MIN_SIZE),
    )
    return abstract, shardings


def _create_state(config: Any, system: Any, init_batch, optimizer, mesh):
    """``(state, its shardings)``: created directly in its final layout on ``mesh``.

    Replicated, or split over the devices with ``mesh.param_sharding='fsdp'``: no
    device ever holds more than its share. Process 0 prints the sizes.
    """
    init_state = make_state_initializer(config, system, init_batch, optimizer)
    abstract, state_sharding = state_shardings_from_config(config, init_state, mesh)
    state = jax.jit(init_state, out_shardings=state_sharding)()
    if _is_main():
        weights, running = model_state.split(abstract.params)
        n_params = sum(math.prod(x.shape) for x in jax.tree.leaves(weights))
        n_running = sum(math.prod(x.shape) for x in jax.tree.leaves(running or {}))
        also = f" (+ {n_running:,} running statistics)" if n_running else ""
        per_device = sharding_lib.bytes_per_device(abstract, state_sharding)
        print(
            f"train: {n_params:,} parameters{also}; train state {per_device / 2**20:.1f} MiB per "
            f"device over {mesh.size} devices "
            f"(mesh.param_sharding={config.mesh.get('param_sharding', 'replicated')}).",
            flush=True,
        )
    return state, state_sharding


def _check_finite(host: list[dict], last_good: int | None) -> None:
    for m in host:
        bad = [k for k in ("loss", "grad_norm") if not math.isfinite(float(m[k]))]
        if bad:
            raise NonFiniteLossError(
                f"train: non-finite {', '.join(bad)} at step {int(m['step'])} "
                f"(loss={float(m['loss'])}, grad_norm={float(m['grad_norm'])}); "
                f"last good checkpoint: {last_good}."
            )


class _Logger:
    """Collects the per-step metrics on device and writes them every ``log_every_steps``."""

    def __init__(self, writer: MetricWriter, schedule, bar, manager):
        self.writer, self.schedule, self.bar, self.manager = writer, schedule, bar, manager
        self.pending: list[dict] = []
        self.tick = time.perf_counter()

    def flush(self, step: int, done: int) -> None:
        """Fetches the pending metrics (one transfer), checks them and writes the last."""
        host = jax.device_get(self.pending)
        self.pending = []
        _check_finite(host, self.manager.latest_step())
        elapsed = time.perf_counter() - self.tick
        self.tick = time.perf_counter()
        scalars = {k: float(v) for k, v in host[-1].items() if k != "step"}
        scalars["lr"] = float(self.schedule(step))
        scalars["steps_per_sec"] = len(host) / max(elapsed, 1e-9)
        self.writer.write(done, scalars)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{scalars['loss']:.4f}", refresh=False)


def _say_stopped(done: int) -> None:
    if _is_main():
        n = jax.process_count()
        who = f" by at least one of {n} processes" if n > 1 else ""
        print(f"train: SIGTERM received{who}; saved step {done} and stopped.", flush=True)


def train(
    config: Any,
    workdir: str | epath.Path,
    *,
    system: Any,
    train_iter: Iterator[Mapping[str, Any]],
    steps_per_epoch: int,
    init_batch: Mapping[str, np.ndarray],
) -> train_state.TrainState:
    """Trains ``system`` and returns the final state (checkpointed under ``workdir``).

    Args:
      config: ``ml_collections.ConfigDict`` with blocks ``optim``, ``train``, ``mesh``,
        ``ckpt`` (see ``configs/d3dp_h36m.py``).
      workdir: run directory (local or ``gs://``): checkpoints, ``metrics.jsonl``.
      system: a :class:`pose_jax.systems.System` (``init_params``, ``loss_fn``).
      train_iter: iterator of per-process batches (dicts of ``[b, ...]`` arrays);
        when it has ``get_state``/``set_state`` its position is checkpointed.
      steps_per_epoch: global updates per epoch (drives the per-epoch lr decay).
      init_batch: one batch (shapes only matter) to initialise the parameters.

    Raises:
      NonFiniteLossError: the loss or gradient norm became NaN/inf (names the step).
    """
    workdir = epath.Path(workdir)
    tcfg = config.train
    keys = tuple(system.batch_keys)
    mesh = sharding_lib.make_mesh(config.mesh.get("num_devices") or None)
    optimizer, schedule = make_optimizer_from_config(config, steps_per_epoch)
    state, state_sharding = _create_state(config, system, init_batch, optimizer, mesh)
    total = total_steps(config, steps_per_epoch)

    # A grain iterator's position is checkpointed with the state; a plain one is not.
    data_iter = train_iter if hasattr(train_iter, "get_state") else None
    manager = checkpointing.make_checkpoint_manager(
        workdir / "checkpoints",
        max_to_keep=config.ckpt.max_to_keep,
        with_data_iterator=data_iter is not None,
    )
    restored = checkpointing.restore_newest(manager, state, data_iter=data_iter)
    if restored is not None:
        state = restored.state
        _report_resume(manager, restored, total)
    start = int(jax.device_get(state.step))

    step_fn = jax.jit(
        make_train_step_from_config(config, system, optimizer),
        in_shardings=(state_sharding, sharding_lib.batch_sharding(mesh)),
        out_shardings=(state_sharding, sharding_lib.replicated(mesh)),
        donate_argnums=(0,),
    )
    ckpt_cfg = config.to_dict()
    writer = MetricWriter(workdir, tensorboard=tcfg.get("tensorboard", True))
    bar = _progress(total, start)
    logger = _Logger(writer, schedule, bar, manager)
    preempt = _Preemption(mesh)
    try:
        for step in range(start, total):
            state, metrics = step_fn(state, global_batch(next(train_iter), mesh, keys))
            logger.pending.append(metrics)
            done = step + 1
            if done % tcfg.log_every_steps == 0 or done == total:
                logger.flush(step, done)
            if bar is not None:
                bar.update(1)
            stop = preempt.should_stop()
            if done % tcfg.checkpoint_every_steps == 0 or done == total or stop:
                checkpointing.save(
                    manager, done, state, config=ckpt_cfg, data_iter=data_iter, force=True
                )
            if stop:
                _say_stopped(done)
                break
    finally:
        if bar is not None:
            bar.close()
        preempt.restore()
        writer.close()
        manager.close()
    return state
