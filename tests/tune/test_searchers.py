"""Searchers: configuration-major launch order, and Optuna over configurations (no cluster)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import write_base_config
from optuna.trial import TrialState
from ray.tune.search import Searcher

from tune.configuration import Configuration
from tune.searchers import ConfigurationOptuna, GridSearcher, build_searcher
from tune.sweep import load_sweep


@pytest.fixture()
def base(tmp_path: Path) -> Path:
    return write_base_config(tmp_path)


def write(tmp_path: Path, search: dict, scheduler: dict | None = None) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(
        yaml.safe_dump(
            {"base_config": "base.yaml", "search": search, "scheduler": scheduler or {"type": "none"}}
        )
    )
    return path


def drain(searcher: Searcher, prefix: str = "t") -> list[tuple[str, dict]]:
    out = []
    while (params := searcher.suggest(f"{prefix}{len(out)}")) != Searcher.FINISHED:
        out.append((f"{prefix}{len(out)}", params))
    return out


def test_grid_searcher_launches_a_configurations_seeds_side_by_side(tmp_path: Path, base: Path) -> None:
    grid = {
        "variants": ["none", "fusion_st", "rgb_st+event_st"],
        "lambda_scales": [0.5, 1.0],
        "seeds": [0, 1, 2],
    }
    spec = load_sweep(write(tmp_path, {"grid": grid}))
    order = [
        (p["ablation"]["variant"], p["ablation"]["lambda_scale"], p["seed"])
        for _, p in drain(build_searcher(spec))
    ]
    assert order[:4] == [("none", None, 0), ("none", None, 1), ("none", None, 2), ("fusion_st", 0.5, 0)]
    assert len(order) == 15 and [s for *_, s in order] == [0, 1, 2] * 5
    searcher = GridSearcher(spec.grid_trials())
    searcher.suggest("a")
    saved = tmp_path / "state.pkl"
    searcher.save(str(saved))
    restored = GridSearcher([])
    restored.restore(str(saved))  # what `cmda-tune resume` does: continue after the trials already handed out
    assert restored.suggest("b")["seed"] == 1


def optuna_searcher(
    tmp_path: Path, num_samples: int = 4, seeds: tuple[int, ...] = (0, 1)
) -> ConfigurationOptuna:
    search = {
        "optuna": {
            "variants": ["fusion_st", "rgb_st+event_st"],
            "lambda_scale": {"low": 0.1, "high": 10},
            "num_samples": num_samples,
            "seeds": list(seeds),
            "sampler_seed": 3,
        }
    }
    scheduler = {"type": "per_config_asha", "grace_period": 2, "max_t": 8}
    searcher = build_searcher(load_sweep(write(tmp_path, search, scheduler)))
    assert isinstance(searcher, ConfigurationOptuna)
    return searcher


def finish(
    searcher: ConfigurationOptuna, trial_id: str, values: dict[int, float], error: bool = False
) -> None:
    for it, v in values.items():
        searcher.on_trial_result(trial_id, {"iteration": it, "miou18": v, "max_iters": 8})
    last = max(values)
    searcher.on_trial_complete(
        trial_id, {"iteration": last, "miou18": values[last], "max_iters": 8}, error=error
    )


def test_optuna_runs_every_sampled_configuration_on_every_seed(tmp_path: Path, base: Path) -> None:
    searcher = optuna_searcher(tmp_path)
    trials = drain(searcher)
    assert len(trials) == 8
    keys = [Configuration.from_params(p).key for _, p in trials]
    assert all(keys[i] == keys[i + 1] for i in range(0, 8, 2))  # seeds 0 and 1 side by side
    assert [p["seed"] for _, p in trials] == [0, 1] * 4
    scales = [p["ablation"]["lambda_scale"] for _, p in trials]
    assert all(0.1 <= s <= 10 for s in scales)

    (a0, _), (a1, _), (b0, _), (b1, _), (c0, _), (c1, _), (d0, _), (d1, _) = trials
    finish(searcher, a0, {2: 0.4, 4: 0.5, 8: 0.6})
    assert len(searcher.study.trials) == 4 and searcher.study.trials[0].state == TrialState.RUNNING  # waits
    finish(searcher, a1, {2: 0.6, 4: 0.7, 8: 0.8})
    first = searcher.study.trials[0]
    assert first.state == TrialState.COMPLETE and first.value == pytest.approx(0.7)  # the mean over seeds
    finish(searcher, b0, {2: 0.1})  # stopped at the first rung by the scheduler...
    finish(searcher, b1, {2: 0.3})
    pruned = searcher.study.trials[1]
    assert pruned.state == TrialState.PRUNED  # ...so it is pruned, not complete
    assert pruned.intermediate_values == {2: pytest.approx(0.2)}  # TPE ranks it by this, below completes
    finish(searcher, c0, {2: 0.5, 4: 0.5, 8: 0.5})
    finish(searcher, c1, {2: 0.5}, error=True)  # a seed that failed for good
    assert searcher.study.trials[2].state == TrialState.FAIL


def test_optuna_repeats_are_not_trained_twice(tmp_path: Path, base: Path) -> None:
    search = {
        "optuna": {
            "variants": ["none", "fusion_st"],
            "lambda_scale": {"low": 0.5, "high": 2},
            "num_samples": 12,
            "seeds": [0, 1],
            "sampler_seed": 0,
        }
    }
    searcher = build_searcher(load_sweep(write(tmp_path, search)))
    trials = drain(searcher)
    baseline = [t for t, p in trials if p["ablation"]["variant"] == "none"]
    assert len(baseline) == 2  # "none" has no lambda: proposed again, it is the same configuration
    repeats = [t for t in searcher.study.trials if t.params.get("variant") == "none"]
    assert len(repeats) > 1
    for trial_id in baseline:
        finish(searcher, trial_id, {8: 0.5})
    assert {t.state for t in searcher.study.trials if t.params.get("variant") == "none"} == {
        TrialState.COMPLETE
    }


def test_optuna_state_survives_save_and_restore(tmp_path: Path, base: Path) -> None:
    searcher = optuna_searcher(tmp_path)
    first = [searcher.suggest(f"t{i}") for i in range(3)]
    finish(searcher, "t0", {8: 0.5})
    saved = tmp_path / "optuna.pkl"
    searcher.save(str(saved))
    restored = optuna_searcher(tmp_path)
    restored.restore(str(saved))
    fourth = restored.suggest("t3")
    assert Configuration.from_params(fourth).key == Configuration.from_params(first[2]).key
    assert fourth["seed"] == 1
    finish(restored, "t1", {8: 0.7})
    assert restored.study.trials[0].value == pytest.approx(0.6)


def _decide_spec(tmp_path: Path, **fields) -> object:
    raw = {"base_config": "base.yaml", "name": "d", "storage_path": str(tmp_path / "results"),
           "search": {"grid": {"variants": ["fusion_st", "none"], "lambda_scales": [1.0, 9.0],
                               "seeds": [0, 1]}},
           "scheduler": {"type": "per_config_asha", "grace_period": 4}, "max_concurrent_trials": 3,
           "decide": {"effect": 0.1, "max_seeds": 4, "budget": 3.0}, **fields}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_sweep(path)


def test_a_configurations_seeds_start_together_only_when_the_free_slots_hold_them(tmp_path: Path, base: Path):
    spec = load_sweep(write(tmp_path, {"grid": {"variants": ["none", "fusion_st"], "seeds": [0, 1]}}))
    searcher = GridSearcher(spec.grid_trials())
    assert searcher.set_max_concurrency(3)
    assert searcher.suggest("a")["seed"] == 0 and searcher.suggest("b")["seed"] == 1
    assert searcher.suggest("c") is None  # one slot free, two seeds to start: wait
    searcher.on_trial_complete("a")
    assert [searcher.suggest(t)["seed"] for t in "cd"] == [0, 1]
    assert searcher.suggest("e") == Searcher.FINISHED


def test_the_deciding_searcher_adds_fresh_seeds_for_open_comparisons_and_records_each_change(
        tmp_path: Path, base: Path) -> None:
    from tune.decision import BETTER, STOPPED
    from tune.driver import experiment_dir
    from tune.experiment import Experiment

    spec = _decide_spec(tmp_path)
    location = experiment_dir(spec)
    Path(location).mkdir(parents=True)
    searcher = build_searcher(spec, location)
    searcher.set_max_concurrency(3)
    quality = {"none": 0.2, "fusion_st x1": 0.9, "fusion_st x9": 0.1}
    handed: dict[str, tuple[str, int]] = {}

    def take(trial_id: str) -> dict | str | None:
        params = searcher.suggest(trial_id)
        if isinstance(params, dict):
            handed[trial_id] = (Configuration.from_params(params).label, params["seed"])
        return params

    def end(trial_id: str, iteration: int = 8) -> None:
        label, seed = handed[trial_id]
        value = quality[label] + 0.01 * ((seed * 7 + len(label)) % 5 - 2)
        searcher.on_trial_complete(trial_id, {"iteration": iteration, "miou18": value})

    assert take("r0") and take("r1") and take("x") is None  # the reference first; x1's two seeds wait
    assert [handed[t] for t in ("r0", "r1")] == [("none", 0), ("none", 1)]
    end("r0")
    end("r1")
    assert take("a0") and take("a1")
    assert take("b0") is None  # x9's two seeds cannot start together: three slots, x1 holds two
    end("a0")
    end("a1")
    assert take("b0") and take("b1")
    end("b0", 4)  # stopped at the rung
    end("b1", 4)
    fresh = [take(f"f{i}") for i in range(4)]
    assert [(handed[f"f{i}"]) for i in range(3)] == [("none", 2), ("none", 3), ("fusion_st x1", 2)]
    assert fresh[3] is None  # three slots
    for i in range(3):
        end(f"f{i}")
    take("f3")
    assert handed["f3"] == ("fusion_st x1", 3) and take("f4") is None  # nothing more wanted yet
    end("f3")
    assert take("f5") == Searcher.FINISHED
    history = Experiment(location).decisions()
    assert [row["sequence"] for row in history] == list(range(1, len(history) + 1))
    final = {row["label"]: row["outcome"] for row in history[-1]["decisions"].values()}
    assert final == {"fusion_st x1": BETTER, "fusion_st x9": STOPPED} and history[-1]["done"]
