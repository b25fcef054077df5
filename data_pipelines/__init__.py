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

Every dataset is registered once, in ``registry.py`` (builder, joint layout,
evaluation tables, whether it needs input files): ``registry.get('h36m_pose/gt')``.
Importing a builder module registers it with TFDS (``tfds.builder('h36m_pose/gt')``);
``register_builders()`` imports all of them.
"""

from __future__ import annotations

from data_pipelines import registry

BUILDER_NAMES = registry.names()


def register_builders() -> None:
    """Imports every builder module so that TFDS knows the dataset names."""
    # Deferred imports: the builders pull in jax (via pose_jax.camera) and tfds,
    # which callers of the pure-numpy transforms do not need.
    for name in registry.names():
        _ = registry.get(name).builder_cls  # importing the module registers it
