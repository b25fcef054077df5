"""One process of the two-process jax.distributed test (run as ``python -m distributed_worker``)."""

import sys


def main(process_id: int, port: int, data_dir: str, workdir: str) -> None:
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=process_id
    )
    import numpy as np
    from conftest import tiny_config

    from launch import experiment

    config = tiny_config(data_dir, **{"mesh.num_devices": 2})
    # Trains, then evaluates on both processes' devices (process 0 writes eval/).
    state = experiment.train_and_evaluate(config, workdir)["state"]
    leaves = [np.asarray(jax.device_get(x)) for x in jax.tree.leaves(state.params)]
    if process_id == 0:
        np.savez(f"{workdir}/params_process0.npz", **{f"p{i}": a for i, a in enumerate(leaves)})
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
