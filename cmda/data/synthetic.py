"""`cmda data synth ROOT`: a small synthetic twin of every dataset the registry knows, in the real formats.

Why: tests, demos and the Ray Tune sweeps need data that exercises the exact loader code paths, without
the real datasets (tens of GB, not downloadable here). Each dataset brings its own twin writer, beside
its loader (`DatasetFiles.twin` in cmda/data/targets.py: Cityscapes, DSEC-Night and Dark Zurich here; a
registered target brings its own); they draw the learnable street scenes of cmda/data/scenes.py and
prepare what they wrote exactly as the real data is prepared. Everything is drawn from per-item
generators seeded with (seed, domain, item), so the same seed gives byte-identical image, label and text
files regardless of order. docs/ARCHITECTURE.md ("cmda.data") has the contracts.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

from cmda.data.targets import dataset_kinds


@dataclass(frozen=True)
class Twin:
    """Base of a dataset's synthetic-twin writer. The dataclass fields of a subclass are its options;
    their defaults give the small twin the tests and the demo use, and `REAL_SIZE` overrides them for
    `cmda data synth --size real` (the real resolutions, few items)."""

    REAL_SIZE: ClassVar[Mapping[str, Any]] = {}

    @classmethod
    def make(cls, real_size: bool = False, **options: Any) -> Twin:
        """The writer with `options` (checked: an unknown option is an error naming the known ones)."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown option(s) {unknown}; its options are {known}")
        return cls(**{**(cls.REAL_SIZE if real_size else {}), **options})

    def write(self, folder: Path, seed: int, workers: int = 1) -> None:
        """Write the twin into `folder` and prepare it (labels, index files, statistics)."""
        raise NotImplementedError


def twin_folders(root: str | Path) -> dict[str, Path]:
    """Dataset kind -> the folder `generate` writes its twin into (ROOT/<its synthetic_dir>)."""
    return {name: Path(root) / files.synthetic_dir for name, files in dataset_kinds().items()}


def generate(
    root: str | Path,
    seed: int = 0,
    *,
    real_size: bool = False,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    workers: int = 1,
) -> dict[str, Path]:
    """Write the twin of the source and of every registered target under ROOT/<its synthetic_dir>.

    `options`: dataset kind -> its writer's options (e.g. {"dsec_night": {"frames_per_sequence": 10}}).
    Every writer is made, and so its options checked, before anything is written. Returns kind -> folder.
    """
    kinds = dataset_kinds()
    options = dict(options or {})
    unknown = sorted(set(options) - set(kinds))
    if unknown:
        raise ValueError(f"twin options for unknown dataset kind(s) {unknown}; the kinds are {list(kinds)}")
    writers = {name: files.twin(real_size, **options.get(name, {})) for name, files in kinds.items()}
    folders = twin_folders(root)
    for name, writer in writers.items():
        writer.write(folders[name], seed, workers)
    return folders


def add_synth_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `cmda data synth ROOT`."""
    parser.add_argument("root", type=Path, help="output folder (one sub-folder per dataset is created)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--size",
        choices=("small", "real"),
        default="small",
        help="small: the tests' size (seconds); real: each dataset's real resolution, few items",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KIND.OPTION=VALUE",
        help="a writer option, e.g. dsec_night.frames_per_sequence=8 or cityscapes.images_per_city=1 "
        "(the options are each writer's dataclass fields)",
    )
    parser.add_argument("--workers", type=int, default=1)


def parse_twin_options(items: list[str]) -> dict[str, dict[str, Any]]:
    """["kind.option=value", ...] -> {kind: {option: value}} (values read as YAML)."""
    from cmda.io import parse_yaml

    options: dict[str, dict[str, Any]] = {}
    for item in items:
        key, equals, value = item.partition("=")
        kind, dot, name = key.partition(".")
        if not (equals and dot and kind and name):
            raise ValueError(f"--set {item!r}: expected KIND.OPTION=VALUE, e.g. dsec_night.label_every=3")
        parsed = parse_yaml(value, f"--set {item}")
        options.setdefault(kind, {})[name] = tuple(parsed) if isinstance(parsed, list) else parsed
    return options


def run_synth(args: argparse.Namespace) -> dict[str, Path]:
    """Execute `cmda data synth` from parsed arguments."""
    folders = generate(
        args.root,
        args.seed,
        real_size=args.size == "real",
        options=parse_twin_options(args.set),
        workers=args.workers,
    )
    print("wrote " + ", ".join(str(folder) for folder in folders.values()))
    return folders
