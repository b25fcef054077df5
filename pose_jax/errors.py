"""The base class of errors that bad user input causes.

Everything a user can get wrong (a data file, a dataset name, a config key, a
workdir, a checkpoint file) raises a subclass of :class:`InputError` whose
message names the file, key or value and what was expected. The command-line
entry points print that message alone, without a traceback, and exit with
status 2; library callers catch the specific subclasses.
"""

from __future__ import annotations


class InputError(Exception):
    """A user's file, config or argument is wrong; the message says what and where."""


class ConfigError(InputError, ValueError):
    """A config value is out of range or inconsistent (checked before any compilation)."""
