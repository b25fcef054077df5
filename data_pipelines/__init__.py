"""TFDS builders and grain input pipelines for pose_jax.

Builders (one package each, ``<name>/<name>_dataset_builder.py`` with ``class Builder``):

* ``h36m_pose``: Human3.6M from VideoPose3D's npz files (configs per 2D source).
* ``mpi_inf_3dhp_pose``: MPI-INF-3DHP from the P-STMO/D3DP npz files and the
  official test annotations.
* ``synthetic_pose``: procedural motion rendered through the real Human3.6M
  cameras; needs no download and has exactly the ``h36m_pose`` features.

Builders store raw keypoints and cameras; screen normalisation, root-centering,
windowing and flips are grain transforms (``transforms.py``) assembled by
``input_pipeline.py``. Nothing here imports TensorFlow.

Importing a builder module registers it with TFDS (``tfds.builder('h36m_pose/gt')``);
``register_builders()`` imports all three.
"""

from __future__ import annotations

BUILDER_NAMES = ("h36m_pose", "mpi_inf_3dhp_pose", "synthetic_pose")


def register_builders() -> None:
    """Imports every builder module so that TFDS knows the dataset names."""
    # Deferred imports: the builders pull in jax (via pose_jax.camera) and tfds,
    # which callers of the pure-numpy transforms do not need.
    from data_pipelines.h36m_pose import h36m_pose_dataset_builder  # noqa: F401
    from data_pipelines.mpi_inf_3dhp_pose import mpi_inf_3dhp_pose_dataset_builder  # noqa: F401
    from data_pipelines.synthetic_pose import synthetic_pose_dataset_builder  # noqa: F401
