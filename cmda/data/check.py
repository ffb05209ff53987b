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

import logging
from pathlib import Path
from typing import Any

from cmda.data.check_report import (
    SHOWN_PROBLEMS,
    CheckReport,
    DataCheckError,
    Settings,
)
from cmda.data.errors import DataError
from cmda.data.targets import SOURCE, dataset_kinds

__all__ = ["CheckReport", "DataCheckError", "check_training_data", "check_tree", "detect"]

log = logging.getLogger(__name__)


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
