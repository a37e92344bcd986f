"""Errors that are the user's to fix, as opposed to bugs.

A ``UserError`` (a bad config value, record, checkpoint or flag) carries a message
that names the thing at fault (config key, file, line, field) and what is
allowed. Entry points print it as one line ``error: <message>`` on stderr and
exit with status 2, without a traceback (``--verbose`` or ``RLHF_JAX_VERBOSE=1``
shows it); any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input; the message says what and where."""


class ConfigError(UserError, ValueError):
    """A config value out of its allowed range or type; the message names the key."""


class MissingFileError(UserError, FileNotFoundError):
    """A path the user gave (or a file a stage needs) does not exist."""


class RecordError(UserError, ValueError):
    """A record that does not fit its format; the message names file, line and field."""


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be read or does not fit the model: names the file, the tensor or
    field, and the shapes."""
