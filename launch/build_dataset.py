r"""Builds one pose dataset config into a TFDS data directory (array_record, no TensorFlow).

  python -m launch.build_dataset --dataset=h36m_pose --builder_config=cpn_ft_h36m_dbb \
      --manual_dir=/data/h36m_npz --data_dir=/data/tfds
  python -m launch.build_dataset --dataset=synthetic_pose --builder_config=tiny --data_dir=/tmp/tfds
  python -m launch.build_dataset --dataset=h36m_pose --builder_config=gt \
      --validation_subjects=S8 --manual_dir=... --data_dir=...   # config 'gt_val_S8'

Read it back with ``tfds.data_source('<dataset>/<config>', split=..., data_dir=...)`` or
``data_pipelines.input_pipeline``. ``--dataset=NAME --info`` prints the configs and
the manual-download instructions. Relative ``--manual_dir`` / ``--data_dir`` are
taken relative to the current directory. Input files that do not have the
documented layout (missing, truncated, wrong units...) stop the build with one
message naming the file and what was expected, and exit status 1.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from absl import app, flags

from data_pipelines import BUILDER_NAMES
from data_pipelines.build import build, describe, resolve_config

_DATASET = flags.DEFINE_enum("dataset", None, list(BUILDER_NAMES), "Dataset to build.")
_CONFIG = flags.DEFINE_string(
    "builder_config",
    None,
    "Builder config (e.g. gt, cpn_ft_h36m_dbb, ori, tiny); default: the builder's default.",
)
_MANUAL_DIR = flags.DEFINE_string(
    "manual_dir", None, "Directory with the downloaded files (see MANUAL_DOWNLOAD_INSTRUCTIONS)."
)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory to write into.")
_VALIDATION = flags.DEFINE_list(
    "validation_subjects", [], "Training subjects to move into a 'validation' split (e.g. S8)."
)
_PROGRESS = flags.DEFINE_bool("progress", True, "Show tqdm progress bars.")
_INFO = flags.DEFINE_bool("info", False, "Print configs and download instructions, build nothing.")


def _absolute(path: str | None) -> str | None:
    """A directory flag as an absolute path (TFDS resolves relative ones elsewhere)."""
    return None if path is None else os.path.abspath(os.path.expanduser(path))


def _fail(message: str) -> NoReturn:
    print(f"build_dataset: {message}", file=sys.stderr)
    sys.exit(1)


def _build(data_dir: str | None, manual_dir: str | None) -> Any:
    """:func:`build`, with bad input reported as one message (not a traceback) and exit 1."""
    from data_pipelines import common  # Deferred: imports tfds and jax.

    try:
        return build(
            _DATASET.value,
            _CONFIG.value,
            data_dir=data_dir,
            manual_dir=manual_dir,
            validation_subjects=_VALIDATION.value,
            progress=_PROGRESS.value,
        )
    except Exception as e:  # TFDS may wrap what the builder raised: look down the chain.
        err = common.original_error(e)
        if isinstance(err, common.DataLayoutError):
            _fail(common.error_message(err))
        if isinstance(err, (FileNotFoundError, AssertionError)):
            # tfds raises AssertionError when the manual directory itself is missing.
            _fail(f"{common.error_message(err)}\n\n{describe(_DATASET.value)}")
        raise


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _DATASET.value is None:
        raise app.UsageError(f"--dataset is required (one of {', '.join(BUILDER_NAMES)}).")
    if _INFO.value:
        print(describe(_DATASET.value))
        return
    try:
        resolve_config(_DATASET.value, _CONFIG.value, _VALIDATION.value)
    except ValueError as e:  # unknown config, or a test subject held out for validation
        _fail(str(e))
    builder = _build(_absolute(_DATA_DIR.value), _absolute(_MANUAL_DIR.value))
    info = builder.info
    print(f"built {info.full_name} in {builder.data_dir}")
    for split, si in info.splits.items():
        print(f"  {split}: {si.num_examples} examples")
    report = info.metadata.get("build_report") if info.metadata is not None else None
    if report:
        print("build report:", json.dumps(report, indent=1))


if __name__ == "__main__":
    app.run(main)
