"""What every ``launch`` entry point shares: flag parsing and error reporting.

* :func:`parse_flags` is ``app.run``'s ``flags_parser``: a ``--config.x.y=v``
  override naming a field that does not exist is reported as one line naming the
  flag and the fields the block has, not as an ml_collections traceback.
* :func:`run_main` runs an entry point's body and prints a
  :class:`pose_jax.errors.InputError` (bad file, dataset, config key, workdir) as
  its message alone, exiting with status 2.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from absl import flags

from pose_jax.errors import InputError

USAGE_EXIT = 2


def _fail(prog: str, message: str) -> None:
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    sys.exit(USAGE_EXIT)


def _config_overrides(argv: Sequence[str]) -> list[str]:
    return [a for a in argv[1:] if a.startswith("--config.")]


def _known_fields(argv: Sequence[str], override: str) -> str:
    """The fields of the block an override addresses, read from the config file alone."""
    import runpy

    path = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if path is None:
        return ""
    try:
        file, _, arg = path.partition(":")
        get_config = runpy.run_path(file)["get_config"]
        node: Any = get_config(arg) if arg else get_config()
    except Exception:
        return ""
    for part in override[len("--config.") :].split("=", 1)[0].split(".")[:-1]:
        if part not in node:
            return f" The config's blocks are: {', '.join(sorted(node))}."
        node = node[part]
    return f" That block's fields are: {', '.join(sorted(node))}."


def parse_flags(argv: Sequence[str]) -> list[str]:
    """``flags.FLAGS(argv)`` with config-override errors named (use as ``flags_parser``)."""
    stem = os.path.splitext(os.path.basename(argv[0]))[0] if argv else "main"
    prog = f"launch.{stem}"
    try:
        return flags.FLAGS(list(argv))
    except flags.Error as e:
        _fail(prog, f"{e}\nPass --helpshort or --helpfull to see help on flags.")
    except (KeyError, AttributeError) as e:
        # ml_collections raises these for `--config.block.field` naming no field (an
        # AttributeError wrapping a KeyError whose text is the name and a did-you-mean).
        while e.args and isinstance(e.args[0], BaseException):
            e = e.args[0]
        text = str(e.args[0]) if e.args else str(e)
        name, _, hint = text.partition("\n")
        name = name.strip("'\" ")
        bad = [a for a in _config_overrides(argv) if name and f".{name}" in a.split("=")[0]]
        override = bad[0] if bad else "a --config. override"
        message = f"{override}: the config has no field {name!r}."
        if hint:
            message += " " + hint.strip()
        _fail(prog, message + (_known_fields(argv, bad[0]) if bad else ""))
    raise AssertionError("unreachable")


def run_main(prog: str, body: Callable[[], Any]) -> Any:
    """Calls ``body()``; an :class:`InputError` becomes one message and exit status 2."""
    try:
        return body()
    except InputError as e:
        _fail(prog, str(e))
