"""The demo's sweep half: synthetic data, then the demo sweep on CPU, resumed if its folder exists.

The baseline and four feature-alignment variants at the L2 study's lambdas (the fork's values) on two seeds,
per-configuration ASHA deciding on the mean over both seeds, then `decide:` adding fresh seeds until the
study ends in a decision (configs/sweeps/demo.yaml). The trials are short and the data synthetic: the
demo shows the pipeline, the storage discipline and the statistics, not which variant wins on real data.
`make demo` runs the repository's `demo.py`, which runs this and then the analysis report: tune never imports
the analysis, so the two are composed above both (docs/ARCHITECTURE.md, tune).
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SWEEP = REPO / "configs" / "sweeps" / "demo.yaml"
DEFAULT_DATA = REPO / "data" / "synthetic"


def synthetic_folders(root: Path) -> list[Path]:
    """The folders `cmda.data.synthetic.generate(root)` writes: the source and every registered target."""
    from cmda.data.synthetic import twin_folders

    return list(twin_folders(root).values())


def ensure_synthetic_data(root: Path) -> None:
    """Generate the synthetic twin once; later runs reuse it (generation is deterministic in the seed)."""
    if all(folder.is_dir() for folder in synthetic_folders(root)):
        print(f"synthetic data: reusing {root}")
        return
    from cmda.data.synthetic import generate

    print(f"synthetic data: generating into {root}")
    generate(root, seed=0)


def folder_sizes(exp: Path) -> tuple[int, int]:
    """(bytes of the whole experiment folder, bytes of its kept checkpoints)."""
    total = sum(p.stat().st_size for p in exp.rglob("*") if p.is_file())
    checkpoints = sum(p.stat().st_size for p in exp.glob("*/checkpoint_*/**/*") if p.is_file())
    return total, checkpoints


def run_demo_sweep(
    out: Path, sweep_file: Path = DEFAULT_SWEEP, data_root: Path = DEFAULT_DATA
) -> tuple[Path, int]:
    """Run (or finish) the demo sweep under `out/ray` and print its trial table; returns the experiment
    folder and the sweep's exit status (`cmda-tune`'s: 1 when a trial failed)."""
    from tune.cli import _exit_for
    from tune.driver import experiment_dir, run_sweep
    from tune.progress import format_table
    from tune.status import experiment_status
    from tune.sweep import load_sweep

    started = time.monotonic()
    out = out.expanduser().resolve()
    # The demo config names data/synthetic relative to the repository: run from there whatever the cwd.
    os.chdir(REPO)
    ensure_synthetic_data(data_root)
    spec = dataclasses.replace(load_sweep(sweep_file), storage_path=str(out / "ray"))
    exp = Path(experiment_dir(spec))
    grid = run_sweep(spec, resume_existing=True, live_interval_s=20.0)
    print()
    print(format_table(experiment_status(exp), spec.metric))
    total, checkpoints = folder_sizes(exp)
    print(f"\nexperiment folder: {exp}   (cmda-tune status {exp})")
    print(
        f"storage:           {total / 1e6:.0f} MB, of which kept checkpoints {checkpoints / 1e6:.0f} MB "
        f"({total / max(checkpoints, 1):.3f}x)"
    )
    print(f"sweep wall time:   {time.monotonic() - started:.0f} s")
    return exp, _exit_for(grid)
