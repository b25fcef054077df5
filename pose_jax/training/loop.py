"""The training loop, read top to bottom: mesh, model + optimizer, shard, restore, loop.

The loop is generic: a *system* supplies ``loss_fn(params, batch, rng)`` and the
denoiser's ``init_fn``; the caller supplies a batch iterator, by default a
:class:`CheckpointableIterator` (grain's) whose position is saved with the state.
Nothing here imports the data pipelines, so any iterator of dict batches works
(``checkpoint_data=False`` for one without a position).
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from pose_jax import model_state
from pose_jax import sharding as sharding_lib
from pose_jax.errors import ConfigError
from pose_jax.training import checkpointing, optimizers, train_state, train_step


class CheckpointableIterator(Protocol):
    """A batch iterator whose position is checkpointed (``grain.DatasetIterator``)."""

    def __next__(self) -> Mapping[str, Any]: ...

    def get_state(self) -> Any: ...

    def set_state(self, state: Any) -> None: ...


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
    """Assembles the global batch from this process's rows (``[b_local, ...]`` per key).

    One process: one ``device_put`` of the whole dict (a single dispatch); several:
    each process contributes its rows of every key.
    """
    missing = [k for k in keys if k not in local]
    if missing:
        raise KeyError(f"global_batch: the batch has no key {missing}; it has {sorted(local)}.")
    sh = sharding_lib.batch_sharding(mesh)
    if jax.process_count() == 1:
        return jax.device_put({k: np.asarray(local[k]) for k in keys}, sh)
    return {k: jax.make_array_from_process_local_data(sh, np.asarray(local[k])) for k in keys}


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


def compute_system(config: Any, system: Any) -> Any:
    """The system the training step computes with: ``train.compute_dtype`` (absent: float32).

    ``'bfloat16'`` is mixed precision: the denoiser's activations and matmuls in bf16
    (:meth:`System.with_compute_dtype`), while the parameters, their gradients, the
    optimizer state and EMA stay float32 (the parameters are cast where they are used,
    so their cotangents come back in float32) and the loss is reduced in float32 (the
    systems compare the prediction with the float32 batch). Evaluation is unaffected.
    """
    name = config.train.get("compute_dtype", "float32")
    if name == "float32":
        return system
    return system.with_compute_dtype(jnp.dtype(name))


def make_train_step_from_config(config: Any, system: Any, optimizer):
    """The (unjitted) update :func:`train` runs: ``config.optim``'s EMA and gradient mode,
    computing in ``config.train.compute_dtype`` (:func:`compute_system`) over
    :func:`microbatches_from_config` chunks of the batch."""
    return train_step.make_train_step(
        compute_system(config, system).loss_fn,
        optimizer,
        ema_decay=config.optim.get("ema_decay") or None,
        gradient_mode=config.optim.gradient_mode,
        microbatches=microbatches_from_config(config),
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


def microbatches_from_config(config: Any, num_devices: int | None = None) -> int:
    """How many chunks an update computes its batch in: ``config.train.microbatch_size``.

    The size caps the samples per device in one chunk (0 or unset: no chunking); the
    count is the smallest divisor of each device's share of the batch whose chunks
    are no larger (16 clips per device, size 4: 4 chunks; 2 clips per device: 1).
    ``num_devices``: the mesh's (default ``config.mesh.num_devices``, else all).
    """
    size = int(config.train.get("microbatch_size", 0))
    devices = num_devices or config.mesh.get("num_devices") or jax.device_count()
    per_device = max(int(config.data.batch_size) // devices, 1)
    if size <= 0 or size >= per_device:
        return 1
    divisors = (d for d in range(2, per_device + 1) if per_device % d == 0)
    return next(d for d in divisors if per_device // d <= size)


def _check_microbatches_fit(config: Any, params: Any, num_devices: int) -> None:
    """Chunked updates need a model without running statistics (BatchNorm)."""
    chunks = microbatches_from_config(config, num_devices)
    if chunks > 1 and model_state.is_stateful(params):
        raise ConfigError(
            f"config.train.microbatch_size={config.train.microbatch_size} splits each update "
            f"into {chunks} chunks, but {config.model.name} keeps BatchNorm running statistics, "
            "whose batch statistics would be each chunk's instead of the batch's; expected 0 "
            "for it."
        )


def _create_state(config: Any, system: Any, init_batch, optimizer, mesh):
    """``(state, its shardings)``: created directly in its final layout on ``mesh``.

    Replicated, or split over the devices with ``mesh.param_sharding='fsdp'``: no
    device ever holds more than its share. Process 0 prints the sizes.
    """
    init_state = make_state_initializer(config, system, init_batch, optimizer)
    abstract, state_sharding = state_shardings_from_config(config, init_state, mesh)
    _check_microbatches_fit(config, abstract.params, mesh.size)
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


def _per_step(metrics: dict) -> list[dict]:
    """One call's fetched metrics as one dict per update (``[k]`` arrays are split)."""
    if np.ndim(metrics["step"]) == 0:
        return [metrics]
    return [{n: v[i] for n, v in metrics.items()} for i in range(len(metrics["step"]))]


class _Logger:
    """Collects the per-step metrics on device and writes them every ``log_every_steps``."""

    def __init__(self, writer: MetricWriter, schedule, bar, manager):
        self.writer, self.schedule, self.bar, self.manager = writer, schedule, bar, manager
        self.pending: list[dict] = []
        self.tick = time.perf_counter()

    def flush(self, step: int, done: int) -> None:
        """Fetches the pending metrics (one transfer), checks them and writes the last.

        A multi-step call's metrics are ``[k]`` arrays: one row per update.
        """
        host = [row for m in jax.device_get(self.pending) for row in _per_step(m)]
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


def _crossed(done: int, k: int, every: int) -> bool:
    """Whether the call that took the run from ``done - k`` to ``done`` steps passed a
    multiple of ``every``."""
    return done // every > (done - k) // every


def stacked_sharding(mesh) -> jax.sharding.NamedSharding:
    """``[k, B, ...]``: the step axis whole on every device, the batch axis split."""
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, mesh.axis_names[0]))


def stacked_batches(
    batches: list[Mapping[str, Any]], mesh, keys: tuple[str, ...]
) -> dict[str, jax.Array]:
    """``k`` local batches as the global ``[k, B, ...]`` input of a multi-step call."""
    sh = stacked_sharding(mesh)
    local = {k: np.stack([np.asarray(b[k]) for b in batches]) for k in keys}
    if jax.process_count() == 1:
        return jax.device_put(local, sh)
    return {k: jax.make_array_from_process_local_data(sh, v) for k, v in local.items()}


def _restore(manager, state, data_iter, total: int) -> train_state.TrainState:
    """The newest restorable checkpoint's state (``data_iter`` moved to its position), or
    ``state`` when ``manager`` holds none."""
    restored = checkpointing.restore_newest(manager, state, data_iter=data_iter)
    if restored is None:
        return state
    _report_resume(manager, restored, total)
    return restored.state


def open_checkpoints(config: Any, workdir: str | epath.Path, *, checkpoint_data: bool = True):
    """The run's checkpoint manager (``workdir/checkpoints``), as :func:`train` uses it.

    ``checkpoint_data``: the data iterator's position is an item of every checkpoint.
    """
    return checkpointing.make_checkpoint_manager(
        epath.Path(workdir) / "checkpoints",
        max_to_keep=config.ckpt.max_to_keep,
        with_data_iterator=checkpoint_data,
    )


def train(
    config: Any,
    workdir: str | epath.Path,
    *,
    system: Any,
    train_iter: CheckpointableIterator | Iterator[Mapping[str, Any]],
    steps_per_epoch: int,
    init_batch: Mapping[str, np.ndarray],
    checkpoint_data: bool = True,
    manager=None,
) -> train_state.TrainState:
    """Trains ``system`` and returns the final state (checkpointed under ``workdir``).

    Args:
      config: ``ml_collections.ConfigDict`` with blocks ``optim``, ``train``, ``mesh``,
        ``ckpt`` (see ``configs/d3dp_h36m.py``).
      workdir: run directory (local or ``gs://``): checkpoints, ``metrics.jsonl``.
      system: a :class:`pose_jax.systems.System` (``init_params``, ``loss_fn``).
      train_iter: iterator of per-process batches (dicts of ``[b, ...]`` arrays); a
        :class:`CheckpointableIterator` unless ``checkpoint_data=False``.
      steps_per_epoch: global updates per epoch (drives the per-epoch lr decay).
      init_batch: one batch (shapes only matter) to initialise the parameters.
      checkpoint_data: save (and restore) ``train_iter``'s position with the state.
        ``config.train.steps_per_call`` (default 1) updates run per jitted call
        (:func:`train_step.make_multi_step`); the last ones, fewer than that, one by one.
      manager: the run's checkpoint manager when the caller opened it already
        (:func:`open_checkpoints`, same ``checkpoint_data``); it stays open. By
        default the loop opens and closes its own.

    Raises:
      NonFiniteLossError: the loss or gradient norm became NaN/inf (names the step).
    """
    workdir = epath.Path(workdir)
    mesh = sharding_lib.make_mesh(config.mesh.get("num_devices") or None)
    optimizer, schedule = make_optimizer_from_config(config, steps_per_epoch)
    state, state_sharding = _create_state(config, system, init_batch, optimizer, mesh)
    total = total_steps(config, steps_per_epoch)
    owned = manager is None
    if owned:
        manager = open_checkpoints(config, workdir, checkpoint_data=checkpoint_data)
    data_iter = train_iter if checkpoint_data else None
    try:
        state = _restore(manager, state, data_iter, total)
        update = make_train_step_from_config(config, system, optimizer)
        multi = stacked_sharding(mesh)
        step_fns = {
            k: jax.jit(
                update if k == 1 else train_step.make_multi_step(update),
                in_shardings=(
                    state_sharding,
                    sharding_lib.batch_sharding(mesh) if k == 1 else multi,
                ),
                out_shardings=(state_sharding, sharding_lib.replicated(mesh)),
                donate_argnums=(0,),
            )
            for k in {1, int(config.train.get("steps_per_call", 1))}
        }
        loop = _Loop(config, workdir, mesh, tuple(system.batch_keys), manager, data_iter)
        return loop.run(step_fns, state, train_iter, schedule, total)
    finally:
        if owned:
            manager.close()


class _Loop:
    """The steps of one run: update, log, checkpoint, stop on SIGTERM."""

    def __init__(self, config, workdir, mesh, keys, manager, data_iter):
        self.config, self.workdir, self.mesh, self.keys = config, workdir, mesh, keys
        self.manager, self.data_iter = manager, data_iter

    def _call(self, step_fns, state, train_iter, k: int):
        """``k`` updates in one call (``train.steps_per_call``; single steps at the end)."""
        if k == 1:
            return step_fns[1](state, global_batch(next(train_iter), self.mesh, self.keys))
        batches = [next(train_iter) for _ in range(k)]
        return step_fns[k](state, stacked_batches(batches, self.mesh, self.keys))

    def run(self, step_fns, state, train_iter, schedule, total: int):
        """Calls until ``total`` steps; logs and saves when a call passes their intervals."""
        tcfg = self.config.train
        per_call = max(step_fns)
        start = int(jax.device_get(state.step))
        ckpt_cfg = self.config.to_dict()
        writer = MetricWriter(self.workdir, tensorboard=tcfg.get("tensorboard", True))
        bar = _progress(total, start)
        logger = _Logger(writer, schedule, bar, self.manager)
        preempt = _Preemption(self.mesh)
        try:
            done = start
            while done < total:
                k = per_call if total - done >= per_call else 1
                state, metrics = self._call(step_fns, state, train_iter, k)
                logger.pending.append(metrics)
                done += k
                if _crossed(done, k, tcfg.log_every_steps) or done == total:
                    logger.flush(done - 1, done)
                if bar is not None:
                    bar.update(k)
                stop = preempt.should_stop()
                if _crossed(done, k, tcfg.checkpoint_every_steps) or done == total or stop:
                    checkpointing.save(
                        self.manager, done, state, config=ckpt_cfg, data_iter=self.data_iter,
                        force=True,
                    )  # fmt: skip
                if stop:
                    _say_stopped(done)
                    break
        finally:
            if bar is not None:
                bar.close()
            preempt.restore()
            writer.close()
        return state
