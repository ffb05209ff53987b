"""Sweep files: schema, lambda scales, configurations, and trial configs (no Ray cluster is started)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import write_base_config

from cmda.uda.variant_names import VARIANT_NAMES
from tune.configuration import Configuration, trial_name
from tune.sweep import GridSearch, OptunaSearch, SweepError, load_sweep, parse_sweep
from tune.trainable import resolve_trial_config, trainer_overrides

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def base_config(tmp_path: Path) -> Path:
    return write_base_config(tmp_path, max_iters=10, eval_interval=5)


def sweep(tmp_path: Path, base_config: Path, **fields: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "t",
        "base_config": base_config.name,
        "search": {"grid": {"variants": ["none", "fusion_st"], "lambda_scales": [0.5, 1.0], "seeds": [0, 1]}},
        "scheduler": {
            "type": "asha",
            "mode": "max",
            "time_attr": "iteration",
            "grace_period": 5,
            "reduction_factor": 2,
            "max_t": 10,
        },
        "resources": {"cpu": 1, "gpu": 0},
        "storage_path": str(tmp_path / "results"),
    }
    raw.update(fields)
    return raw


def parse(tmp_path: Path, raw: dict[str, Any] | str) -> Any:
    path = tmp_path / "sweep.yaml"
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    return load_sweep(path)


def expect_error(tmp_path: Path, raw: dict[str, Any], *fragments: str) -> str:
    with pytest.raises(SweepError) as info:
        parse(tmp_path, raw)
    message = str(info.value)
    assert str(tmp_path / "sweep.yaml") in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_trainer_variants_match_the_architecture_contract() -> None:
    """The torch-free names (what sweep validation and the analysis read) are the registry's, in order."""
    from cmda.uda.feature_losses import VARIANTS

    assert tuple(VARIANTS) == VARIANT_NAMES


def test_lambda_scales_multiply_each_variants_default_lambdas(tmp_path, base_config) -> None:
    """Issue 11 item 4: the grid's lambda is a scale of the fork's per-term lambdas (1.0 = the fork's)."""
    raw = sweep(tmp_path, base_config)
    raw["search"]["grid"]["variants"] += [
        "rgb_st+event_st",
        {"variant": "rgb_st+event_s_rgb_t", "lambda_scales": [2.0]},
        {"variant": "rgb_st+event_st", "lambdas": {"event_st": 0.2}},  # explicit: rgb_st keeps its 0.1
    ]
    spec = parse(tmp_path, raw)
    assert isinstance(spec.search, GridSearch)
    cells = [(c.variant, c.lambda_scale, dict(c.lambdas)) for c in spec.search.configurations]
    assert cells == [
        ("none", None, {}),
        ("fusion_st", 0.5, {"fusion_st": 0.025}),
        ("fusion_st", 1.0, {"fusion_st": 0.05}),
        ("rgb_st+event_st", 0.5, {"event_st": 0.025, "rgb_st": 0.05}),
        ("rgb_st+event_st", 1.0, {"event_st": 0.05, "rgb_st": 0.1}),  # the fork's exact pair
        ("rgb_st+event_s_rgb_t", 2.0, {"event_s_rgb_t": 0.1, "rgb_st": 0.2}),
        ("rgb_st+event_st", None, {"event_st": 0.2, "rgb_st": 0.1}),
    ]
    assert spec.search.num_trials == 14
    assert (spec.metric, spec.mode, spec.target) == ("miou18", "max", "dsec_night")
    assert (spec.scheduler.grace_period, spec.scheduler.max_t, spec.max_iters) == (5, 10, 10)
    trials = spec.grid_trials()  # configuration-major: a configuration's seeds side by side
    assert [(t["ablation"]["variant"], t["seed"]) for t in trials[:4]] == [
        ("none", 0),
        ("none", 1),
        ("fusion_st", 0),
        ("fusion_st", 1),
    ]
    assert trials[2]["ablation"] == {
        "variant": "fusion_st",
        "lambda_scale": 0.5,
        "lambdas": {"fusion_st": 0.025},
    }


def test_the_study_sweep_contains_the_forks_exact_pairs() -> None:
    spec = load_sweep(REPO / "configs" / "sweeps" / "l2_ablation_b2.yaml")
    lambdas = {(c.variant, c.lambdas) for c in spec.search.configurations}
    assert ("rgb_st+event_st", (("event_st", 0.05), ("rgb_st", 0.1))) in lambdas  # Test2 (HEAD)
    assert ("rgb_st+event_s_rgb_t", (("event_s_rgb_t", 0.05), ("rgb_st", 0.1))) in lambdas  # Test1
    assert ("fusion_st", (("fusion_st", 0.05),)) in lambdas  # commit 67d3aae
    assert spec.search.num_trials == 75 and spec.scheduler.type == "per_config_asha"


def test_duplicate_configurations_are_rejected(tmp_path, base_config) -> None:
    raw = sweep(tmp_path, base_config)
    raw["search"]["grid"]["variants"].append({"variant": "fusion_st", "lambdas": {"fusion_st": 0.05}})
    expect_error(tmp_path, raw, "search.grid.variants[2]", "already in the grid", "search.grid.variants[1]")
    raw = sweep(tmp_path, base_config)
    raw["search"]["grid"]["variants"].append("none")
    expect_error(tmp_path, raw, "search.grid.variants[2]", "counted twice")


@pytest.mark.parametrize(
    ("mutate", "fragments"),
    [
        (
            lambda r: r["search"]["grid"]["variants"].append("fusion"),
            ("search.grid.variants[2].variant", "'fusion'", "rgb_st+event_st"),
        ),
        (
            lambda r: r["search"]["grid"].update(lambda_scales=[0.1, -0.5]),
            ("search.grid.lambda_scales", ">= 0"),
        ),
        (lambda r: r["search"]["grid"].update(lambdas=[0.1]), ("search.grid.lambdas", "unknown key")),
        (
            lambda r: r["search"]["grid"]["variants"].append(
                {"variant": "fusion_st", "lambdas": {"rgb_st": 1.0}}
            ),
            ("search.grid.variants[2].lambdas", "no term", "fusion_st"),
        ),
        (
            lambda r: r["search"]["grid"]["variants"].append(
                {"variant": "fusion_st", "lambdas": {"fusion_st": 1.0}, "lambda_scales": [1.0]}
            ),
            ("search.grid.variants[2]", "not both"),
        ),
        (
            lambda r: r["search"]["grid"]["variants"].append({"variant": "none", "lambda_scales": [2.0]}),
            ("search.grid.variants[2]", "no feature loss"),
        ),
        (
            lambda r: r["scheduler"].update(metric="miou_18"),
            ("scheduler.metric", "miou_18", "miou18", "dsec_night"),
        ),
        (lambda r: r["scheduler"].update(mode="maximize"), ("scheduler.mode", "'maximize'")),
        (lambda r: r["scheduler"].update(grace_period=20), ("scheduler.grace_period", "exceeds max_t")),
        (lambda r: r["scheduler"].update(max_t=20), ("scheduler.max_t", "train.max_iters=10")),
        (lambda r: r["scheduler"].pop("grace_period"), ("scheduler.grace_period", "required")),
        (lambda r: r.update(overides={"a": 1}), ("overides", "unknown key")),
        (lambda r: r.update(overrides={"seed": 3}), ("overrides.seed", "set per trial")),
        (lambda r: r["scheduler"].update(grace=3), ("scheduler.grace", "unknown key")),
        (lambda r: r["search"]["grid"].update(seed=[1]), ("search.grid.seed", "unknown key")),
        (lambda r: r["resources"].update(gpus=1), ("resources.gpus",)),
        (lambda r: r["resources"].update(cpu=0), ("resources.cpu", "greater than 0")),
        (lambda r: r["resources"].update(gpu=2), ("resources.gpu", "one device", "max_concurrent_trials")),
        (lambda r: r.update(max_concurrent_trials="all"), ("max_concurrent_trials", "'auto'")),
        (lambda r: r.update(overrides={"train.max_iters": -5}), ("overrides.train.max_iters", ">= 1", "-5")),
        (lambda r: r.update(failure={"max_failure": 2}), ("failure.max_failure",)),
        (lambda r: r.update(base_config="missing.yaml"), ("base_config", "no such file")),
        (
            lambda r: r.update(
                search={"grid": {"variants": ["none"]}, "optuna": {"variants": ["none"], "num_samples": 1}}
            ),
            ("search", "exactly one"),
        ),
        (lambda r: r.update(callbacks={"tensorboard": True}), ("callbacks", "tensorboard")),
        (lambda r: r["search"]["grid"].update(seeds=[0, 0]), ("search.grid.seeds", "duplicate")),
        (lambda r: r["scheduler"].update(type="hyperband"), ("scheduler.type", "'hyperband'")),
        (lambda r: r.update(name="a/b"), ("name", "without '/'")),
        (lambda r: r.update(target="dark_zurich"), ("target", "disagrees", "dsec_night")),
        (
            lambda r: r.update(metric="miou19", scheduler={**r["scheduler"], "metric": "miou18"}),
            ("scheduler.metric", "disagrees"),
        ),
    ],
)
def test_invalid_fields_are_named(tmp_path, base_config, mutate, fragments) -> None:
    raw = sweep(tmp_path, base_config)
    mutate(raw)
    expect_error(tmp_path, raw, *fragments)


def test_a_negative_max_iters_is_blamed_on_itself_not_on_the_rungs_it_sets(tmp_path, base_config) -> None:
    """scheduler.max_t defaults to train.max_iters: a bad max_iters is named, not the rung derived from it."""
    raw = sweep(tmp_path, base_config)
    raw["scheduler"].pop("max_t")
    raw["overrides"] = {"train.max_iters": -5}
    message = expect_error(tmp_path, raw, "field 'overrides.train.max_iters'", "-5")
    assert "scheduler" not in message, message


def test_numbers_are_numbers_the_way_people_write_them(tmp_path, base_config) -> None:
    text = yaml.safe_dump(sweep(tmp_path, base_config, overrides={"optim.lr": "X"})).replace("X", "6e-5")
    text = text.replace("- 0.5\n", "- 5e-1\n")
    spec = parse(tmp_path, text)
    assert spec.overrides["optim.lr"] == 6e-5
    assert [c.lambda_scale for c in spec.search.configurations[1:]] == [0.5, 1.0]


def test_optuna_ranges_and_seeds(tmp_path, base_config) -> None:
    optuna = {
        "variants": [
            "none",
            "fusion_st",
            {"variant": "src_rgb_event", "lambda_scale": {"low": 0.5, "high": 2}},
        ],
        "lambda_scale": {"low": 0.1, "high": 10.0},
        "num_samples": 6,
        "seeds": [0, 1, 2],
        "sampler_seed": 3,
    }
    spec = parse(tmp_path, sweep(tmp_path, base_config, search={"optuna": optuna}))
    assert isinstance(spec.search, OptunaSearch)
    assert set(spec.search.ranges) == {"fusion_st", "src_rgb_event"}  # the baseline samples no lambda
    assert (spec.search.ranges["src_rgb_event"].low, spec.search.ranges["fusion_st"].high) == (0.5, 10.0)
    assert (spec.search.num_samples, spec.search.seeds, spec.search.num_trials) == (6, (0, 1, 2), 18)

    gridded = dict(optuna, variants=[{"variant": "fusion_st", "lambda_scale": {"grid_search": [0.1, 0.5]}}])
    expect_error(tmp_path, sweep(tmp_path, base_config, search={"optuna": gridded}), "search.optuna", "grid")
    no_range = {"variants": ["fusion_st"], "num_samples": 2}
    expect_error(
        tmp_path,
        sweep(tmp_path, base_config, search={"optuna": no_range}),
        "search.optuna.lambda_scale",
        "fusion_st",
    )
    inverted = dict(optuna, lambda_scale={"low": 2, "high": 1})
    expect_error(
        tmp_path,
        sweep(tmp_path, base_config, search={"optuna": inverted}),
        "search.optuna.lambda_scale",
        "low < high",
    )


def test_trial_config_layers_overrides_then_trial_params(tmp_path, base_config) -> None:
    params = {
        "base_config": str(base_config),
        "overrides": {"train.max_iters": 4, "data.batch_size": 1},
        "ablation": {
            "variant": "rgb_st+event_st",
            "lambda_scale": 0.5,
            "lambdas": {"rgb_st": 0.05, "event_st": 0.025},
        },
        "seed": 7,
    }
    config = resolve_trial_config(params, work_dir=tmp_path / "w", name="trial")
    assert config["train"] == {"max_iters": 4, "eval_interval": 5, "work_dir": str(tmp_path / "w")}
    assert config["data"] == {"batch_size": 1}
    # the resolved per-term lambdas, which win over any scale: the trial trains exactly what params say
    assert config["uda"]["feature_loss"] == {
        "variant": "rgb_st+event_st",
        "lambdas": {"rgb_st": 0.05, "event_st": 0.025},
    }
    assert set(trainer_overrides(params)) == {"uda.feature_loss.variant", "uda.feature_loss.lambdas", "seed"}
    assert (config["seed"], config["name"]) == (7, "trial")
    assert trial_name(Configuration.from_params(params), 7, "a_00001") == "rgb_st+event_st_x0.5_s7_a_00001"
    explicit = dict(
        params, ablation={"variant": "fusion_st", "lambda_scale": None, "lambdas": {"fusion_st": 0.2}}
    )
    assert trial_name(Configuration.from_params(explicit), 7, "b") == "fusion_st_fusion_st=0.2_s7_b"


@pytest.mark.parametrize(
    "name", ["demo.yaml", "l2_ablation_b2.yaml", "l2_optuna_b2.yaml", "l2_ablation_cs2dz_b2.yaml"]
)
def test_shipped_sweep_files_are_valid(name: str) -> None:
    from cmda.data.targets import get_target
    from tune.preflight import check_trial_configs

    spec = load_sweep(REPO / "configs" / "sweeps" / name)
    assert spec.metric == get_target(spec.target).headline_metric
    assert len(check_trial_configs(spec)) == spec.search.num_trials or name == "l2_optuna_b2.yaml"
    if name == "l2_ablation_cs2dz_b2.yaml":  # the L2 variants on Dark Zurich: new ground, ranked on miou19
        assert (spec.target, spec.metric) == ("dark_zurich", "miou19")
        assert len(spec.search.configurations) == 21 and spec.search.num_trials == 63
    if name == "demo.yaml":
        assert isinstance(spec.search, GridSearch)
        assert {c.variant for c in spec.search.configurations} <= set(VARIANT_NAMES)
        assert {c.lambda_scale for c in spec.search.configurations} == {None, 1.0}  # the study's lambdas
        assert spec.reference.variant == "none" and spec.decide is not None  # the demo ends in a decision
        assert spec.search.seeds == (0, 1) and spec.scheduler.type == "per_config_asha"
        assert (spec.cpu, spec.gpu, spec.max_concurrent_trials) == (1.0, 0.0, 2)
    if name == "l2_optuna_b2.yaml":
        assert spec.search.seeds == (0, 1, 2) and spec.scheduler.type == "per_config_asha"


def test_enabled_tracking_callback_without_its_package_is_a_clear_error(
    tmp_path, base_config, monkeypatch
) -> None:
    import importlib.util

    from tune.callbacks import check_callbacks

    callbacks = {"wandb": {"project": "p"}, "mlflow": False}
    spec = parse(tmp_path, sweep(tmp_path, base_config, callbacks=callbacks))
    assert spec.callbacks == {"wandb": {"project": "p"}}
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real_find_spec(name, *a)
    )
    with pytest.raises(SweepError, match=r"callbacks.wandb.*pip install wandb"):
        check_callbacks(spec)


def test_parse_sweep_rejects_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(SweepError, match="<top level>"):
        parse_sweep(["a"], tmp_path / "x.yaml")


def test_a_variant_the_target_cannot_serve_is_refused_naming_both(tmp_path: Path, capsys) -> None:
    """The masked-event term needs real events; on Dark Zurich (images + ISR) the sweep is refused before
    Ray starts, naming the term, the variant and the target."""
    from tune.cli import main

    sweep = tmp_path / "dz.yaml"
    sweep.write_text(yaml.safe_dump({
        "base_config": str(REPO / "configs" / "demo_cs2dz.yaml"),
        "search": {"grid": {"variants": ["none", "rgb_st+event_s_rgb_t+masked_event"]}},
        "storage_path": str(tmp_path / "results"),
    }))
    assert main(["sweep", str(sweep), "--check"]) == 2
    err = capsys.readouterr().err
    assert "masked_event_s_rgb_t" in err and "'rgb_st+event_s_rgb_t+masked_event'" in err
    assert "'dark_zurich'" in err and "needs events" in err


def test_reference_and_decide_are_read_and_checked_against_the_sweep(tmp_path, base_config) -> None:
    per_config = {"type": "per_config_asha", "grace_period": 5, "reduction_factor": 2}
    grid = {"grid": {"variants": ["none", "fusion_st"], "lambda_scales": [0.5, 1.0], "seeds": [0, 1, 2]}}
    spec = parse(tmp_path, sweep(tmp_path, base_config, scheduler=per_config, search=grid,
                                 decide={"effect": 1.0, "max_seeds": 9}))
    assert spec.reference.variant == "none" and spec.decide.effect == 1.0 and spec.decide.budget == 1.0
    assert spec.launch_order()[0] == spec.reference and spec.grid_trials()[0]["ablation"]["variant"] == "none"
    assert spec.max_trials == 3 * 9 and spec.waits_at_rungs
    named = parse(tmp_path, sweep(tmp_path, base_config, scheduler=per_config, search=grid,
                                  reference={"variant": "fusion_st", "lambda_scale": 1.0}))
    assert named.reference.label == "fusion_st x1" and named.launch_order()[0] == named.reference
    assert named.decide is None and parse(tmp_path, sweep(tmp_path, base_config)).reference.variant == "none"
    cases = [
        (dict(reference="fusion_st"), "reference", "fusion_st at 2 settings"),
        (dict(reference={"variant": "fusion_st", "lambda_scale": 3.0}), "reference", "not a configuration"),
        (dict(reference="no_such_variant"), "reference.variant", "unknown variant"),
        (dict(decide={"effect": 1.0}), "scheduler.type", "plain asha"),
        (dict(decide={"effect": -1.0}, scheduler=per_config), "decide", "effect"),
        (dict(decide={"effect": 1.0, "max_seeds": 3}, scheduler=per_config), "decide.max_seeds", "twice"),
        (dict(decide={"effect": 1.0, "max_seeds": 4}, scheduler=per_config, max_concurrent_trials=1),
         "max_concurrent_trials", "at least 2 slots"),
        (dict(decide={"effect": 1.0}, scheduler=per_config,
              search={"grid": {"variants": ["fusion_st"], "seeds": [0, 1]}}),
         "reference", "add variant none"),
        (dict(decide={"effect": 1.0, "budgt": 2}, scheduler=per_config), "decide.budgt", ""),
    ]
    for fields, field_name, fragment in cases:
        expect_error(tmp_path, sweep(tmp_path, base_config, **fields), f"'{field_name}'", fragment)
