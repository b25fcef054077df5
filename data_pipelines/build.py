"""Building the pose datasets by name: the library behind ``launch/build_dataset.py``.

``build('synthetic_pose', 'tiny', data_dir=...)`` prepares one config (a no-op
when it is already built) and returns the TFDS builder.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from data_pipelines import BUILDER_NAMES


def builder_class(dataset: str):
    """The ``Builder`` class of one of :data:`data_pipelines.BUILDER_NAMES`."""
    if dataset == "h36m_pose":
        from data_pipelines.h36m_pose import h36m_pose_dataset_builder as mod
    elif dataset == "mpi_inf_3dhp_pose":
        from data_pipelines.mpi_inf_3dhp_pose import mpi_inf_3dhp_pose_dataset_builder as mod
    elif dataset == "synthetic_pose":
        from data_pipelines.synthetic_pose import synthetic_pose_dataset_builder as mod
    else:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {BUILDER_NAMES}.")
    return mod.Builder


def resolve_config(dataset: str, config: str | None, validation_subjects: Sequence[str] = ()):
    """A config name, or a derived config object when subjects are held out for validation."""
    cls = builder_class(dataset)
    name = config or cls.DEFAULT_CONFIG_NAME
    known = {c.name: c for c in cls.BUILDER_CONFIGS}
    if name not in known:
        raise ValueError(
            f"{dataset}: unknown builder_config {name!r}; expected one of {sorted(known)}."
        )
    if not validation_subjects:
        return name
    subjects = tuple(validation_subjects)
    return dataclasses.replace(
        known[name],
        name=f"{name}_val_{'_'.join(subjects)}",
        validation_subjects=subjects,
        description=f"{known[name].description or ''} validation split = {', '.join(subjects)}",
    )


def build(
    dataset: str,
    builder_config: str | None = None,
    *,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    validation_subjects: Sequence[str] = (),
    progress: bool = True,
):
    """Builds (or finds already built) one dataset config; returns the TFDS builder.

    Args:
      dataset: one of :data:`data_pipelines.BUILDER_NAMES`.
      builder_config: config name; default: the builder's default config.
      data_dir: TFDS data directory.
      manual_dir: directory with the input files (unused by ``synthetic_pose``).
      validation_subjects: training subjects held out as ``validation``.
      progress: tqdm progress bars.
    """
    import tensorflow_datasets as tfds

    cls = builder_class(dataset)
    config = resolve_config(dataset, builder_config, validation_subjects)
    tfds.display_progress_bar(progress)
    builder = cls(config=config, data_dir=data_dir)
    download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
    builder.download_and_prepare(download_config=download_config)
    return builder


def describe(dataset: str) -> str:
    cls = builder_class(dataset)
    lines = [f"{dataset} configs (default {cls.DEFAULT_CONFIG_NAME!r}):"]
    lines += [f"  {c.name}: {c.description}" for c in cls.BUILDER_CONFIGS]
    lines += ["", "MANUAL_DOWNLOAD_INSTRUCTIONS:", cls.MANUAL_DOWNLOAD_INSTRUCTIONS]
    return "\n".join(lines)
