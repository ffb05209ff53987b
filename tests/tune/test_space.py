"""Search spaces over any trainer key (`search.space`): parsing, settings, plan, Optuna, and the trainer's
schema checked before Ray starts (no Ray cluster is started)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import write_base_config
from ray.tune.search import Searcher

from tune.cli import main
from tune.configuration import Configuration
from tune.preflight import check_trial_configs
from tune.searchers import ConfigurationOptuna, build_searcher
from tune.sweep import GridSearch, SweepError, load_sweep
from tune.trainable import resolve_trial_config

GRID = {"variants": ["none", "fusion_st"], "lambda_scales": [1.0], "seeds": [0, 1]}


def write(tmp_path: Path, space: dict[str, Any] | None, grid: dict | None = None, **search: Any) -> Path:
    write_base_config(tmp_path)
    section: dict[str, Any] = {"grid": grid or GRID, **search}
    if space is not None:
        section["space"] = space
    path = tmp_path / "sweep.yaml"
    sweep = {"base_config": "base.yaml", "search": section, "scheduler": {"type": "none"}}
    path.write_text(yaml.safe_dump(sweep))
    return path


def rejected(tmp_path: Path, space: dict[str, Any], *fragments: str, **search: Any) -> str:
    """The error of a bad space: raised when the file is read, or by the pre-flight check of its values."""
    with pytest.raises(SweepError) as info:
        check_trial_configs(load_sweep(write(tmp_path, space, **search)))
    message = str(info.value)
    for fragment in (str(tmp_path / "sweep.yaml"), *fragments):
        assert fragment in message, message
    return message


def test_a_grid_over_the_learning_rate_multiplies_the_configurations(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, {"optim.lr": {"grid": [6.0e-5, 1.2e-4]}})
    spec = load_sweep(path)
    assert isinstance(spec.search, GridSearch) and spec.search.num_trials == 2 * 2 * 2
    labels = [c.label for c in spec.search.configurations]
    assert labels == ["none optim.lr=6e-05", "fusion_st x1 optim.lr=6e-05",
                      "none optim.lr=0.00012", "fusion_st x1 optim.lr=0.00012"]
    # the reference of each configuration is the baseline at the same setting
    by_setting = {c.setting_key for c in spec.search.configurations}
    assert len(by_setting) == 2
    trial = spec.grid_trials()[-1]
    assert resolve_trial_config(trial)["optim"]["lr"] == pytest.approx(1.2e-4)

    assert main(["plan", str(path), "--json", "--sec-per-iter", "1"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [t["params"] for t in plan["trials"]] == [{"optim.lr": 6e-5}] * 4 + [{"optim.lr": 1.2e-4}] * 4
    assert plan["trials"][2] == {"variant": "fusion_st", "lambdas": plan["trials"][2]["lambdas"],
                                 "params": {"optim.lr": 6e-5}, "seed": 0}
    assert plan["configurations"] == 4 and plan["space"] == {"optim.lr": {"grid": [6e-5, 1.2e-4]}}
    assert main(["plan", str(path), "--sec-per-iter", "1"]) == 0
    text = capsys.readouterr().out
    assert "fusion_st x1 optim.lr=0.00012" in text and "search space: optim.lr grid [6e-05, 0.00012]" in text


def test_sampled_entries_are_drawn_once_per_configuration_and_shared_by_its_seeds(tmp_path: Path) -> None:
    space = {"uda.pseudo_threshold": {"uniform": [0.9, 0.99]},
             "optim.weight_decay": {"loguniform": [1e-3, 1e-1]},
             "data.batch_size": {"choice": [1, 2]}, "optim.lr": {"grid": [1e-4, 2e-4]},
             "data.num_workers": {"qrandint": [0, 4, 2]}}
    spec = load_sweep(write(tmp_path, space, num_samples=3, sampler_seed=7))
    configurations = spec.search.configurations
    assert len(configurations) == 2 * 3 * 2  # lr grid x 3 draws x 2 variants
    settings = [dict(c.params) for c in configurations[::2]]
    assert len({json.dumps(s, sort_keys=True) for s in settings}) == 6  # distinct draws
    for s in settings:
        assert 0.9 <= s["uda.pseudo_threshold"] <= 0.99 and 1e-3 <= s["optim.weight_decay"] <= 1e-1
        assert s["data.batch_size"] in (1, 2) and s["data.num_workers"] in (0, 2, 4)
    trials = spec.grid_trials()
    assert trials[0]["ablation"] == trials[1]["ablation"] and {trials[0]["seed"], trials[1]["seed"]} == {0, 1}
    again = load_sweep(write(tmp_path, space, num_samples=3, sampler_seed=7))
    assert again.search.configurations == configurations  # `plan` and the sweep draw the same values
    check_trial_configs(spec)


@pytest.mark.parametrize(
    ("space", "fragments"),
    [
        ({"optim.lrr": {"grid": [1e-4]}}, ("search.space.optim.lrr", "the trainer rejects")),
        ({"uda.pseudo_threshold": {"uniform": [0.9, 1.5]}}, ("search.space.uda.pseudo_threshold", "1.5")),
        ({"data.batch_size": {"choice": [1, "two"]}}, ("search.space.data.batch_size", "'two'")),
        ({"data.batch_size": {"randint": [0, 3]}}, ("search.space.data.batch_size", "range end 0")),
    ],
)
def test_a_bad_key_or_value_is_refused_before_ray_starts(tmp_path: Path, space, fragments) -> None:
    rejected(tmp_path, space, *fragments)


@pytest.mark.parametrize(
    ("space", "fragments", "search"),
    [
        ({"optim.weight_decay": {"loguniform": [0, 1]}}, ("search.space.optim.weight_decay.loguniform",
                                                          "0 < low"), {}),
        ({"optim.lr": {"uniform": [2, 1]}}, ("low < high",), {}),
        ({"optim.lr": {"between": [1, 2]}}, ("search.space.optim.lr", "grid: [...]"), {}),
        ({"data.num_workers": {"qrandint": [1, 4, 2]}}, ("multiples of q",), {}),
        ({"seed": {"grid": [0, 1]}}, ("search.space.seed", "set per trial by the sweep"), {}),
        ({"train.max_iters": {"grid": [4, 8]}}, ("search.space.train.max_iters", "one budget"), {}),
        ({"optim": {"grid": [1]}, "optim.lr": {"grid": [1e-4]}}, ("overlaps search.space.optim",), {}),
        ({"optim.lr": {"grid": [1e-4, 1e-4]}}, ("duplicate values",), {}),
        ({"optim.lr": {"grid": [1e-4]}}, ("search.num_samples", "none"), {"num_samples": 2}),
        ({"data.batch_size": {"choice": [1, 2]}}, ("search.num_samples", "only 2"), {"num_samples": 3}),
    ],
)
def test_a_malformed_space_names_its_field(tmp_path: Path, space, fragments, search) -> None:
    rejected(tmp_path, space, *fragments, **search)


def test_a_bad_space_is_exit_2_from_plan_and_check(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, {"optim.lrr": {"grid": [1e-4]}})
    assert main(["plan", str(path)]) == 2
    assert "search.space.optim.lrr" in capsys.readouterr().err


def test_optuna_samples_the_space_with_each_configuration(tmp_path: Path) -> None:
    write_base_config(tmp_path)
    search = {
        "optuna": {"variants": ["none", "fusion_st"], "lambda_scale": {"low": 0.1, "high": 10},
                   "num_samples": 5, "seeds": [0, 1], "sampler_seed": 3},
        "space": {"optim.lr": {"loguniform": [1e-5, 1e-3]}, "data.batch_size": {"choice": [1, 2]},
                  "data.num_workers": {"randint": [0, 3]}},
    }
    path = tmp_path / "sweep.yaml"
    sweep = {"base_config": "base.yaml", "search": search, "scheduler": {"type": "none"}}
    path.write_text(yaml.safe_dump(sweep))
    spec = load_sweep(path)
    check_trial_configs(spec)
    searcher = build_searcher(spec)
    assert isinstance(searcher, ConfigurationOptuna)
    trials = []
    while (params := searcher.suggest(f"t{len(trials)}")) not in (Searcher.FINISHED, None):
        trials.append(params)
    settings = [params["ablation"]["params"] for params in trials]
    assert len(trials) == 10 and settings[0] == settings[1]  # a configuration's seeds share its draw
    for s in settings:
        assert 1e-5 <= s["optim.lr"] <= 1e-3 and s["data.batch_size"] in (1, 2)
        assert s["data.num_workers"] in (0, 1, 2)
    assert {t.number: set(t.params) for t in searcher.study.trials}[0] >= {"optim.lr", "data.batch_size"}
    assert Configuration.from_params(trials[0]).params_label.startswith("data.batch_size=")

    search["space"] = {"optim.lr": {"grid": [1e-4, 2e-4]}}
    path.write_text(yaml.safe_dump({**sweep, "search": search}))
    with pytest.raises(SweepError, match="search.space.optim.lr.: Optuna samples every entry; use {choice"):
        load_sweep(path)
