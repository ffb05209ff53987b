"""Bytes a sweep leaves in storage per trial, against the size of one checkpoint.

    python benchmarks/storage.py EXPERIMENT_DIR   # a finished local experiment: demo_out/ray/cmda_demo
    python benchmarks/storage.py                  # only the study arithmetic (B2 and B5)

For a folder: per trial, the kept checkpoints and everything else (Ray's params/result/progress files, the
resolved config, the trainer's log.csv and TensorBoard events), the experiment-level files, and the ratio of
the whole folder to its checkpoints. For the study: one checkpoint's size from the model's shapes
(`tune.plan.checkpoint_bytes`) for the B2 and B5 configs, times the checkpoints kept per trial.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cmda.overrides import load_with_overrides  # noqa: E402
from tune.plan import checkpoint_bytes  # noqa: E402

MB = 1e6


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure_folder(exp: Path) -> None:
    trials = [p for p in sorted(exp.iterdir()) if (p / "params.json").is_file()]
    total = folder_bytes(exp)
    checkpoints = kept = 0
    small_per_trial = []
    for trial in trials:
        folders = list(trial.glob("checkpoint_*"))
        kept += len(folders)
        trial_ckpt = sum(folder_bytes(f) for f in folders)
        checkpoints += trial_ckpt
        small_per_trial.append(folder_bytes(trial) - trial_ckpt)
    one = checkpoints / kept if kept else 0.0
    experiment_files = total - sum(folder_bytes(t) for t in trials)
    print(f"| experiment folder | {exp} |")
    print("| --- | ---: |")
    print(f"| trials | {len(trials)} |")
    print(f"| kept checkpoints | {kept} ({kept / max(len(trials), 1):.2f} per trial) |")
    print(f"| one checkpoint | {one / MB:.1f} MB |")
    print(
        f"| small files per trial (mean / max) | {sum(small_per_trial) / max(len(trials), 1) / 1e3:.0f} KB / "
        f"{max(small_per_trial, default=0) / 1e3:.0f} KB |"
    )
    print(f"| experiment-level files | {experiment_files / 1e3:.0f} KB |")
    per_trial = total / max(len(trials), 1)
    ratio = f" = {per_trial / one:.2f} checkpoints" if one else ""
    print(f"| bytes per trial | {per_trial / MB:.1f} MB{ratio} |")
    print(
        f"| whole folder / its checkpoints | {total / MB:.0f} MB / {checkpoints / MB:.0f} MB = "
        f"{total / max(checkpoints, 1):.3f} |"
    )


def study_arithmetic() -> None:
    print("| study config | one checkpoint | kept per trial | 75 trials |")
    print("| --- | ---: | ---: | ---: |")
    for name in ("cmda_cs2dsec_b2.yaml", "cmda_cs2dsec_b5.yaml"):
        config = load_with_overrides(REPO / "configs" / name)
        size = checkpoint_bytes(config)
        print(f"| {name} | {size / 1e9:.2f} GB | 2 (best + latest) | {75 * 2 * size / 1e9:.0f} GB |")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("experiment", nargs="?", type=Path, help="a finished local experiment folder")
    args = parser.parse_args()
    if args.experiment is not None:
        measure_folder(args.experiment.expanduser().resolve())
        print()
    study_arithmetic()
    return 0


if __name__ == "__main__":
    sys.exit(main())
