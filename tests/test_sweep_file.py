"""Sweep file validation and search-space construction (no Ray cluster is started)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tune.driver import ClusterError, check_cluster_resources, trial_label
from tune.sweep import GridSearch, OptunaSpec, SweepError, load_sweep, parse_sweep
from tune.trainable import resolve_trial_config

# The variant names of docs/ARCHITECTURE.md (cmda.uda.feature_losses.VARIANTS must match them).
VARIANTS = (
    "none", "src_rgb_event", "src_rgb_event+fusion_st", "fusion_st", "rgb_st+event_s_rgb_t",
    "rgb_st+event_st", "rgb_st+event_s_rgb_t+masked_event",
)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def base_config(tmp_path: Path) -> Path:
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump({"name": "b", "seed": 0, "model": {"backbone": "mit_b0"},
                                    "train": {"max_iters": 10, "eval_interval": 5}}))
    return path


def sweep(tmp_path: Path, base_config: Path, **fields: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "t", "base_config": base_config.name,
        "search": {"grid": {"variants": ["none", "fusion_st"], "lambdas": [0.1, 0.5], "seeds": [0, 1]}},
        "scheduler": {"type": "asha", "metric": "miou18", "mode": "max", "time_attr": "iteration",
                      "grace_period": 5, "reduction_factor": 2, "max_t": 10},
        "resources": {"cpu": 1, "gpu": 0},
        "storage_path": str(tmp_path / "results"),
    }
    raw.update(fields)
    return raw


def parse(tmp_path: Path, raw: dict[str, Any]) -> Any:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_sweep(path, known_variants=VARIANTS)


def expect_error(tmp_path: Path, raw: dict[str, Any], *fragments: str) -> str:
    with pytest.raises(SweepError) as info:
        parse(tmp_path, raw)
    message = str(info.value)
    assert str(tmp_path / "sweep.yaml") in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_trainer_variants_match_the_architecture_contract() -> None:
    pytest.importorskip("cmda.uda.feature_losses", reason="feature losses not merged yet")
    from tune.sweep import valid_variants

    assert set(valid_variants()) == set(VARIANTS)


def test_grid_runs_baseline_once_per_seed_and_other_variants_per_lambda(tmp_path, base_config) -> None:
    raw = sweep(tmp_path, base_config)
    raw["search"]["grid"]["variants"].append({"variant": "rgb_st+event_st", "lambdas": [0.01],
                                              "terms": {"event_st": 0.2}})
    spec = parse(tmp_path, raw)
    assert isinstance(spec.search, GridSearch)
    cells = [(p.variant, p.weight, p.lambdas) for p in spec.search.points]
    assert cells == [("none", None, {}), ("fusion_st", 0.1, {}), ("fusion_st", 0.5, {}),
                     ("rgb_st+event_st", 0.01, {"event_st": 0.2})]
    assert spec.search.num_trials == 8
    assert spec.base_config == base_config.resolve()
    assert (spec.metric, spec.mode) == ("miou18", "max")
    assert (spec.scheduler.grace_period, spec.scheduler.max_t) == (5, 10)


@pytest.mark.parametrize(("mutate", "fragments"), [
    (lambda r: r["search"]["grid"]["variants"].append("fusion"), ("search.grid.variants[2]", "'fusion'",
                                                                  "rgb_st+event_st")),
    (lambda r: r["search"]["grid"].update(lambdas=[0.1, -0.5]), ("search.grid.lambdas[1]", ">= 0")),
    (lambda r: r["scheduler"].pop("metric"), ("scheduler.metric",)),
    (lambda r: r["scheduler"].update(mode="maximize"), ("scheduler.mode", "'maximize'")),
    (lambda r: r["scheduler"].update(grace_period=20), ("scheduler.grace_period", "exceeds max_t")),
    (lambda r: r.update(overides={"a": 1}), ("<top level>", "overides")),
    (lambda r: r["scheduler"].update(grace=3), ("scheduler", "grace")),
    (lambda r: r["search"]["grid"].update(seed=[1]), ("search.grid", "seed")),
    (lambda r: r["resources"].update(gpus=1), ("resources", "gpus")),
    (lambda r: r.update(failure={"max_failure": 2}), ("failure", "max_failure")),
    (lambda r: r.update(base_config="missing.yaml"), ("base_config", "no such file")),
    (lambda r: r.update(search={"grid": {"variants": ["none"]}, "optuna": {}}), ("search", "exactly one")),
    (lambda r: r.update(callbacks={"tensorboard": True}), ("callbacks", "tensorboard")),
    (lambda r: r["search"]["grid"].update(seeds=[0, 0]), ("search.grid.seeds", "duplicate")),
    (lambda r: r.update(scheduler={**r["scheduler"], "type": "per_config_asha"},
                        search={"optuna": {"variants": ["none"], "num_samples": 2}}),
     ("scheduler.type", "needs search.grid")),
    (lambda r: r["scheduler"].update(type="hyperband"), ("scheduler.type", "'hyperband'")),
])
def test_invalid_fields_are_named(tmp_path, base_config, mutate, fragments) -> None:
    raw = sweep(tmp_path, base_config)
    mutate(raw)
    expect_error(tmp_path, raw, *fragments)


def test_optuna_search_rejects_grid_entries_and_parses_ranges(tmp_path, base_config) -> None:
    optuna = {"variants": ["none", "fusion_st", {"variant": "src_rgb_event", "lambda": {"low": 0.01,
                                                                                     "high": 0.2}}],
              "lambda": {"low": 0.001, "high": 1.0}, "num_samples": 6, "seed": 3}
    spec = parse(tmp_path, sweep(tmp_path, base_config, search={"optuna": optuna}))
    assert isinstance(spec.search, OptunaSpec)
    assert set(spec.search.ranges) == {"fusion_st", "src_rgb_event"}  # the baseline samples no lambda
    assert (spec.search.ranges["src_rgb_event"].low, spec.search.ranges["fusion_st"].high) == (0.01, 1.0)
    assert (spec.search.num_samples, spec.search.seed) == (6, 3)

    gridded = dict(optuna, **{"lambda": {"grid_search": [0.1, 0.5]}})
    expect_error(tmp_path, sweep(tmp_path, base_config, search={"optuna": gridded}),
                 "search.optuna.lambda", "grid")
    no_range = {"variants": ["fusion_st"], "num_samples": 2}
    expect_error(tmp_path, sweep(tmp_path, base_config, search={"optuna": no_range}),
                 "search.optuna.lambda", "fusion_st")


def test_gpu_request_on_a_cpu_cluster_is_refused_before_fit(tmp_path, base_config) -> None:
    spec = parse(tmp_path, sweep(tmp_path, base_config, resources={"cpu": 1, "gpu": 0.5}))
    with pytest.raises(ClusterError, match="resources.gpu"):
        check_cluster_resources(spec, {"CPU": 8.0})
    check_cluster_resources(spec, {"CPU": 8.0, "GPU": 1.0})


def test_trial_config_layers_overrides_then_trial_params(tmp_path, base_config) -> None:
    params = {"base_config": str(base_config), "overrides": {"train.max_iters": 4, "data.batch_size": 1},
              "ablation": {"variant": "fusion_st", "lambda": 0.05, "lambdas": {"fusion_st": 0.2}}, "seed": 7}
    config = resolve_trial_config(params, work_dir=tmp_path / "w", name="trial")
    assert config["train"] == {"max_iters": 4, "eval_interval": 5, "work_dir": str(tmp_path / "w")}
    assert config["data"] == {"batch_size": 1}
    assert config["uda"]["feature_loss"] == {"variant": "fusion_st", "weight": 0.05,
                                             "lambdas": {"fusion_st": 0.2}}
    assert (config["seed"], config["name"]) == (7, "trial")
    params["overrides"]["train.max_iters.x"] = 1
    with pytest.raises(ValueError, match="train.max_iters.x"):
        resolve_trial_config(params)
    assert trial_label(params) == "fusion_st_l0.05_s7"


@pytest.mark.parametrize("name", ["demo.yaml", "l2_ablation_b2.yaml", "l2_optuna_b2.yaml"])
def test_shipped_sweep_files_are_valid(name: str) -> None:
    spec = load_sweep(REPO / "configs" / "sweeps" / name, known_variants=VARIANTS)
    if name == "demo.yaml":
        assert isinstance(spec.search, GridSearch)
        assert {p.variant for p in spec.search.points} == set(VARIANTS)
        assert (spec.cpu, spec.gpu, spec.max_concurrent_trials) == (1.0, 0.0, 2)
        assert spec.scheduler.type == "asha"
    if name == "l2_ablation_b2.yaml":
        assert isinstance(spec.search, GridSearch)
        assert len(spec.search.seeds) == 3 and spec.gpu == 1.0
        assert (spec.scheduler.grace_period, spec.scheduler.max_t) == (8000, 40000)
        assert spec.search.num_trials == 3 * (1 + 6 * 4)


def test_cli_check_and_clear_message_without_a_cluster(tmp_path, base_config, monkeypatch, capsys) -> None:
    from tune.cli import main

    monkeypatch.setattr("tune.sweep.valid_variants", lambda: VARIANTS)
    monkeypatch.setattr("tune.driver.check_trainer_config", lambda spec: None)  # a stand-in base config
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    import ray

    def no_cluster(address: str | None = None, **kwargs: Any) -> None:
        # What ray.init(address="auto") raises with no cluster; faked so that a Ray left running on this
        # machine can never receive the test's sweep.
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(ray, "init", no_cluster)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep(tmp_path, base_config)))
    assert main(["sweep", str(path), "--check"]) == 0
    assert "grid of 6 trials" in capsys.readouterr().out
    bad = sweep(tmp_path, base_config)
    bad["search"]["grid"]["lambdas"] = [-1]
    path.write_text(yaml.safe_dump(bad))
    assert main(["sweep", str(path)]) == 2
    assert "search.grid.lambdas[0]" in capsys.readouterr().err
    path.write_text(yaml.safe_dump(sweep(tmp_path, base_config)))
    assert main(["sweep", str(path), "--address", "auto"]) == 2
    err = capsys.readouterr().err
    assert "could not connect to a Ray cluster" in err and "--address" in err


def test_enabled_tracking_callback_without_its_package_is_a_clear_error(tmp_path, base_config,
                                                                        monkeypatch) -> None:
    import importlib.util

    from tune.driver import build_callbacks

    callbacks = {"wandb": {"project": "p"}, "mlflow": False}
    spec = parse(tmp_path, sweep(tmp_path, base_config, callbacks=callbacks))
    assert spec.callbacks == {"wandb": {"project": "p"}}
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real_find_spec(name, *a))
    with pytest.raises(ImportError, match=r"callbacks.wandb.*pip install wandb"):
        build_callbacks(spec)


def test_trainer_config_schema_catches_override_typos_before_ray(tmp_path: Path) -> None:
    from tune.driver import check_trainer_config

    raw = {"name": "typo", "base_config": str(REPO / "configs" / "demo.yaml"),
           "overrides": {"train.max_iter": 10},
           "search": {"grid": {"variants": ["none", "fusion_st"], "lambdas": [0.1], "seeds": [0]}}}
    spec = parse(tmp_path, raw)
    with pytest.raises(SweepError, match=r"overrides.*max_iter"):
        check_trainer_config(spec)
    raw["overrides"] = {"train.max_iters": 10}
    check_trainer_config(parse(tmp_path, raw))


def test_parse_sweep_rejects_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(SweepError, match="<top level>"):
        parse_sweep(["a"], tmp_path / "x.yaml", known_variants=VARIANTS)
