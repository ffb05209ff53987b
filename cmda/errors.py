"""The one base class of the failures a user can fix: bad configs, bad data, a run that cannot go on.

The command lines (`cmda`, `cmda-tune`, `cmda-analyze`) print such an error as one sentence and exit
non-zero; anything else is a bug and keeps its traceback (`is_expected` is that rule, `run_command` applies
it to a parsed `cmda` command). Raise a subclass (or `CMDAError` itself) only
when the message already says what is wrong and how to fix it, naming the file and the key.
"""

from __future__ import annotations

import argparse
import errno
import sys


class CMDAError(Exception):
    """An expected failure whose message is complete: the CLI prints it alone, without a traceback."""


class RunError(CMDAError):
    """A training or evaluation run that cannot start or go on (device, work dir, resume, loss)."""


class ConfigError(CMDAError, ValueError):
    """A config value or key that is not what the trainer expects; the message names file and field."""


DISK_PROBLEMS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission is denied",
    errno.EPERM: "permission is denied",
}
"""OS errors a user can fix (errno -> what to say): a full, read-only or forbidden place to write."""


def is_expected(error: BaseException) -> bool:
    """Failures a user can fix, printed as one sentence: config, data, run and disk errors. Anything else
    (a bug) keeps its traceback."""
    if isinstance(error, CMDAError | ValueError | FileNotFoundError):
        return True
    return isinstance(error, OSError) and error.errno in DISK_PROBLEMS


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed command: its exit code; 2 with one `error:` line for a failure the user can fix
    (`is_expected`), 130 when interrupted; anything else keeps its traceback."""
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if not is_expected(error):
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
