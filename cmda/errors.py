"""The one base class of the failures a user can fix: bad configs, bad data, a run that cannot go on.

The command lines (`cmda`, `cmda-tune`, `cmda-analyze`) print such an error as one sentence and exit
non-zero; anything else is a bug and keeps its traceback. Raise a subclass (or `CMDAError` itself) only
when the message already says what is wrong and how to fix it, naming the file and the key.
"""

from __future__ import annotations


class CMDAError(Exception):
    """An expected failure whose message is complete: the CLI prints it alone, without a traceback."""


class RunError(CMDAError):
    """A training or evaluation run that cannot start or go on (device, work dir, resume, loss)."""


class ConfigError(CMDAError, ValueError):
    """A config value or key that is not what the trainer expects; the message names file and field."""
