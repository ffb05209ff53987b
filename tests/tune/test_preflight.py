"""Checks before Ray starts: trainer configs, data and weights, storage, an existing experiment, and
whether a trial fits on one node. Ray is never started here (ray.init is replaced by a function that fails
the test if it is reached)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import ray
import yaml

from tune import preflight
from tune.cli import main
from tune.preflight import ClusterError, check_node_fit
from tune.sweep import load_sweep

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("ray.init reached: the check should have failed before Ray starts")

    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


DATA: dict[str, Path] = {}


@pytest.fixture(autouse=True)
def twin_data(synthetic_root: Path) -> None:
    """The sweeps read the synthetic twin: the pre-flight runs the fast data check on it."""
    DATA.update(source=synthetic_root / "cityscapes", target=synthetic_root / "DSEC_Night")


def write(tmp_path: Path, **fields: Any) -> Path:
    raw: dict[str, Any] = {
        "name": "pf",
        "base_config": str(REPO / "configs" / "demo.yaml"),
        "overrides": {
            "data.source.root": str(DATA["source"]),
            "data.target.root": str(DATA["target"]),
            "train.max_iters": 20,
            "train.eval_interval": 10,
        },
        "search": {"grid": {"variants": ["none", "fusion_st", "rgb_st+event_st"], "seeds": [0, 1]}},
        "scheduler": {"type": "per_config_asha", "grace_period": 10},
        "resources": {"cpu": 1},
        "storage_path": str(tmp_path / "results"),
    }
    raw.update(fields)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def check(tmp_path: Path, capsys: pytest.CaptureFixture, **fields: Any) -> tuple[int, str]:
    code = main(["sweep", str(write(tmp_path, **fields)), "--check"])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_a_valid_sweep_passes_every_check(tmp_path: Path, capsys) -> None:
    code, out = check(tmp_path, capsys)
    assert code == 0, out
    assert "OK (grid of 3 configurations x 2 seeds = 6 trials; metric miou18 (max))" in out


def test_every_trials_trainer_config_is_validated(tmp_path: Path, capsys) -> None:
    overrides = {"train.max_iter": 20, "data.source.root": "x"}
    code, out = check(tmp_path, capsys, overrides=overrides)
    assert code == 2 and "max_iter" in out and "the trainer rejects its config" in out
    assert str(tmp_path / "sweep.yaml") in out and "trial none, seed 0: the trainer rejects" in out


def test_missing_data_and_weights_are_named(tmp_path: Path, capsys) -> None:
    overrides = {
        "data.source.root": str(tmp_path / "nowhere"),
        "data.target.root": str(tmp_path / "night"),
        "model.pretrained": "pretrained/mit_b9.pth",
        "train.max_iters": 20,
        "train.eval_interval": 10,
    }
    code, out = check(tmp_path, capsys, overrides=overrides)
    assert code == 2
    assert "field 'overrides.data.source.root'" in out and str(tmp_path / "nowhere") in out
    assert "field 'overrides.model.pretrained'" in out and str(REPO / "pretrained" / "mit_b9.pth") in out
    assert "field 'overrides.data.target.root'" in out  # every problem at once, not one per attempt


def test_an_empty_or_wrong_data_root_is_refused_before_any_trial(tmp_path: Path, capsys) -> None:
    """The root exists, so the path check passes; the fast data check (`cmda train` runs it) does not."""
    (tmp_path / "empty").mkdir()
    overrides = {"data.source.root": str(DATA["source"]), "data.target.root": str(tmp_path / "empty"),
                 "train.max_iters": 20, "train.eval_interval": 10}
    code, out = check(tmp_path, capsys, overrides=overrides)
    assert code == 2 and "data problem(s) in" in out
    assert f"{tmp_path / 'empty'}: no sequence folders" in out and "is this a DSEC root?" in out
    code, out = check(tmp_path, capsys, overrides={**overrides, "data.target.root": str(DATA["source"])})
    assert code == 2 and "is this a DSEC root?" in out  # a Cityscapes tree where the DSEC tree belongs


def test_unwritable_storage_is_rejected(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code, out = check(tmp_path, capsys, storage_path=str(blocker / "results"))
    assert code == 2 and "field 'storage_path'" in out and "cannot write" in out


def test_an_existing_experiment_is_refused_naming_resume(tmp_path: Path, capsys) -> None:
    spec = load_sweep(write(tmp_path))
    (tmp_path / "results" / "pf").mkdir(parents=True)
    (tmp_path / "results" / "pf" / "experiment_state-x.json").write_text("{}")
    assert main(["sweep", str(spec.path)]) == 2
    err = capsys.readouterr().err
    assert f"cmda-tune resume {tmp_path / 'results' / 'pf'}" in err and "--resume" in err


def test_a_trial_must_fit_on_one_node_not_on_the_cluster_total(tmp_path: Path, caplog) -> None:
    spec = load_sweep(write(tmp_path, resources={"cpu": 6, "gpu": 1}))
    nodes = [{"CPU": 4.0, "GPU": 1.0}, {"CPU": 4.0, "GPU": 1.0}]  # 8 CPUs in total, 4 per node
    with pytest.raises(ClusterError, match=r"field 'resources'.*\{cpu: 6, gpu: 1\} on one node"):
        check_node_fit(spec, nodes)
    assert check_node_fit(spec, [*nodes, {"CPU": 8.0, "GPU": 2.0}]) is None
    warning = check_node_fit(spec, [{"CPU": 8.0}], autoscaling=True)  # GPU workers start at zero
    assert warning is not None and "autoscaler" in warning and "autoscaler" in caplog.text
    with pytest.raises(ClusterError, match="resources.gpu: 0"):
        check_node_fit(spec, [{"CPU": 16.0}])


def test_kuberay_pods_and_the_sweeps_flag_mean_an_autoscaling_cluster(tmp_path: Path, monkeypatch) -> None:
    """The RayJob's driver runs in a KubeRay head pod: the operator's variable says so; elsewhere only the
    sweep's `resources.autoscaling: true` (or Ray's own autoscaler files) make a missing node a warning."""
    monkeypatch.setenv("HOME", str(tmp_path))  # no cluster launcher bootstrap file here
    monkeypatch.delenv(preflight.KUBERAY_ENV, raising=False)
    assert preflight.autoscaling_cluster() is False  # no Ray connected: the strict answer
    assert preflight.autoscaling_cluster(declared=True) is True
    monkeypatch.setenv(preflight.KUBERAY_ENV, "1")
    assert preflight.autoscaling_cluster() is True


def test_a_gpu_sweep_on_this_cpu_machine_fails_before_ray_starts(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(preflight, "local_node", lambda num_cpus=None: {"CPU": 2.0, "GPU": 0.0})
    assert main(["sweep", str(write(tmp_path, resources={"cpu": 1, "gpu": 1}))]) == 2
    assert "field 'resources'" in capsys.readouterr().err


def test_no_cluster_at_the_address_is_a_clear_error(tmp_path: Path, capsys, monkeypatch) -> None:
    def no_cluster(address: str | None = None, **kwargs: Any) -> None:
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(ray, "init", no_cluster)
    assert main(["sweep", str(write(tmp_path)), "--address", "auto"]) == 2
    err = capsys.readouterr().err
    assert "could not connect to a Ray cluster" in err and "--address" in err


def test_optuna_sweeps_validate_each_variant_at_both_ends_of_its_range(tmp_path: Path) -> None:
    optuna = {
        "variants": ["none", "fusion_st"],
        "lambda_scale": {"low": 0.5, "high": 4.0},
        "num_samples": 5,
        "seeds": [0, 1],
    }
    spec = load_sweep(write(tmp_path, search={"optuna": optuna}))
    trials = preflight.representative_trials(spec)
    assert [(t["ablation"]["variant"], t["ablation"]["lambdas"], t["seed"]) for t in trials] == [
        ("none", {}, 0),
        ("none", {}, 1),
        ("fusion_st", {"fusion_st": 0.025}, 0),
        ("fusion_st", {"fusion_st": 0.025}, 1),
        ("fusion_st", {"fusion_st": 0.2}, 0),
        ("fusion_st", {"fusion_st": 0.2}, 1),
    ]
    assert len(preflight.check_trial_configs(spec)) == 6


def test_a_local_sweep_starts_its_own_ray_never_one_found_on_the_machine(monkeypatch) -> None:
    from tune.driver import connect

    calls: list[dict] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    assert connect(None, num_cpus=2) is True
    assert calls[0]["address"] == "local" and calls[0]["num_cpus"] == 2


def test_a_rung_between_two_evaluations_is_a_warning(tmp_path: Path, capsys) -> None:
    code, out = check(tmp_path, capsys, scheduler={"type": "asha", "grace_period": 15, "max_t": 20})
    assert code == 0, out
    assert "warning:" in out and "rung(s) at iteration 15 are no multiple of train.eval_interval=10" in out
