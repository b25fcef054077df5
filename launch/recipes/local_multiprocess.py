r"""Starts N local processes of ``python -m launch.train ... --distributed`` and waits.

  python launch/recipes/local_multiprocess.py --num_processes=4 --cpu_devices=1 -- \
      --config=configs/quickstart.py:runlocal --workdir=/tmp/runs/local4

Everything after ``--`` goes to ``launch.train``. Each process gets
``POSE_JAX_COORDINATOR=127.0.0.1:PORT``, ``POSE_JAX_NUM_PROCESSES=N`` and
``POSE_JAX_PROCESS_ID=i`` (read by ``launch.distributed``). Output lines are
prefixed ``[i]``. When one process fails the others are stopped and its exit
status is returned; SIGTERM/SIGINT are forwarded, so a preemption rehearsal
(``kill -TERM <recipe pid>``) makes every process save and stop (a second signal
kills them).

This is for rehearsing multi-process runs on one machine (CPU: ``--cpu_devices``
fakes that many devices per process; GPU: ``--gpus_per_process`` sets
``CUDA_VISIBLE_DEVICES`` per process).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_env(
    base: dict[str, str],
    *,
    process_id: int,
    num_processes: int,
    port: int,
    cpu_devices: int = 0,
    gpus_per_process: int = 0,
) -> dict[str, str]:
    """The environment of process ``process_id``."""
    env = dict(base)
    env["POSE_JAX_COORDINATOR"] = f"127.0.0.1:{port}"
    env["POSE_JAX_NUM_PROCESSES"] = str(num_processes)
    env["POSE_JAX_PROCESS_ID"] = str(process_id)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_REPO, base.get("PYTHONPATH", "")) if p)
    # Never inherit a parent's SLURM step: launch.distributed passes ours, but jax's
    # cluster detection would still read SLURM_LOCALID to pick each process's devices.
    for k in [k for k in env if k.startswith("SLURM_")]:
        del env[k]
    if cpu_devices:
        flags = [
            f
            for f in env.get("XLA_FLAGS", "").split()
            if not f.startswith("--xla_force_host_platform_device_count")
        ]
        env["XLA_FLAGS"] = " ".join(
            [*flags, f"--xla_force_host_platform_device_count={cpu_devices}"]
        )
        env["JAX_PLATFORMS"] = "cpu"
    if gpus_per_process:
        first = process_id * gpus_per_process
        env["CUDA_VISIBLE_DEVICES"] = ",".join(
            str(d) for d in range(first, first + gpus_per_process)
        )
    return env


def _pump(stream, prefix: str) -> None:
    for line in stream:
        sys.stdout.write(f"{prefix}{line}")
        sys.stdout.flush()


def _start(cmd: list[str], num_processes: int, **env_kwargs) -> list[subprocess.Popen]:
    """Starts ``num_processes`` copies of ``cmd``, each with its :func:`process_env`."""
    procs = []
    for i in range(num_processes):
        env = process_env(dict(os.environ), process_id=i, num_processes=num_processes, **env_kwargs)
        procs.append(
            subprocess.Popen(
                cmd,
                cwd=_REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                bufsize=1,
            )
        )
    return procs


def _signal_forwarder(procs: list[subprocess.Popen]):
    """A signal handler for the recipe: forwards the first signal, kills on a second.

    The first SIGTERM/SIGINT makes every process save and stop; a second one kills
    whatever is still running.
    """
    signals_seen = []

    def forward(signum, frame):
        del frame
        signals_seen.append(signum)
        for p in procs:
            if p.poll() is not None:
                continue
            if len(signals_seen) > 1:
                p.kill()
            else:
                p.send_signal(signum)

    return forward


def _wait(procs: list[subprocess.Popen], timeout_s: float) -> int:
    """Waits until all exit (-> the first non-zero status, or 0), one fails, or timeout (124)."""
    deadline = time.monotonic() + timeout_s if timeout_s else None
    while any(p.poll() is None for p in procs):
        failed = [p.returncode for p in procs if p.returncode not in (None, 0)]
        if failed:
            return failed[0]
        if deadline is not None and time.monotonic() > deadline:
            print(f"local_multiprocess: timed out after {timeout_s} s.", flush=True)
            return 124
        time.sleep(0.2)
    return next((p.returncode for p in procs if p.returncode), 0)


def _stop(procs: list[subprocess.Popen], pumps: list[threading.Thread]) -> None:
    """Terminates the processes still running (SIGKILL after 30 s) and drains their output."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    # A process blocked in a collective (or in jax.distributed's exit barrier)
    # may not act on SIGTERM; it gets SIGKILL after a grace period.
    grace = time.monotonic() + 30
    for p in procs:
        try:
            p.wait(timeout=max(0.1, grace - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    for t in pumps:
        t.join(timeout=5)


def run(
    num_processes: int,
    train_args: list[str],
    *,
    port: int = 0,
    cpu_devices: int = 0,
    gpus_per_process: int = 0,
    timeout_s: float = 0,
    module: str = "launch.train",
) -> int:
    """Runs ``num_processes`` copies of ``python -m module train_args --distributed``.

    Returns:
      0 when every process exited 0; otherwise the first failure's exit status
      (124 on timeout). The other processes are terminated on a failure.
    """
    cmd = [sys.executable, "-m", module, *train_args, "--distributed"]
    procs = _start(
        cmd,
        num_processes,
        port=port or free_port(),
        cpu_devices=cpu_devices,
        gpus_per_process=gpus_per_process,
    )
    pumps = [
        threading.Thread(target=_pump, args=(p.stdout, f"[{i}] "), daemon=True)
        for i, p in enumerate(procs)
    ]
    for t in pumps:
        t.start()
    forward = _signal_forwarder(procs)
    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        status = _wait(procs, timeout_s)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _stop(procs, pumps)
    if status:
        codes = ", ".join(f"[{i}] {p.returncode}" for i, p in enumerate(procs))
        print(f"local_multiprocess: failed (exit status {codes}).", flush=True)
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--num_processes", type=int, required=True)
    parser.add_argument("--port", type=int, default=0, help="Coordinator port (0: a free one).")
    parser.add_argument(
        "--cpu_devices", type=int, default=0, help="Fake CPU devices per process (0: leave)."
    )
    parser.add_argument(
        "--gpus_per_process", type=int, default=0, help="GPUs per process (0: leave)."
    )
    parser.add_argument("--timeout_s", type=float, default=0, help="0: no limit.")
    parser.add_argument("train_args", nargs="*", help="After '--': launch.train flags.")
    args = parser.parse_args(argv)
    if args.num_processes < 1:
        parser.error("--num_processes must be at least 1")
    return run(
        args.num_processes,
        args.train_args,
        port=args.port,
        cpu_devices=args.cpu_devices,
        gpus_per_process=args.gpus_per_process,
        timeout_s=args.timeout_s,
    )


if __name__ == "__main__":
    sys.exit(main())
