"""Every pose dataset, registered in one place: ``get('h36m_pose/gt')`` -> :class:`DatasetInfo`.

What the rest of the project needs to know about a dataset by name (its TFDS
builder, joint layout, evaluation tables, whether it can be built without input
files) lives in :data:`_DATASETS` below, and nowhere else. Adding a dataset is
one entry here plus its builder package.

Looking a dataset up imports nothing heavy: the builder module (tfds, jax) is
imported only when :attr:`DatasetInfo.builder_cls` (or ``configs``) is read.
The configs themselves stay defined once, in the builder's ``BUILDER_CONFIGS``.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib

from pose_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """One registered dataset.

    Attributes:
      name: the TFDS name (``'h36m_pose'``), also the builder's package.
      builder_module: module defining the dataset's ``class Builder``; imported lazily.
      skeleton: joint layout (a ``pose_jax.skeleton`` name: ``'h36m'`` or ``'3dhp'``).
      protocol: which evaluation tables its test split gets: ``'h36m'`` (the per-action
        tables) or ``'3dhp'`` (also the MPI-INF-3DHP PCK / AUC / MPJPE tables per
        sequence and activity: ``evaluate_hypotheses(joint_tables=True)``).
      needs_manual_dir: the builder reads input files from ``--manual_dir``; False
        only for datasets generated from nothing, which may be built implicitly.
    """

    name: str
    builder_module: str
    skeleton: str
    protocol: str
    needs_manual_dir: bool

    @property
    def builder_cls(self) -> type:
        """The TFDS builder class (importing it registers the name with TFDS)."""
        return importlib.import_module(self.builder_module).Builder

    @property
    def configs(self) -> tuple[str, ...]:
        """Names of the builder's configs, in the builder's order."""
        return tuple(c.name for c in self.builder_cls.BUILDER_CONFIGS)

    @property
    def default_config(self) -> str:
        return self.builder_cls.DEFAULT_CONFIG_NAME

    def keypoints(self, dataset: str) -> str:
        """The joint layout of the 2D of ``dataset``'s config (``'coco'``, or the skeleton).

        ``dataset`` is ``'name[/config][:version]'`` (the default config when none);
        a held-out config ``<config>_val_<subjects>`` has its base config's layout.

        Raises:
          ConfigError: the config is not one of the builder's.
        """
        _, config, _ = parse(dataset)
        name = config or self.default_config
        by_name = {c.name: c for c in self.builder_cls.BUILDER_CONFIGS}
        found = by_name.get(name) or by_name.get(name.split("_val_")[0])
        if found is None:
            raise ConfigError(
                f"{dataset}: unknown builder config {name!r} of {self.name}; expected one of "
                f"{sorted(by_name)}."
            )
        return found.keypoints or self.skeleton


_DATASETS = (
    DatasetInfo(
        name="h36m_pose",
        builder_module="data_pipelines.h36m_pose.h36m_pose_dataset_builder",
        skeleton="h36m",
        protocol="h36m",
        needs_manual_dir=True,
    ),
    DatasetInfo(
        name="mpi_inf_3dhp_pose",
        builder_module="data_pipelines.mpi_inf_3dhp_pose.mpi_inf_3dhp_pose_dataset_builder",
        skeleton="3dhp",
        protocol="3dhp",
        needs_manual_dir=True,
    ),
    DatasetInfo(
        name="synthetic_pose",
        builder_module="data_pipelines.synthetic_pose.synthetic_pose_dataset_builder",
        skeleton="h36m",
        protocol="h36m",
        needs_manual_dir=False,
    ),
)
_BY_NAME = {info.name: info for info in _DATASETS}


def names() -> tuple[str, ...]:
    """The registered dataset names, in registration order."""
    return tuple(_BY_NAME)


def parse(dataset: str) -> tuple[str, str | None, str | None]:
    """``'name[/config][:version]'`` -> ``(name, config or None, version or None)``."""
    rest, _, version = dataset.partition(":")
    name, _, config = rest.partition("/")
    return name, config or None, version or None


def get(dataset: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``'name'``, ``'name/config'`` or ``'name/config:version'``.

    The config part is not checked here (held-out configs such as ``gt_val_S8`` are
    derived at build time); ``build.resolve_config`` checks it.

    Raises:
      ConfigError: (a ``ValueError``) the name is not registered; the message lists
        the registered names and the closest one.
    """
    name = parse(dataset)[0]
    if name in _BY_NAME:
        return _BY_NAME[name]
    close = difflib.get_close_matches(name, names(), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    known = ", ".join(repr(n) for n in names())
    raise ConfigError(f"unknown dataset {dataset!r}{hint}; expected one of {known}.")
