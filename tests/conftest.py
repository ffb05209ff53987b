"""Shared pytest fixtures and files: torch thread limit, the synthetic dataset generated once per session, the
tiny trainer configs (`tiny_config` for the real trainer, `write_base_config` for the sweep tests), a
finished study in Ray's layout (`write_finished_study`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

torch.set_num_threads(1)  # two threads on a busy 2-core machine spin-wait: many times slower, not faster


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of the default small synthetic twin (ROOT/cityscapes and every target's tree), prepared.

    Generated once per test session; tests must treat it as read-only (copy it to modify files).
    """
    from cmda.data.synthetic import generate

    root = tmp_path_factory.mktemp("synthetic")
    generate(root, seed=0)
    return root


def write_base_config(folder: Path, **train: Any) -> Path:
    """`folder/base.yaml`: the trainer config the sweep tests share (MiT-B0, 8 iterations, an evaluation every
    2; `train` overrides train.* keys). Their stand-in trainers read only train.*; the real trainer's tests
    use `tiny_config`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "base.yaml"
    config = {"name": "t", "seed": 0, "model": {"backbone": "mit_b0"},
              "train": {"max_iters": 8, "eval_interval": 2, **train}}
    path.write_text(yaml.safe_dump(config))
    return path


TINY_TARGETS = {
    "dsec_night": {"crop": [64, 64], "resize": [32, 32], "test_rows": 110},
    "dark_zurich": {"resize": [64, 36], "crop": [32, 32]},
}
"""The data.target section of each registered target at toy size (tests/cmda/test_targets.py checks that every
registered target has one)."""
TINY_UDA = {"dark_zurich": {"pseudo_weight_ignore_top": 1, "pseudo_weight_ignore_bottom": 8}}
"""The Dark Zurich recipe ignores 15 + 120 rows of a 512 crop; scaled to the 32-pixel toy crop."""


@pytest.fixture()
def tiny_config(synthetic_root: Path, tmp_path: Path):
    """A trainer config small enough for one CPU step in well under a second (B0, slim decoder, 32px).

    `tiny_config(target="dark_zurich", **{"dotted.key": value})` picks the target and overrides keys.
    """
    from cmda.config import config_from_dict
    from cmda.data.targets import get_target

    def make(target: str = "dsec_night", **overrides):
        from cmda.overrides import apply_overrides

        spec = get_target(target)
        base = {
            "seed": 0,
            "model": {"backbone": "mit_b0", "decoder_channels": 32, "pretrained": "none", "cyclegan": "none"},
            "data": {
                "source": {"root": str(synthetic_root / "cityscapes"), "resize": [64, 32], "crop": [32, 32]},
                "target": {
                    "name": target,
                    "root": str(synthetic_root / spec.synthetic_dir),
                    **TINY_TARGETS[target],
                },
                "batch_size": 2,
                "num_workers": 0,
            },
            "uda": dict(TINY_UDA.get(target, {})),
            "optim": {"lr": 6e-4, "warmup_iters": 2},
            "train": {
                "max_iters": 4,
                "eval_interval": 2,
                "log_interval": 1,
                "work_dir": str(tmp_path / "run"),
                "device": "cpu",
                "amp": "off",
                "progress_bar": False,
                "tensorboard": False,
            },
        }
        return config_from_dict(apply_overrides(base, overrides))

    return make


STUDY = Path(__file__).resolve().parents[1] / "configs" / "sweeps" / "l2_ablation_b2.yaml"


def write_finished_study(root: Path, values: dict[tuple[str, float], list[float | None]]) -> Path:
    """A finished study in Ray's layout (the study's sweep.yaml, no `decide:`): per (variant, lambda) the
    final miou18 of seeds 0, 1, ... at the full budget (None: stopped at the first rung; NaN: ended without
    a value), each trial with a checkpoint folder per report."""
    raw = yaml.safe_load(STUDY.read_text())
    raw["base_config"] = str((STUDY.parent / raw["base_config"]).resolve())
    root.mkdir(parents=True)
    (root / "sweep.yaml").write_text(yaml.safe_dump(raw))
    data = []
    for (variant, lam), finals in values.items():
        for seed, final in enumerate(finals):
            name = f"{variant}_{lam:g}_s{seed}"
            params = {"ablation": {"variant": variant, "lambda_scale": None,
                                   "lambdas": {} if variant == "none" else {"fusion_st": lam}}, "seed": seed}
            data.append([json.dumps({"trial_id": name, "status": "TERMINATED", "relative_logdir": name,
                                     "config": params}), json.dumps({"num_failures": 0, "last_result": {}})])
            (root / name).mkdir()
            (root / name / "params.json").write_text(json.dumps(params))
            reports = [(8000, 10.0)] + ([] if final is None else [(40000, final)])
            (root / name / "result.json").write_text("".join(
                json.dumps({"iteration": it, "max_iters": 40000, "miou18": v}) + "\n" for it, v in reports))
            for index in range(len(reports)):
                (root / name / f"checkpoint_{index:06d}").mkdir()
    (root / "experiment_state-2026-12-01_10-00-00.json").write_text(json.dumps({"trial_data": data}))
    return root

