r"""Builds one pose dataset config into a TFDS data directory (array_record, no TensorFlow).

  python -m launch.build_dataset --dataset=h36m_pose --builder_config=cpn_ft_h36m_dbb \
      --manual_dir=/data/h36m_npz --data_dir=/data/tfds
  python -m launch.build_dataset --dataset=synthetic_pose --builder_config=tiny --data_dir=/tmp/tfds
  python -m launch.build_dataset --dataset=h36m_pose --builder_config=gt \
      --validation_subjects=S8 --manual_dir=... --data_dir=...   # config 'gt_val_S8'

Read it back with ``tfds.data_source('<dataset>/<config>', split=..., data_dir=...)`` or
``data_pipelines.input_pipeline``. ``--dataset=NAME --info`` prints the configs and
the manual-download instructions.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from absl import app, flags

from data_pipelines import BUILDER_NAMES
from data_pipelines.build import build, describe

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


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _DATASET.value is None:
        raise app.UsageError(f"--dataset is required (one of {', '.join(BUILDER_NAMES)}).")
    if _INFO.value:
        print(describe(_DATASET.value))
        return
    try:
        builder = build(
            _DATASET.value,
            _CONFIG.value,
            data_dir=_DATA_DIR.value,
            manual_dir=_MANUAL_DIR.value,
            validation_subjects=_VALIDATION.value,
            progress=_PROGRESS.value,
        )
    except (FileNotFoundError, AssertionError) as e:
        # tfds raises AssertionError when the manual directory itself is missing.
        print(f"build_dataset: {e}\n\n{describe(_DATASET.value)}", file=sys.stderr)
        sys.exit(1)
    info = builder.info
    print(f"built {info.full_name} in {builder.data_dir}")
    for split, si in info.splits.items():
        print(f"  {split}: {si.num_examples} examples")
    report = info.metadata.get("build_report") if info.metadata is not None else None
    if report:
        print("build report:", json.dumps(report, indent=1))


if __name__ == "__main__":
    app.run(main)
