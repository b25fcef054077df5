"""Wiring from a config to data, system, training loop and evaluation (importable, testable).

``launch/train.py`` and ``launch/evaluate.py`` only parse flags and call
:func:`train_and_evaluate` / :func:`evaluate`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterable
from typing import Any

import jax
import numpy as np
from etils import epath

from data_pipelines import input_pipeline, registry
from pose_jax import evaluation, skeleton
from pose_jax import sharding as sharding_lib
from pose_jax.errors import InputError
from pose_jax.systems import get_system
from pose_jax.training import checkpointing, config_checks, loop
from pose_jax.training import workdir as workdir_lib

DEFAULT_DATA_DIR = os.path.join("~", "tensorflow_datasets")


def data_dir(config) -> str:
    """The config's TFDS data directory as an absolute path (relative to the working dir)."""
    return os.fspath(workdir_lib.resolve(config.data.data_dir or DEFAULT_DATA_DIR))


def ensure_dataset(config) -> None:
    """Builds the dataset if it is the project's own synthetic one and not built yet.

    Licensed datasets are never built implicitly: they need ``launch.build_dataset``
    with ``--manual_dir`` first, and loading names the missing files.
    """
    name, cfg, _ = registry.parse(config.data.dataset)
    if registry.get(config.data.dataset).needs_manual_dir:
        return
    from data_pipelines.build import build

    # One writer: process 0 builds, the others wait for it (concurrent builds of the
    # same TFDS directory collide).
    if jax.process_index() == 0:
        build(name, cfg or None, data_dir=data_dir(config), progress=False)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"pose_jax: built {config.data.dataset}")


def make_system(config):
    """The system (model + diffusion) described by ``config``."""
    info = registry.get(config.data.dataset)
    return get_system(config.system).from_config(
        config, skeleton=info.skeleton, keypoints=info.keypoints(config.data.dataset)
    )


def _mean_pose(store) -> np.ndarray:
    """Mean root-relative training pose ``[J, 3]`` (the mean-pose baseline)."""
    total = np.zeros(store.pose_3d[0].shape[1:], np.float64)
    count = 0
    for p in store.pose_3d:
        rel = p - p[:, store.root : store.root + 1]
        total += rel.sum(axis=0)
        count += rel.shape[0]
    return (total / max(count, 1)).astype(np.float32)


def train_and_evaluate(
    config, workdir: str, *, evaluate_after: bool = True, allow_config_change=()
) -> dict[str, Any]:
    """Trains the configured system under ``workdir`` and (optionally) evaluates it.

    Every config value is checked before anything is compiled; a workdir that holds
    a checkpoint is resumed only with a compatible config (``allow_config_change``
    names further keys the user lets differ); one run at a time holds the workdir.

    Returns:
      ``{'state': TrainState, 'results': dict | None}``.
    """
    workdir = workdir_lib.resolve(workdir)
    config_checks.check_train_config(
        config, num_devices=jax.device_count(), num_processes=jax.process_count()
    )
    # One checkpoint manager for the whole run: the resume check and the loop.
    manager = loop.open_checkpoints(config, workdir)
    try:
        check_resume(config, manager, allow=allow_config_change)
        with workdir_lib.WorkdirLock(workdir) if jax.process_index() == 0 else _no_lock():
            return _train_and_evaluate(config, workdir, manager, evaluate_after=evaluate_after)
    finally:
        manager.close()


def _no_lock():
    import contextlib

    return contextlib.nullcontext()


def check_resume(config, manager, *, allow=()) -> None:
    """Refuses to resume ``manager``'s newest checkpoint with a config that differs where
    it matters (nothing to check when the run has no checkpoint yet)."""
    found = checkpointing.read_config(manager)
    if found is None:
        return
    step, saved = found
    ckpt_dir = epath.Path(manager.directory)
    accepted = workdir_lib.check_resume_config(
        saved, config.to_dict(), where=os.fspath(ckpt_dir / str(step)), allow=allow
    )
    if accepted and jax.process_index() == 0:
        names = ", ".join(sorted(accepted))
        print(f"train: resuming {ckpt_dir} with changed settings: {names}.", flush=True)


def _train_iterator(config, system, store, *, local_batch: int, **kwargs):
    return input_pipeline.make_train_iterator(
        store,
        batch_size=local_batch,
        chunk_length=config.data.num_frames,
        seed=config.train.seed,
        single_frame=system.single_frame,
        **kwargs,
    )


@dataclasses.dataclass(frozen=True)
class TrainingInputs:
    """What :func:`loop.train` needs from the data: the fitted system and the batches."""

    system: Any
    train_iter: Any  # a checkpointable grain iterator of this process's batches
    steps_per_epoch: int
    init_batch: dict
    store: Any  # the training split (input_pipeline.SequenceStore)


def prepare_training(config) -> TrainingInputs:
    """Reads the training split and builds the system, its batch stream and statistics."""
    ensure_dataset(config)
    store = input_pipeline.load_sequences(
        config.data.dataset, config.data.train_split, data_dir=data_dir(config)
    )
    config_checks.check_frames(
        config, max(map(len, store.pose_3d), default=0), split=config.data.train_split
    )
    local_batch = config.data.batch_size // jax.process_count()
    system = make_system(config)
    train_iter = _train_iterator(
        config,
        system,
        store,
        local_batch=local_batch,
        flip=config.data.flip,
        worker_count=config.data.worker_count,
    )
    # Single-frame batches draw frames, whatever the evaluation window data.num_frames is.
    clips = input_pipeline.count_train_clips(
        store, 1 if system.single_frame else config.data.num_frames, config.data.flip
    )
    init_batch = next(
        _train_iterator(config, system, store, local_batch=1, flip="none", shuffle=False)
    )
    # What a system fits to the training split (DiffPose's GMM noise; others: nothing).
    # The same unsharded, seeded stream on every process, so every process fits the same.
    system = system.with_data_statistics(
        _train_iterator(
            config,
            system,
            store,
            local_batch=local_batch,
            flip="none",
            shard_index=0,
            shard_count=1,
        )
    )
    return TrainingInputs(
        system, train_iter, max(1, clips // config.data.batch_size), init_batch, store
    )


def _train_and_evaluate(config, workdir: epath.Path, manager, *, evaluate_after: bool):
    inputs = prepare_training(config)
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
        (workdir / "mean_pose.npy").write_bytes(_npy_bytes(_mean_pose(inputs.store)))
    state = loop.train(
        config,
        workdir,
        system=inputs.system,
        train_iter=inputs.train_iter,
        steps_per_epoch=inputs.steps_per_epoch,
        init_batch=inputs.init_batch,
        manager=manager,
    )
    results = None
    if evaluate_after:
        done = int(jax.device_get(state.step))
        if done < loop.total_steps(config, inputs.steps_per_epoch):
            print(f"train_and_evaluate: stopped early at step {done} (preempted); not evaluating.")
        else:
            results = evaluate(config, str(workdir), state=state, system=inputs.system)
    return {"state": state, "results": results}


def _npy_bytes(a: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


class WorkdirNotFoundError(InputError, FileNotFoundError):
    """``launch.evaluate`` was pointed at a directory that holds no training run."""


def _checkpoint_dir(workdir: epath.Path) -> epath.Path:
    """``workdir/checkpoints``, refusing (without creating anything) when it is missing."""
    ckpt_dir = workdir / "checkpoints"
    if ckpt_dir.is_dir():
        return ckpt_dir
    if not workdir.exists():
        raise WorkdirNotFoundError(
            f"evaluate: workdir {workdir} does not exist; expected the --workdir of a "
            "launch.train run (it holds checkpoints/)."
        )
    present = sorted(p.name for p in workdir.iterdir())[:10]
    raise WorkdirNotFoundError(
        f"evaluate: {workdir} holds no checkpoints/ directory (it has {present}); expected "
        "the --workdir of a launch.train run; train first."
    )


def restore_params(config, workdir: epath.Path, system, *, who: str = "evaluate") -> Any:
    """Newest restorable checkpoint's params (EMA params when ``config.eval.use_ema``).

    ``who`` starts the lines it prints (the entry point using it).
    """
    manager = checkpointing.make_checkpoint_manager(
        _checkpoint_dir(workdir), with_data_iterator=False
    )
    found = checkpointing.read_config(manager)
    if found is not None:
        workdir_lib.check_resume_config(
            found[1],
            config.to_dict(),
            where=os.fspath(manager.directory / str(found[0])),
            allow=EVALUATION_FREE_KEYS,
            purpose="evaluate",
        )
    init_batch = system.example_batch(config.data.num_frames)
    optimizer, _ = loop.make_optimizer_from_config(config, steps_per_epoch=1)
    like_fn = loop.make_state_initializer(config, system, init_batch, optimizer)
    # A template on the global mesh (every process's devices), so that orbax restores
    # the same global arrays in one process or in several.
    like = jax.jit(like_fn, out_shardings=sharding_lib.replicated(sharding_lib.make_mesh()))()
    restored = checkpointing.restore_newest(manager, like)
    manager.close()
    if restored is None:
        raise WorkdirNotFoundError(
            f"evaluate: no checkpoint under {manager.directory}; train first."
        )
    if jax.process_index() == 0:
        for step, reason in restored.skipped:
            print(f"{who}: skipped checkpoint step {step}, it does not restore ({reason}).")
        print(f"{who}: checkpoint step {restored.step} of {manager.directory}.", flush=True)
    state = restored.state
    if config.eval.use_ema:
        if state.ema_params is None:
            raise InputError("evaluate: config.eval.use_ema=True but the run kept no EMA params.")
        return state.ema_params, restored.step
    return state.params, restored.step


# What evaluation may change against the trained run's config: how it was trained
# (duration, optimiser settings) and which data it reads (cross-dataset evaluation).
EVALUATION_FREE_KEYS = ("train.", "optim.", "data.")


def evaluate(config, workdir: str, *, state=None, system=None) -> dict[str, Any]:
    """Evaluates the newest checkpoint (or ``state``) and writes ``WORKDIR/eval/``."""
    workdir = workdir_lib.resolve(workdir)
    config_checks.check_eval_config(config)
    if state is None:
        _checkpoint_dir(workdir)  # before building anything
    system = system or make_system(config)
    if state is not None:
        params = state.ema_params if config.eval.use_ema else state.params
        step = int(jax.device_get(state.step))
    else:
        params, step = restore_params(config, workdir, system)
    mean_pose_path = workdir / "mean_pose.npy"
    baseline = np.load(mean_pose_path.open("rb")) if mean_pose_path.exists() else None
    results = evaluate_params(config, system, params, baseline_pose=baseline)
    results["protocol"]["checkpoint_step"] = step
    if jax.process_index() == 0:
        evaluation.write_results(results, workdir / "eval", plots=config.eval.plots)
        print(evaluation.markdown_table(results))
        print(f"wrote {workdir / 'eval'}")
    return {k: v for k, v in results.items() if k != "example"} | {"example": results["example"]}


def evaluate_params(
    config,
    system,
    params,
    *,
    eval_config=None,
    baseline_pose: np.ndarray | None = None,
    limit_windows: Callable[[Iterable[dict], Any], Iterable[dict]] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """The protocol results of ``params`` on the run's evaluation split; writes nothing.

    ``eval_config`` replaces ``config.eval`` (e.g. another H x K); ``limit_windows``
    (``(windows, eval_config) -> windows``) may cut the evaluation short (benchmarks);
    ``progress`` shows a progress bar with ETA over the sequences (process 0).
    """
    ensure_dataset(config)
    ecfg = config.eval if eval_config is None else eval_config
    sample_fn = system.make_eval_sample_fn(ecfg, params, num_frames=config.data.num_frames)
    store = input_pipeline.load_sequences(
        config.data.dataset, config.data.eval_split, data_dir=data_dir(config)
    )
    windows = input_pipeline.make_eval_windows(store, window=config.data.num_frames)
    num_sequences = len(store)
    if ecfg.max_sequences:
        num_sequences = min(num_sequences, ecfg.max_sequences)
    if limit_windows is not None:
        windows = limit_windows(windows, ecfg)
    info = registry.get(config.data.dataset)
    evaluators = evaluation.evaluators_for(
        info.protocol,
        mode=ecfg.hypothesis_aggregation,
        root=skeleton.get_skeleton(info.skeleton).root,
        baseline_pose=baseline_pose,
        keypoints=info.keypoints(config.data.dataset),
    )
    results = evaluation.run(
        sample_fn,
        windows,
        evaluators=evaluators,
        key=jax.random.key(ecfg.seed),
        batch_size=ecfg.batch_size,
        weighting=ecfg.frame_weighting,
        max_sequences=ecfg.max_sequences,
        progress=progress and jax.process_index() == 0,
        total_sequences=num_sequences,
    )
    results["protocol"].update(
        dataset=config.data.dataset,
        split=config.data.eval_split,
        params="ema" if ecfg.use_ema else "raw",
        flip_tta=bool(ecfg.flip_tta),
        eta=float(ecfg.eta),
    )
    results["protocol"].update(system.protocol_info(ecfg))
    return results


def dump(results: dict) -> str:
    return json.dumps({k: v for k, v in results.items() if k != "example"}, indent=2)


def evaluate_converted(
    converted_dir: str, config=None, *, lifter: str | None = None, workdir: str | None = None
) -> dict[str, Any]:
    """Evaluates a ``launch.convert`` output and writes the tables (``WORKDIR`` or ``DIR/eval``).

    ``config`` (optional) is adapted to the checkpoint's model and sizes and must build
    the same model (by default the model family's experiment file: its dataset and
    evaluation settings); ``lifter`` is the lifter a DiffPose-family denoiser refines.
    """
    from launch import converted as converted_lib

    config = converted_lib.converted_config(converted_dir, config, lifter=lifter)
    config_checks.check_eval_config(config)
    root, cfg = converted_lib.read_converted(converted_dir)
    system = make_system(config)
    params = converted_lib.load_converted_params(root, system, config)
    results = evaluate_params(config, system, params)
    results["protocol"]["converted"] = os.fspath(root)
    results["protocol"]["converted_model"] = cfg["model"]
    out = workdir_lib.resolve(workdir) / "eval" if workdir else root / "eval"
    if jax.process_index() == 0:
        evaluation.write_results(results, out, plots=config.eval.plots)
        print(evaluation.markdown_table(results))
        print(f"wrote {out}")
    return results
