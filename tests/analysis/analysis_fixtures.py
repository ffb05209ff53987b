"""Experiment folders in Ray Tune's on-disk format with known numbers, for the analysis tests.

What Ray writes: `experiment_state-<stamp>.json` (`trial_data` = [trial JSON, runtime JSON] pairs) and one
folder per started trial with `params.json` and `result.json` (one report per line); ours: `sweep.yaml`,
`resolved_config.yaml`, the trainer's `log.csv`, `error.txt` for failures.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from cmda.data import CLASSES

# The default lambdas of the variants used here (the L2 fork's values; cmda.uda.feature_losses.VARIANTS).
DEFAULTS = {
    "none": {},
    "fusion_st": {"fusion_st": 0.05},
    "rgb_st+event_st": {"rgb_st": 0.1, "event_st": 0.05},
    "src_rgb_event": {"rgb_event_src": 0.1},
}

ERROR_TEXT = """Failure # 1 (occurred at 2026-11-25_14-12-20)
ray::ImplicitFunc.train() (pid=2, ip=1.2.3.4, repr=fn)
  File "/x/train.py", line 12, in run
    raise NonFiniteLossError(...)
cmda.uda.dacs.NonFiniteLossError: loss 'fusion_st' is nan at iteration 30
"""


@dataclass
class Trial:
    """One trial: its cell, seed and headline metric per evaluated iteration."""

    variant: str
    seed: int
    curve: dict[int, float]
    scale: float | None = 1.0
    lambdas: dict[str, float] | None = None  # explicit resolved lambdas (scale None)
    status: str = "TERMINATED"
    error: bool = False
    started: bool = True
    extra_lines: list[str] = field(default_factory=list)  # raw lines appended to result.json
    log: bool = True
    log_text: str | None = None  # log.csv as written (default: one row every 10 iterations)
    max_iters: int = 80
    backbone: str = "mit_b0"

    @property
    def params(self) -> dict:
        if self.variant == "none":
            scale, lambdas = None, {}
        elif self.lambdas is not None:
            scale, lambdas = None, self.lambdas
        else:
            scale, lambdas = self.scale, {t: v * self.scale for t, v in DEFAULTS[self.variant].items()}
        return {"ablation": {"variant": self.variant, "lambda_scale": scale, "lambdas": lambdas},
                "seed": self.seed, "base_config": "configs/demo.yaml", "overrides": {},
                "backbone": self.backbone}

    @property
    def name(self) -> str:
        scale = "" if self.variant == "none" else f"_x{self.scale:g}" if self.lambdas is None else "_explicit"
        return f"{self.variant}{scale}_s{self.seed}"


def report(trial: Trial, iteration: int, value: float, metric: str = "miou18") -> dict:
    row = {
        "iteration": iteration, "max_iters": trial.max_iters, metric: value, "miou19": value * 18 / 19,
        "loss/src_fusion": 1.0 / iteration, "time/train_s": 60.0 * iteration, "training_iteration": 1,
        "time_total_s": 65.0 * iteration, "done": False, "trial_id": trial.name, "config": trial.params,
    }
    row.update({f"iou/{c}": value + i for i, c in enumerate(CLASSES)})
    return row


def write_experiment(root: Path, trials: list[Trial], *, sweep: str | None = None, metric: str = "miou18",
                     resolved: str | None = None) -> Path:
    """Write the folder; trial ids are the trials' positions. Returns `root`."""
    root.mkdir(parents=True, exist_ok=True)
    data = []
    for number, trial in enumerate(trials):
        dirname = f"{trial.name}_{number:05d}"
        data.append([json.dumps({"trial_id": f"{number:05d}", "status": trial.status,
                                 "relative_logdir": dirname, "config": trial.params}),
                     json.dumps({"num_failures": 1 if trial.error else 0, "last_result": {}})])
        if not trial.started:
            continue
        folder = root / dirname
        folder.mkdir()
        (folder / "params.json").write_text(json.dumps(trial.params))
        lines = [json.dumps(report(trial, it, v, metric)) for it, v in trial.curve.items()]
        lines += trial.extra_lines
        (folder / "result.json").write_text("".join(f"{line}\n" for line in lines))
        if trial.error:
            (folder / "error.txt").write_text(ERROR_TEXT)
        if resolved is not None:
            (folder / "resolved_config.yaml").write_text(resolved)
        if trial.log_text is not None:
            (folder / "log.csv").write_text(trial.log_text)
        elif trial.log and trial.curve:
            last = max(trial.curve)
            rows = ["iteration,loss/src_fusion,loss/fusion_st,lr"]
            rows += [f"{it},{2.0 / it},{0.5 / it},0.0001" for it in range(10, last + 1, 10)]
            (folder / "log.csv").write_text("\n".join(rows) + "\n")
    (root / "experiment_state-2026-11-25_10-00-00.json").write_text(
        json.dumps({"trial_data": data, "runner_data": {}}))
    if sweep is not None:
        (root / "sweep.yaml").write_text(sweep)
    return root


STUDY_SWEEP = """name: study
base_config: configs/demo.yaml
metric: miou18
mode: max
target: dsec_night
scheduler: {type: per_config_asha, grace_period: 20, reduction_factor: 2, max_t: 80}
resources: {cpu: 1, gpu: 0.5}
"""

# miou18 per seed at iterations 20, 40, 60, 80 (a configuration stopped early has fewer points)
STUDY = {
    ("none", 1.0): [[10, 20, 25, 30], [11, 21, 26, 29], [12, 22, 27, 31]],
    ("fusion_st", 1.0): [[12, 24, 30, 34], [13, 23, 29, 33.1], [12.5, 26, 31, 34.9]],
    ("src_rgb_event", 1.0): [[10.5, 20, 25, 30.5], [11, 21, 26, 29], [12, 22, 27, 31.5]],
    ("fusion_st", 0.5): [[9], [8], [7]],  # stopped at the first rung (20)
    ("rgb_st+event_st", 1.0): [[11, 19], [12, 20.5], [13, 21]],  # stopped at the second rung (40)
}


def study_trials() -> list[Trial]:
    """Per-configuration ASHA: every seed of a configuration runs as far as the others."""
    out = []
    for (variant, scale), seeds in STUDY.items():
        for seed, values in enumerate(seeds):
            curve = {20 * (i + 1): float(v) for i, v in enumerate(values)}
            out.append(Trial(variant, seed, curve, scale=scale))
    return out
