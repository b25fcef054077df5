"""Building the pose datasets by name: the library behind ``launch/build_dataset.py``.

Which datasets exist, and which need input files, comes from ``registry.py``.

``build('synthetic_pose', 'tiny', data_dir=...)`` prepares one config (a no-op
when it is already built) and returns the TFDS builder.
:func:`missing_dataset_message` says why a dataset cannot be loaded from a data
directory (a name typo, or not built yet) and which command builds it.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Sequence

from etils import epath

from data_pipelines import registry

# Configs derived by holding out validation subjects: '<config>_val_S8' or '..._val_S7_S8'.
_VAL_CONFIG = re.compile(r"^(?P<base>.+?)_val_(?P<subjects>S\d+(?:_S\d+)*)$")


def resolve_config(dataset: str, config: str | None, validation_subjects: Sequence[str] = ()):
    """A config name, or a derived config object when subjects are held out for validation."""
    cls = registry.get(dataset).builder_cls
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
      dataset: one of ``registry.names()``.
      builder_config: config name; default: the builder's default config.
      data_dir: TFDS data directory.
      manual_dir: directory with the input files (unused by ``synthetic_pose``).
      validation_subjects: training subjects held out as ``validation``.
      progress: tqdm progress bars.
    """
    import tensorflow_datasets as tfds

    cls = registry.get(dataset).builder_cls
    config = resolve_config(dataset, builder_config, validation_subjects)
    tfds.display_progress_bar(progress)
    builder = cls(config=config, data_dir=data_dir)
    download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
    builder.download_and_prepare(download_config=download_config)
    return builder


def describe(dataset: str) -> str:
    """The dataset's configs and its manual download instructions, for ``--info``."""
    cls = registry.get(dataset).builder_cls
    lines = [f"{dataset} configs (default {cls.DEFAULT_CONFIG_NAME!r}):"]
    lines += [f"  {c.name}: {c.description}" for c in cls.BUILDER_CONFIGS]
    lines += ["", "MANUAL_DOWNLOAD_INSTRUCTIONS:", cls.MANUAL_DOWNLOAD_INSTRUCTIONS]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- not built


def built_datasets(data_dir: str) -> dict[str, list[str]]:
    """``'name/config'`` -> versions built (with a ``dataset_info.json``) under ``data_dir``."""
    root = epath.Path(data_dir)
    out: dict[str, list[str]] = {}
    if not root.is_dir():
        return out
    for ds in sorted(root.iterdir()):
        if not ds.is_dir() or ds.name == "downloads" or ds.name.startswith("."):
            continue
        for cfg in sorted(ds.iterdir()):
            if not cfg.is_dir():
                continue
            versions = sorted(v.name for v in cfg.iterdir() if (v / "dataset_info.json").exists())
            if versions:
                out[f"{ds.name}/{cfg.name}"] = versions
    return out


def build_command(dataset: str, config: str, data_dir: str) -> str:
    """The ``launch.build_dataset`` command that builds ``dataset/config`` into ``data_dir``."""
    m = _VAL_CONFIG.match(config)
    parts = ["python -m launch.build_dataset", f"--dataset={dataset}"]
    parts.append(f"--builder_config={m['base'] if m else config}")
    if m:
        parts.append(f"--validation_subjects={m['subjects'].replace('_', ',')}")
    if registry.get(dataset).needs_manual_dir:
        parts.append("--manual_dir=/path/to/input_files")
    parts.append(f"--data_dir={data_dir}")
    return " ".join(parts)


def _builders_listing() -> list[str]:
    lines = []
    for name in registry.names():
        info = registry.get(name)
        configs = ", ".join(info.configs)
        lines.append(f"  {name}: configs {configs} (default {info.default_config})")
    lines.append("  (any config + '_val_<subjects>', e.g. gt_val_S8, holds those subjects out)")
    return lines


def _diagnose(name: str, config: str | None, version: str | None, built) -> tuple[str, str | None]:
    """``(problem, command dataset/config or None)``; problem '' when the dataset is built."""
    if name not in registry.names():
        close = difflib.get_close_matches(name, registry.names(), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        target = f"{close[0]}/{config or registry.get(close[0]).default_config}" if close else None
        return f"{name!r} is not one of our datasets{hint}", target
    info = registry.get(name)
    config = config or info.default_config
    versions = built.get(f"{name}/{config}", [])
    if versions and (version is None or version in versions):
        return "", None
    m = _VAL_CONFIG.match(config)
    base = m["base"] if m else config
    known = list(info.configs)
    if base not in known:
        close = difflib.get_close_matches(base, known, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"{name} has no config {base!r}{hint}", f"{name}/{close[0]}" if close else None
    if versions:
        return f"{name}/{config} is built in version(s) {versions}, not {version}", None
    return f"{name}/{config} is not built in this data_dir", f"{name}/{config}"


def missing_dataset_message(
    dataset: str, data_dir: str, who: str, *, problem: str | None = None
) -> str | None:
    """Why ``dataset`` cannot be loaded from ``data_dir``, or None when it is built there.

    Names our builders and their configs, the ``launch.build_dataset`` command that
    builds the dataset (or the closest existing name), and what ``data_dir`` holds.
    ``problem`` overrides the diagnosis (e.g. TFDS failed on a dataset that is on disk).
    """
    name, config, version = registry.parse(dataset)
    built = built_datasets(data_dir)
    found, target = _diagnose(name, config, version, built)
    if problem is None and not found:
        return None
    lines = [f"{who}: dataset {dataset!r}: {problem or found}.", "", "Our datasets:"]
    lines += _builders_listing()
    if target is not None:
        t_name, _, t_config = target.partition("/")
        lines += ["", "Build it with:", f"  {build_command(t_name, t_config, data_dir)}"]
    have = ", ".join(f"{k} ({', '.join(v)})" for k, v in built.items()) or "no built dataset"
    if not epath.Path(data_dir).is_dir():
        lines += ["", f"data_dir {data_dir!r} does not exist."]
    else:
        lines += ["", f"data_dir {data_dir!r} holds: {have}."]
    return "\n".join(lines)
