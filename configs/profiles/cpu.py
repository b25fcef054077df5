"""CPU profile: float32, small batches, no extra XLA flags."""

from configs import profiles


def get_profile():
    p = profiles.base()
    p.name = "cpu"
    p.matmul_precision = "highest"
    p.batch_sizes.gcn_poses = (256, 1024)
    p.batch_sizes.d3dp_clips = 1
    # No peak is assumed for CPUs: it depends on cores, clock and vector width
    # (pass --peak_tflops to the benchmark to state one).
    return p
