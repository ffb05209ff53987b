"""The Ray Tune callbacks a sweep runs with: Ray's result loggers, and W&B and MLflow through Ray's own
integrations, checked before Ray starts.

TensorBoard is the trainer's own (`cmda.logs`: scalars at trainer iterations, in each trial folder's
`tensorboard/`), so `tensorboard --logdir <experiment>` shows every trial by iteration. Ray's TBX logger
is left out: its event files count reports (1, 2, 3) and Ray would print a TensorBoard command for a
staging folder it deletes at the end. W&B runs are grouped by configuration and named by seed; MLflow runs
are named "configuration, seed" and tagged with both; both log each report at its trainer iteration.
See docs/ARCHITECTURE.md (tune) and the README (Tracking).
"""

from __future__ import annotations

import importlib.util
import inspect
import netrc
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tune.configuration import RAY_ITERATION, Configuration, report_iteration, trial_label
from tune.sweep import SweepError, SweepSpec

NO_AUTO_LOGGERS = "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"
"""Ray's switch for its default loggers (JSON, CSV, TBX): on, and the JSON and CSV ones are passed
explicitly (`result_loggers`), so only the TBX one is left out."""
WANDB_OFFLINE_MODES = ("offline", "disabled")


def result_loggers() -> list[Any]:
    """Ray's JSON (result.json: what `tune.experiment` reads) and CSV loggers, without its TBX logger."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    return [JsonLoggerCallback(), CSVLoggerCallback()]


def passes_result_loggers(tuner: Any) -> bool:
    """Whether the Tuner's callbacks include Ray's JSON logger (every sweep since `result_loggers`; an
    experiment restored from an older run may not, and then keeps Ray's default loggers). Read through
    Ray's internal Tuner state; anything unexpected reads as False (Ray's defaults stay on: nothing lost)."""
    from ray.tune.logger import JsonLoggerCallback

    try:
        callbacks = tuner._local_tuner._run_config.callbacks or []  # Ray has no public accessor
    except AttributeError:
        return False
    return any(isinstance(c, JsonLoggerCallback) for c in callbacks)


@contextmanager
def without_ray_event_files(tuner: Any) -> Iterator[None]:
    """While a Tuner is fitted: Ray adds no default loggers when the Tuner passes `result_loggers`."""
    if not passes_result_loggers(tuner):
        yield
        return
    before = os.environ.get(NO_AUTO_LOGGERS)
    os.environ[NO_AUTO_LOGGERS] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(NO_AUTO_LOGGERS, None)
        else:
            os.environ[NO_AUTO_LOGGERS] = before


# -- settings, checked before Ray starts ------------------------------------------------------------------


def _fail(spec: SweepSpec, where: str, message: str) -> SweepError:
    return SweepError(f"{spec.path}: field 'callbacks.{where}': {message}")


def _accepted(*functions: Any) -> set[str]:
    names: set[str] = set()
    for function in functions:
        names.update(p for p in inspect.signature(function).parameters if p not in ("self", "args", "kwargs"))
    return names


def _wandb_key_known(options: dict[str, Any]) -> bool:
    """An API key in the options, the environment, or `wandb login`'s netrc entry for the W&B host."""
    if options.get("api_key") or os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def check_callbacks(spec: SweepSpec) -> None:
    """Each enabled tracker: its package installed, every option one its Ray callback (or `wandb.init`)
    takes, and what it needs to log at all (W&B: an API key or offline mode; MLflow: a tracking_uri), so
    that a sweep does not fail after Ray has started. A problem is a SweepError naming the field."""
    for name, options in spec.callbacks.items():
        if importlib.util.find_spec(name) is None:
            raise _fail(spec, name, f"enabled but the '{name}' package is not installed (pip install "
                        f"{name}), or remove callbacks.{name}")
        if name == "wandb":
            import wandb
            from ray.air.integrations.wandb import WandbLoggerCallback

            accepted = _accepted(WandbLoggerCallback.__init__, wandb.init)
        else:
            from ray.air.integrations.mlflow import MLflowLoggerCallback

            accepted = _accepted(MLflowLoggerCallback.__init__)
        for key in options:
            if key not in accepted:
                raise _fail(spec, f"{name}.{key}", f"not an option of {name}; expected one of "
                            f"{', '.join(sorted(accepted))}")
        if name == "wandb":
            _check_wandb(spec, options)
        else:
            _check_mlflow(spec, options)


def _check_wandb(spec: SweepSpec, options: dict[str, Any]) -> None:
    mode = options.get("mode") or os.environ.get("WANDB_MODE")
    if mode in WANDB_OFFLINE_MODES:
        return
    key_file = options.get("api_key_file")
    if key_file is not None:
        if not Path(key_file).expanduser().is_file():
            raise _fail(spec, "wandb.api_key_file", f"{key_file}: no such file")
        return
    if not _wandb_key_known(options):
        raise _fail(spec, "wandb", "no W&B API key: run `wandb login`, set WANDB_API_KEY or "
                    "callbacks.wandb.api_key_file, or log offline with callbacks.wandb.mode: offline "
                    "(`wandb sync` uploads later)")


def _check_mlflow(spec: SweepSpec, options: dict[str, Any]) -> None:
    uri = options.get("tracking_uri")
    if not isinstance(uri, str) or not uri:
        raise _fail(spec, "mlflow.tracking_uri", "expected where MLflow records the runs: a server "
                    "(http://host:5000), a database (sqlite:///mlflow.db) or a folder (file:///path/mlruns)")
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        folder = Path(parsed.path if parsed.scheme else uri).expanduser()
        existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK):
            raise _fail(spec, "mlflow.tracking_uri", f"{uri}: {existing or folder} is not a folder this "
                        "process can write")
        if not _file_store_allowed():
            raise _fail(spec, "mlflow.tracking_uri", f"{uri}: this MLflow refuses a folder store unless "
                        "MLFLOW_ALLOW_FILE_STORE=true is set; set it, or use a database store "
                        "(sqlite:///path/mlflow.db)")


def _file_store_allowed() -> bool:
    try:
        from mlflow.environment_variables import MLFLOW_ALLOW_FILE_STORE
    except ImportError:  # an MLflow from before the switch: folder stores are simply allowed
        return True
    return bool(MLFLOW_ALLOW_FILE_STORE.get())


# -- the callbacks -----------------------------------------------------------------------------------------


def _configuration(trial: Any) -> tuple[Configuration, Any]:
    return Configuration.from_params(trial.config), trial.config.get("seed")


def _at_iteration(result: dict[str, Any]) -> dict[str, Any]:
    """The tracker's copy of a report with Ray's report count replaced by the trainer iteration: Ray's
    integrations log each report at step `training_iteration`."""
    iteration = report_iteration(result)
    return result if iteration is None else {**result, RAY_ITERATION: iteration}


def tracking_callbacks(spec: SweepSpec, experiment_folder: str | None = None) -> list[Any]:
    """W&B / MLflow callbacks for the trackers the sweep enables (checked first: `check_callbacks`).
    W&B's offline files go to the experiment folder when it is local (Ray's trial staging folder, W&B's
    default, is deleted when the sweep ends)."""
    check_callbacks(spec)
    callbacks: list[Any] = []
    for name, options in spec.callbacks.items():
        if name == "wandb":
            defaults: dict[str, Any] = {"project": spec.name}
            if experiment_folder is not None and "://" not in experiment_folder:
                defaults["dir"] = experiment_folder
            callbacks.append(_wandb_callback_class()(**{**defaults, **options}))
        elif name == "mlflow":
            callbacks.append(_mlflow_callback_class()(**{"experiment_name": spec.name, **options}))
    return callbacks


def _wandb_callback_class() -> type:
    from ray.air.integrations.wandb import WandbLoggerCallback

    class ConfigurationWandb(WandbLoggerCallback):
        """Ray's W&B callback with one group per configuration (its label, after the group given in the
        sweep file if any) and each run named by its seed. `mode: offline` in the sweep file needs no API
        key (Ray's own setup honours only the WANDB_MODE variable)."""

        def setup(self, *args: Any, **kwargs: Any) -> None:
            if self.kwargs.get("mode") in WANDB_OFFLINE_MODES:
                self.api_key_file = None
                return
            super().setup(*args, **kwargs)

        def log_trial_start(self, trial: Any) -> None:
            configuration, seed = _configuration(trial)
            group, kwargs = self.group, self.kwargs
            self.group = f"{group}/{configuration.label}" if group else configuration.label
            self.kwargs = {"name": f"seed {seed}", "job_type": configuration.variant, **kwargs}
            try:
                super().log_trial_start(trial)
            finally:
                self.group, self.kwargs = group, kwargs

        def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
            super().log_trial_result(iteration, trial, _at_iteration(result))

    return ConfigurationWandb


def _mlflow_callback_class() -> type:
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    class ConfigurationMLflow(MLflowLoggerCallback):
        """Ray's MLflow callback with runs named "configuration, seed d", tagged `configuration`, `variant`
        and `seed` (group by the tag in MLflow's UI), and metrics logged at the trainer iteration."""

        def log_trial_start(self, trial: Any) -> None:
            if trial not in self._trial_runs:
                configuration, seed = _configuration(trial)
                tags = {**self.tags, "trial_name": str(trial), "configuration": configuration.label,
                        "variant": configuration.variant, "seed": str(seed)}
                run = self.mlflow_util.start_run(tags=tags, run_name=trial_label(configuration, seed))
                self._trial_runs[trial] = run.info.run_id
            super().log_trial_start(trial)

        def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
            super().log_trial_result(iteration, trial, _at_iteration(result))

    return ConfigurationMLflow
