"""Checks that need a CUDA GPU (``-m gpu``; skipped where jax sees none).

Run on a GPU machine with the GPU visible to jax (the test set-up defaults
``JAX_PLATFORMS`` to the CPU)::

  JAX_PLATFORMS=cuda,cpu python -m pytest -m gpu tests/gpu_test.py

``scripts/gpu_suite.sh`` runs them first.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from launch.benchmarks import common as bench
from launch.benchmarks import training
from pose_jax.systems import get_system

pytestmark = pytest.mark.gpu


def _gpu():
    try:
        gpus = jax.devices("gpu")
    except RuntimeError:
        gpus = []
    if not gpus:
        pytest.skip("no CUDA GPU visible to jax (set JAX_PLATFORMS=cuda,cpu on a GPU machine)")
    return gpus[0]


def _system(name: str, denoiser: str, frames: int, **model_kwargs):
    config = bench.load_config(name, denoiser, model_kwargs=model_kwargs or None)
    with config.unlocked():
        config.data.num_frames = frames
    system = get_system(config.system).from_config(config)
    params = system.init_params(jax.random.key(0), system.example_batch(frames))
    return system, params


def _denoise_inputs(system, params, batch: int, frames: int):
    pose_2d = jax.random.uniform(jax.random.key(1), (batch, frames, 17, 2), minval=-1, maxval=1)
    inputs = system.sampler_inputs(params, pose_2d, jax.random.key(2))
    t = jnp.full(inputs.event.shape[:1], 5, jnp.int32)
    return inputs.event, t, inputs.cond


def _run_on(device, fn, *args):
    return np.asarray(jax.jit(fn)(*jax.device_put(args, device)), np.float64)


def _rel(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize(
    "name,denoiser,frames",
    [("d3dp", "d3dp_tiny", 27), ("mmdiff", "mmdiff_tiny", 1), ("diffpose_frame", None, 1)],
)
def test_denoiser_on_gpu_matches_cpu(name, denoiser, frames):
    """One denoiser call in float32 at 'highest' precision: GPU and CPU agree to 1e-5."""
    gpu, cpu = _gpu(), jax.devices("cpu")[0]
    system, params = _system(name, denoiser, frames)
    args = (params, *_denoise_inputs(system, params, 8, frames))
    with jax.default_matmul_precision("highest"):
        out_gpu = _run_on(gpu, system.denoise, *args)
        out_cpu = _run_on(cpu, system.denoise, *args)
    assert np.isfinite(out_gpu).all()
    assert _rel(out_gpu, out_cpu) < 1e-5


def test_cudnn_attention_matches_xla_in_bfloat16():
    """MixSTE with cuDNN flash attention: within bfloat16 rounding of XLA's attention."""
    gpu = _gpu()
    outs = {}
    for impl in ("xla", "cudnn"):
        system, params = _system("d3dp", "d3dp_tiny", 27, attention_impl=impl)
        system = system.with_compute_dtype(jnp.bfloat16)
        args = (params, *_denoise_inputs(system, params, 4, 27))
        outs[impl] = _run_on(gpu, system.denoise, *args)
    assert np.isfinite(outs["cudnn"]).all()
    assert _rel(outs["cudnn"], outs["xla"]) < 2e-2


def test_bfloat16_sampler_close_to_float32_on_gpu():
    """The whole compiled D3DP sampler on the GPU: bf16 stays near float32 (random weights)."""
    _gpu()
    system, params = _system("d3dp", "d3dp_tiny", 27)
    pose_2d = jax.random.uniform(jax.random.key(1), (2, 27, 17, 2), minval=-1, maxval=1)
    inputs = system.sampler_inputs(params, pose_2d, jax.random.key(2))
    kind = bench.BENCHMARKED["d3dp"].grid
    spec = bench.sampler_spec(kind, {"H": 2, "K": 2}, frames=27, flip=True)
    outs = {}
    for dtype in (jnp.float32, jnp.bfloat16):
        call, _ = bench.sampler_call(system.with_compute_dtype(dtype), spec, params, inputs)
        outs[dtype] = np.asarray(call(0), np.float64)
    assert np.isfinite(outs[jnp.bfloat16]).all()
    assert _rel(outs[jnp.bfloat16], outs[jnp.float32]) < 5e-2


def test_training_step_on_gpu_reports_memory():
    """A training step compiles, runs and lowers its loss-finite state on the GPU."""
    gpu = _gpu()
    step = training.step_call("d3dp", 2, profile_name="gpu", frames=27, denoiser="d3dp_tiny")
    _, metrics = step.call(0)
    _, metrics = step.call(1)
    assert np.isfinite(float(metrics["loss"]))
    assert step.row["xla_memory_mib"] and step.row["xla_memory_mib"] > 0
    assert gpu.memory_stats()["peak_bytes_in_use"] > 0
