"""The errors of a sweep: its file, and the paths its trials read.

Apart from the schema (tune.sweep) so that the modules the schema builds on (tune.paths) raise them without
importing it; `tune.sweep` and `tune.paths` re-export them where callers have always found them.
"""


class SweepError(ValueError):
    """A sweep file that cannot run; the message names the file and the offending field."""


class PathError(SweepError):
    """A path a trial needs that cannot mean the same on every node; the message names file and field
    (raised for the sweep's `path_map` and by `tune.paths`)."""
