"""W&B and MLflow settings are checked before Ray starts (exit 2 naming the field); Ray's own TBX logger is
left out (TensorBoard is the trainer's, by iteration). The runs themselves: tests/tune/test_tune.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import write_base_config

from tune.callbacks import check_callbacks, result_loggers
from tune.cli import main
from tune.sweep import SweepError, load_sweep


@pytest.fixture()
def no_wandb_login(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No API key anywhere W&B looks (the environment, ~/.netrc) and no offline mode; MLflow's folder
    stores allowed (MLflow 3 refuses them otherwise)."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NETRC", str(tmp_path / "home" / ".netrc"))
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def spec_with(tmp_path: Path, callbacks: dict[str, Any]) -> Any:
    write_base_config(tmp_path)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"base_config": "base.yaml", "search": {"grid": {"variants": ["none"]}},
                                    "storage_path": str(tmp_path / "results"), "callbacks": callbacks}))
    return load_sweep(path)


@pytest.mark.parametrize(
    ("callbacks", "fragments"),
    [
        ({"mlflow": True}, ("callbacks.mlflow.tracking_uri", "file:///path/mlruns")),
        ({"mlflow": {"tracking_uri": "file:///proc/1/nowhere/mlruns"}}, ("not a folder this process",)),
        ({"mlflow": {"tracking_uri": "file:///tmp", "tracking_url": "x"}}, ("callbacks.mlflow.tracking_url",
                                                                           "tracking_uri")),
        ({"wandb": {"project": "p"}}, ("callbacks.wandb", "wandb login", "mode: offline")),
        ({"wandb": {"project": "p", "api_key_file": "/nonexistent/key"}}, ("callbacks.wandb.api_key_file",)),
        ({"wandb": {"projekt": "p", "mode": "offline"}}, ("callbacks.wandb.projekt", "project")),
    ],
)
def test_a_tracker_that_could_not_log_is_refused_before_ray_starts(tmp_path, no_wandb_login, callbacks,
                                                                   fragments) -> None:
    with pytest.raises(SweepError) as info:
        check_callbacks(spec_with(tmp_path, callbacks))
    for fragment in (str(tmp_path / "sweep.yaml"), *fragments):
        assert fragment in str(info.value)


def test_offline_wandb_a_key_and_a_file_store_pass(tmp_path, no_wandb_login, monkeypatch) -> None:
    check_callbacks(spec_with(tmp_path, {"wandb": {"mode": "offline"},
                                         "mlflow": {"tracking_uri": (tmp_path / "mlruns").as_uri()}}))
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    check_callbacks(spec_with(tmp_path, {"wandb": {"project": "p"}}))


def test_a_folder_store_mlflow_refuses_is_named(tmp_path, monkeypatch) -> None:
    assert hasattr(pytest.importorskip("mlflow.environment_variables"), "MLFLOW_ALLOW_FILE_STORE")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(SweepError, match="callbacks.mlflow.tracking_uri.*MLFLOW_ALLOW_FILE_STORE=true"):
        check_callbacks(spec_with(tmp_path, {"mlflow": {"tracking_uri": (tmp_path / "mlruns").as_uri()}}))


def test_sweep_check_exits_2_on_a_missing_setting(tmp_path, no_wandb_login, capsys) -> None:
    spec = spec_with(tmp_path, {"mlflow": {}})
    assert main(["sweep", str(spec.path), "--check"]) == 2
    assert "callbacks.mlflow.tracking_uri" in capsys.readouterr().err


def test_ray_writes_results_but_no_event_files_of_its_own(tmp_path) -> None:
    import os

    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback

    from tune.callbacks import NO_AUTO_LOGGERS, without_ray_event_files

    loggers = result_loggers()
    assert {type(c) for c in loggers} == {JsonLoggerCallback, CSVLoggerCallback}
    assert not any(isinstance(c, TBXLoggerCallback) for c in loggers)
    ours = tune.Tuner(lambda config: None,
                      run_config=tune.RunConfig(storage_path=str(tmp_path), callbacks=loggers))
    older = tune.Tuner(lambda config: None, run_config=tune.RunConfig(storage_path=str(tmp_path)))
    with without_ray_event_files(ours):
        assert os.environ[NO_AUTO_LOGGERS] == "1"
    with without_ray_event_files(older):  # an experiment from before: Ray's loggers stay on
        assert os.environ.get(NO_AUTO_LOGGERS) != "1"
    assert NO_AUTO_LOGGERS not in os.environ
