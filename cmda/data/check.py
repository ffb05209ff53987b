"""`cmda data check ROOT`: find bad files in a dataset tree before training, and the check `cmda train` runs.

A run reads its data lazily: a truncated PNG, a label with labelIds instead of trainIds or a stale event
index surfaces when the sampler first draws that file, or at the first evaluation hours in. A dataset's
check walks what its loader will read and collects every problem (file + what is wrong) in a
`CheckReport` instead of stopping at the first. Each dataset brings its own check, beside its loader
(the registry's `DatasetFiles.check`: cmda/data/cityscapes.py, dsec_check.py, dark_zurich.py); this
module holds the report, the file checks they share and the loop over the registry. Two depths:

- fast (`thorough=False`, what `check_training_data` runs before every training): every listed file
  exists and its header opens with the expected size, index files agree with their lists, the evaluation
  labels (small) are decoded and their values checked. Metadata only, so seconds even for the real data.
- thorough (the command's default): additionally every label is decoded and every event file scanned
  whole; `decode_images=True` also decodes every image.

docs/ARCHITECTURE.md ("cmda.data") has the contracts.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmda.data.errors import DataError
from cmda.data.targets import SOURCE, dataset_kinds
from cmda.data.transforms import read_image_header, read_label

log = logging.getLogger(__name__)
SHOWN_PROBLEMS = 20
"""How many problems an error message lists (all are in the report)."""
_CHECK_ERRORS = (DataError, ValueError, OSError, KeyError)
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
        except _CHECK_ERRORS as error:
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


# -- every tree at a root, and the trainer's hook ----------------------------------------------------------


def detect(root: str | Path) -> list[tuple[str, Path]]:
    """(kind, root) of the dataset trees at ROOT or one level below (e.g. the synthetic twin's root)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found")
    kinds = dataset_kinds()

    def kind_of(folder: Path) -> str | None:
        from cmda.data.check_weights import KIND as WEIGHTS
        from cmda.data.check_weights import looks_like_weights

        found = next((name for name, files in kinds.items() if files.recognises(folder)), None)
        return found or (WEIGHTS if looks_like_weights(folder) else None)

    own = kind_of(root)
    if own is not None:
        return [(own, root)]
    found = [(kind, child) for child in sorted(root.iterdir()) if child.is_dir() and (kind := kind_of(child))]
    if not found:
        described = ", ".join(files.describe() for files in kinds.values())
        raise DataError(
            f"{root}: not a dataset tree ({described}), nor weights (*.pth, <folder>/checkpoint.pt), nor a "
            "folder of such trees; pass --kind"
        )
    return found


def check_tree(
    root: str | Path,
    kind: str = "auto",
    thorough: bool = True,
    decode_images: bool = False,
    settings: Settings = None,
) -> list[CheckReport]:
    """Check every dataset tree (or weights folder) at ROOT (kind "auto": detected); one report per tree."""
    from cmda.data.check_weights import KIND as WEIGHTS
    from cmda.data.check_weights import check_weights

    kinds = dataset_kinds()
    if kind not in ("auto", *kinds, WEIGHTS):
        raise DataError(f"unknown dataset kind {kind!r}; expected one of {('auto', *kinds, WEIGHTS)}")
    trees = detect(root) if kind == "auto" else [(kind, Path(root))]
    return [
        check_weights(path) if name == WEIGHTS else kinds[name].check(path, thorough, decode_images, settings)
        for name, path in trees
    ]


def raise_on_problems(reports: list[CheckReport]) -> None:
    """DataCheckError listing the first SHOWN_PROBLEMS problems of all reports (none: return)."""
    problems = [problem for report in reports for problem in report.problems]
    if not problems:
        return
    shown = "\n  ".join(problems[:SHOWN_PROBLEMS])
    more = f"\n  ... and {len(problems) - SHOWN_PROBLEMS} more" if len(problems) > SHOWN_PROBLEMS else ""
    roots = ", ".join(str(report.root) for report in reports if not report.ok)
    raise DataCheckError(
        f"{len(problems)} data problem(s) in {roots} (`cmda data check ROOT` lists them all):"
        f"\n  {shown}{more}"
    )


def check_test_data(config: Any) -> list[CheckReport]:
    """The fast check of what `cmda test` reads (the target's labelled split, with its config section), so
    a missing image or a label of the wrong size is named before anything is scored."""
    section = config.data.target
    report = config.target.files.check(section.root, False, False, section.model_dump())
    log.info("data check: %s", report.summary())
    raise_on_problems([report])
    return [report]


def check_training_data(config: Any) -> list[CheckReport]:
    """The fast check of what a training run will read (the source and its target, each with its config
    section); raises DataCheckError listing the problems, so a bad file stops the run in seconds, not
    hours in."""
    data = config.data
    sections = ((SOURCE, data.source), (config.target.files, data.target))
    reports = [files.check(section.root, False, False, section.model_dump()) for files, section in sections]
    for report in reports:
        log.info("data check: %s", report.summary())
    raise_on_problems(reports)
    return reports
