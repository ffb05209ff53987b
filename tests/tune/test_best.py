"""`cmda-tune best` on a study without `decide:`: the report's rule (the largest paired difference to the
reference at the full budget), every seed's checkpoint, and nothing ranked without a complete reference.
(`best` on a decide: study runs in tests/tune/test_tune.py, on a real sweep.)"""

from __future__ import annotations

import json
import math
from pathlib import Path

from conftest import write_finished_study

from tune.cli import main
from tune.decision import best_by_delta


def test_best_by_delta_is_the_largest_paired_difference_with_the_reference_at_zero() -> None:
    assert best_by_delta({"none": 0.0, "a": 1.5, "b": -0.2}) == ["a"]
    assert best_by_delta({"none": 0.0, "a": -1.0}) == ["none"]  # none better: the reference
    assert best_by_delta({"none": 0.0, "a": 0.7, "b": 0.7}) == ["a", "b"]  # ties, in the order given
    assert best_by_delta({"none": 0.0, "a": -1.0}, mode="min") == ["a"]  # lower is better
    assert best_by_delta({"a": math.nan}) == []


def test_best_without_decide_follows_the_reports_rule_and_lists_every_seeds_checkpoint(tmp_path: Path,
                                                                                        capsys) -> None:
    """Paired by seed: fusion_st 0.05 is +1.0 on each seed (raw mean 31.0); 0.1 has the higher raw mean
    (31.5, over the two seeds with a value: its NaN seed is skipped, as in the report) but is only +0.5
    paired; 0.2 never reached the full budget."""
    exp = write_finished_study(tmp_path / "study", {
        ("none", 0.0): [30.0, 32.0, 28.0],
        ("fusion_st", 0.05): [31.0, 33.0, 29.0],
        ("fusion_st", 0.1): [30.5, 32.5, math.nan],
        ("fusion_st", 0.2): [None, None, None],
    })
    assert main(["best", str(exp), "--json"]) == 0
    best = json.loads(capsys.readouterr().out)
    assert best["label"] == "fusion_st fusion_st=0.05"
    assert best["decision"].startswith("untested") and best["delta"] == 1.0
    assert "uda.feature_loss.lambdas.fusion_st=0.05" in best["settings"]
    assert sorted(best["checkpoints"]) == ["0", "1", "2"]
    assert best["checkpoint"] == best["checkpoints"]["1"]  # the best seed's (33.0) first
    assert all(Path(path).name == "checkpoint_000001" for path in best["checkpoints"].values())
    assert main(["best", str(exp)]) == 0
    assert "by the report's rule" in capsys.readouterr().out


def test_best_ranks_nothing_when_the_reference_did_not_reach_the_full_budget(tmp_path: Path, capsys) -> None:
    exp = write_finished_study(tmp_path / "study", {("none", 0.0): [30.0, None],
                                                    ("fusion_st", 0.05): [31.0, 33.0]})
    assert main(["best", str(exp)]) == 1
    assert "nothing is ranked: the reference (none) did not reach the full budget" in capsys.readouterr().err
