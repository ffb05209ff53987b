"""The pieces every dataset's check is made of: the report that collects problems, and the file checks.

Each dataset's check lives beside its loader and imports only this module; cmda/data/check.py loops over
the registry. Keeping the pieces here keeps the dispatcher out of the datasets' imports (no circle).
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmda.data.errors import DataError
from cmda.data.transforms import read_image_header, read_label

SHOWN_PROBLEMS = 20
"""How many problems an error message lists (all are in the report)."""
CHECK_ERRORS = (DataError, ValueError, OSError, KeyError)
"""What a check records as a problem of the data (anything else is a bug and propagates)."""
Settings = Mapping[str, Any] | None
"""What a check may read of the dataset's config section (`data.source` / `data.target` as a dict; from
the command line only the options it was given, e.g. {"window_frames": 2})."""


class DataCheckError(DataError):
    """A dataset tree with problems; the message lists them (file: problem)."""


@dataclass
class CheckReport:
    """Problems found in one dataset tree and what was looked at."""

    kind: str
    root: Path
    thorough: bool
    problems: list[str] = field(default_factory=list)
    checked: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: str | BaseException) -> None:
        self.problems.append(str(problem))

    def attempt(self, what: str, function, *args, **kwargs) -> Any:
        """Call `function`; on a data error record it and return None; else count `what` as checked."""
        try:
            result = function(*args, **kwargs)
        except CHECK_ERRORS as error:
            self.add(error)
            return None
        self.checked[what] += 1
        return result

    @classmethod
    @contextlib.contextmanager
    def timed(cls, kind: str, root: str | Path, thorough: bool) -> Iterator[CheckReport]:
        """A report for one tree whose `seconds` is the time the `with` block took."""
        start = time.perf_counter()
        report = cls(kind, Path(root), thorough)
        yield report
        report.seconds = time.perf_counter() - start

    def summary(self) -> str:
        counts = ", ".join(f"{n} {what}" for what, n in self.checked.items()) or "nothing"
        depth = "thorough" if self.thorough else "fast"
        verdict = "OK" if self.ok else f"{len(self.problems)} problem(s)"
        return f"{self.kind} at {self.root} ({depth}, {self.seconds:.1f} s; {counts}): {verdict}"


# -- shared file checks -------------------------------------------------------------------------------------


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from an image's header (nothing decoded)."""
    return read_image_header(path)[0]


def check_same_size(path: Path, expected_wh: tuple[int, int], what: str) -> tuple[int, int]:
    size, _ = read_image_header(path)
    if tuple(size) != tuple(expected_wh):
        raise DataError(
            f"{path}: {what} is {size[0]}x{size[1]} (WxH), expected {expected_wh[0]}x{expected_wh[1]}"
        )
    return size


def check_label_header(path: Path, expected_wh: tuple[int, int] | None) -> None:
    size, mode = read_image_header(path)
    if mode not in ("L", "P", "I", "I;16"):
        raise DataError(f"{path}: label must be a single-channel PNG of trainIds, got mode {mode}")
    if expected_wh is not None and tuple(size) != tuple(expected_wh):
        raise DataError(
            f"{path}: label size {size[0]}x{size[1]} (WxH) does not match the image size "
            f"{expected_wh[0]}x{expected_wh[1]}"
        )


def check_label(path: Path, expected_wh: tuple[int, int] | None, decode: bool) -> None:
    """Header (mode, size) always; decoded values 0..18 / 255 when `decode`."""
    if decode:
        read_label(path, None if expected_wh is None else (expected_wh[1], expected_wh[0]))
    else:
        check_label_header(path, expected_wh)


def check_decodes(path: Path) -> None:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
    except OSError as error:
        raise DataError(f"{path}: cannot decode the image (truncated or corrupt?): {error}") from error
