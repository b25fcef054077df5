"""Wiring from a config to data, system, training loop and evaluation (importable, testable).

``launch/train.py`` and ``launch/evaluate.py`` only parse flags and call
:func:`train_and_evaluate` / :func:`evaluate`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

import jax
import numpy as np
from etils import epath

from data_pipelines import input_pipeline
from pose_jax import evaluation, skeleton
from pose_jax import sharding as sharding_lib
from pose_jax.systems import get_system
from pose_jax.training import checkpointing, loop

DEFAULT_DATA_DIR = os.path.join("~", "tensorflow_datasets")


def data_dir(config) -> str:
    return os.path.expanduser(config.data.data_dir or DEFAULT_DATA_DIR)


def ensure_dataset(config) -> None:
    """Builds the dataset if it is the project's own synthetic one and not built yet.

    Licensed datasets are never built implicitly: they need ``launch.build_dataset``
    with ``--manual_dir`` first, and loading names the missing files.
    """
    name, _, cfg = config.data.dataset.partition("/")
    if name != "synthetic_pose":
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
    skeleton_name = input_pipeline.dataset_skeleton(config.data.dataset)
    return get_system(config.system).from_config(config, skeleton=skeleton_name)


def _mean_pose(store) -> np.ndarray:
    """Mean root-relative training pose ``[J, 3]`` (the mean-pose baseline)."""
    total = np.zeros(store.pose_3d[0].shape[1:], np.float64)
    count = 0
    for p in store.pose_3d:
        rel = p - p[:, store.root : store.root + 1]
        total += rel.sum(axis=0)
        count += rel.shape[0]
    return (total / max(count, 1)).astype(np.float32)


def train_and_evaluate(config, workdir: str, *, evaluate_after: bool = True) -> dict[str, Any]:
    """Trains the configured system under ``workdir`` and (optionally) evaluates it.

    Returns:
      ``{'state': TrainState, 'results': dict | None}``.
    """
    workdir = epath.Path(os.path.expanduser(workdir))
    ensure_dataset(config)
    store = input_pipeline.load_sequences(
        config.data.dataset, config.data.train_split, data_dir=data_dir(config)
    )
    nproc = jax.process_count()
    if config.data.batch_size % nproc:
        raise ValueError(
            f"config.data.batch_size={config.data.batch_size} (global) must divide by the "
            f"number of processes ({nproc})."
        )
    local_batch = config.data.batch_size // nproc
    train_iter = input_pipeline.make_train_iterator(
        store,
        batch_size=local_batch,
        chunk_length=config.data.num_frames,
        flip=config.data.flip,
        seed=config.train.seed,
        single_frame=config.data.get("single_frame", False),
        worker_count=config.data.worker_count,
    )
    single_frame = config.data.get("single_frame", False)
    # Single-frame batches draw frames, whatever the evaluation window data.num_frames is.
    clips = input_pipeline.count_train_clips(
        store, 1 if single_frame else config.data.num_frames, config.data.flip
    )
    steps_per_epoch = max(1, clips // config.data.batch_size)
    init_batch = next(
        input_pipeline.make_train_iterator(
            store,
            batch_size=1,
            chunk_length=config.data.num_frames,
            flip="none",
            shuffle=False,
            single_frame=config.data.get("single_frame", False),
        )
    )
    system = make_system(config)
    if hasattr(system, "with_data_statistics"):
        # Systems that fit something to the training split (DiffPose's GMM noise). The
        # same unsharded, seeded stream on every process, so every process fits the same.
        system = system.with_data_statistics(
            input_pipeline.make_train_iterator(
                store,
                batch_size=local_batch,
                chunk_length=config.data.num_frames,
                flip="none",
                seed=config.train.seed,
                single_frame=single_frame,
                shard_index=0,
                shard_count=1,
            )
        )
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
        (workdir / "mean_pose.npy").write_bytes(_npy_bytes(_mean_pose(store)))
    state = loop.train(
        config,
        workdir,
        system=system,
        train_iter=train_iter,
        steps_per_epoch=steps_per_epoch,
        init_batch=init_batch,
    )
    results = None
    if evaluate_after:
        done = int(jax.device_get(state.step))
        if done < loop.total_steps(config, steps_per_epoch):
            print(f"train_and_evaluate: stopped early at step {done} (preempted); not evaluating.")
        else:
            results = evaluate(config, str(workdir), state=state, system=system)
    return {"state": state, "results": results}


def _npy_bytes(a: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def restore_params(config, workdir: epath.Path, system) -> Any:
    """Latest checkpoint's params (EMA params when ``config.eval.use_ema``)."""
    manager = checkpointing.make_checkpoint_manager(
        workdir / "checkpoints", with_data_iterator=False
    )
    step = manager.latest_step()
    if step is None:
        raise FileNotFoundError(
            f"evaluate: no checkpoint under {workdir / 'checkpoints'}; train first."
        )
    init_batch = system.example_batch(config.data.num_frames)
    optimizer, _ = loop.make_optimizer_from_config(config, steps_per_epoch=1)
    like_fn = loop.make_state_initializer(config, system, init_batch, optimizer)
    # A template on the global mesh (every process's devices), so that orbax restores
    # the same global arrays in one process or in several.
    like = jax.jit(like_fn, out_shardings=sharding_lib.replicated(sharding_lib.make_mesh()))()
    state, _ = checkpointing.restore(manager, like, step=step)
    manager.close()
    if config.eval.use_ema:
        if state.ema_params is None:
            raise ValueError("evaluate: config.eval.use_ema=True but the run kept no EMA params.")
        return state.ema_params, step
    return state.params, step


def evaluate(config, workdir: str, *, state=None, system=None) -> dict[str, Any]:
    """Evaluates the latest checkpoint (or ``state``) and writes ``WORKDIR/eval/``."""
    workdir = epath.Path(os.path.expanduser(workdir))
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
) -> dict[str, Any]:
    """The protocol results of ``params`` on the run's evaluation split; writes nothing.

    ``eval_config`` replaces ``config.eval`` (e.g. another H x K); ``limit_windows``
    (``(windows, eval_config) -> windows``) may cut the evaluation short (benchmarks).
    """
    ensure_dataset(config)
    ecfg = config.eval if eval_config is None else eval_config
    sample_fn = system.make_eval_sample_fn(ecfg, params, num_frames=config.data.num_frames)
    windows = input_pipeline.make_eval_windows(
        config.data.dataset,
        split=config.data.eval_split,
        data_dir=data_dir(config),
        window=config.data.num_frames,
    )
    if limit_windows is not None:
        windows = limit_windows(windows, ecfg)
    layout = input_pipeline.dataset_skeleton(config.data.dataset)
    results = evaluation.evaluate_hypotheses(
        sample_fn,
        windows,
        key=jax.random.key(ecfg.seed),
        batch_size=ecfg.batch_size,
        mode=ecfg.mode,
        weighting=ecfg.weighting,
        root=skeleton.get_skeleton(layout).root,
        joint_tables=layout == "3dhp",
        max_sequences=ecfg.max_sequences,
        baseline_pose=baseline_pose,
    )
    results["protocol"].update(
        dataset=config.data.dataset,
        split=config.data.eval_split,
        params="ema" if ecfg.use_ema else "raw",
        flip_tta=bool(ecfg.flip_tta),
        eta=float(ecfg.eta),
    )
    if hasattr(system, "protocol_info"):
        results["protocol"].update(system.protocol_info(ecfg))
    return results


def dump(results: dict) -> str:
    return json.dumps({k: v for k, v in results.items() if k != "example"}, indent=2)
