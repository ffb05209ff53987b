"""The function Ray Tune runs for one trial: resolve the trainer config, train, report every evaluation.

The trainer (`cmda.train.run`) never imports Ray; this module is the only bridge. The trainer's
`report(metrics, checkpoint_dir)` callback becomes `tune.report(..., checkpoint=...)`, and the checkpoint Ray
restores goes back to the trainer as `resume_from`, so a retried trial continues its iteration count instead
of restarting; a failure a retry cannot fix is raised as `DeterministicTrialError` for the schedulers. What a
trial leaves where (node-local scratch, the artifact folder, checkpoints): docs/ARCHITECTURE.md (tune).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cmda.io import write_yaml_atomic
from tune.placement import place_trial
from tune.remote import scratch_root

TrainFn = Callable[..., Any]
RESOLVED_CONFIG_NAME = "resolved_config.yaml"
SMALL_FILES = ("log.csv", "tensorboard")
"""What of the trainer's work dir reaches the experiment folder (besides Ray's kept checkpoints)."""
LOGS_IN_CHECKPOINT = "trial_logs"
"""The small files also travel inside each reported checkpoint: a trial resumed from a checkpoint (on any
node, in a fresh scratch folder) continues its log.csv from there instead of starting a new, shorter one."""


class DeterministicTrialError(RuntimeError):
    """A failure that would happen again on a retry; the message starts with the original error's type."""


def is_deterministic(error: BaseException) -> bool:
    """Errors a retry cannot fix: the trainer is exactly reproducible, so a NaN comes back at the same
    iteration, and a missing file or a bad config stays missing or bad. (Imported only when an error
    happened: the trainer's modules are heavy.)"""
    return isinstance(error, deterministic_error_types())


def deterministic_error_types() -> tuple[type[BaseException], ...]:
    from cmda.data.errors import DataError
    from cmda.data.targets import UnknownTargetError
    from cmda.errors import ConfigError
    from cmda.io import YAMLFileError
    from cmda.uda.dacs import NonFiniteLossError

    return (
        NonFiniteLossError,
        ConfigError,
        YAMLFileError,
        UnknownTargetError,
        DataError,  # EventFileError and every dataset error a loader worker raises
        FileNotFoundError,
    )


def trainer_overrides(params: Mapping[str, Any]) -> dict[str, Any]:
    """The dotted trainer-config keys one trial sets: the ONE place where the sweep's trial params meet the
    trainer's config names.

    `lambdas` are the resolved per-term lambdas (every term of the variant), so they win over any
    `lambda_scale` the base config may hold: the trial trains exactly what its params say. A configuration
    that varies other settings (`ablation.params`, tune.configuration) sets those dotted keys too.
    """
    ablation = params["ablation"]
    return {
        **{str(key): value for key, value in (ablation.get("params") or {}).items()},
        "uda.feature_loss.variant": ablation["variant"],
        "uda.feature_loss.lambdas": {str(k): float(v) for k, v in (ablation.get("lambdas") or {}).items()},
        "seed": int(params["seed"]),
    }


def resolve_trial_config(
    params: Mapping[str, Any], work_dir: str | Path | None = None, name: str | None = None
) -> dict[str, Any]:
    """Base config + sweep overrides + this trial's ablation cell and seed (in that order of precedence)."""
    from cmda.overrides import apply_overrides, load_with_overrides

    trial = trainer_overrides(params)
    if work_dir is not None:
        trial["train.work_dir"] = str(work_dir)
    if name is not None:
        trial["name"] = name
    template = load_with_overrides(params["base_config"], dict(params.get("overrides") or {}))
    return apply_overrides(template, trial)


def limit_threads(cpus: int) -> None:
    """Give torch the trial's CPU count (it would otherwise use every core of the node).

    Through the OpenMP/MKL variables when torch is not imported yet: torch reads them when it loads, and the
    trial does not pay for importing torch before the trainer does (seconds per trial; benchmarks/README).
    """
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(cpus)
        return
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(cpus)


def _trial_cpus(context: Any) -> int:
    """CPU count Ray reserved for this trial (torch would otherwise grab every core of the node)."""
    try:
        cpus = context.get_trial_resources().required_resources.get("CPU", 1)
    except Exception:  # noqa: BLE001 - resources are informative; one thread is a safe floor
        cpus = 1
    return max(1, int(cpus))


def _trial_gpus(context: Any) -> float:
    """GPUs Ray reserved for this trial (fractions allowed)."""
    try:
        return float(context.get_trial_resources().required_resources.get("GPU", 0))
    except Exception:  # noqa: BLE001 - no resource info: the assignment itself still decides the device
        return 0.0


def default_train_fn() -> TrainFn:
    """The real trainer, imported inside the worker so the driver does not pay for torch models."""
    from cmda.train import run

    return run


@contextmanager
def scratch_dir(trial_id: str, experiment_fs_path: str) -> Iterator[Path]:
    """Node-local work dir for the trainer, outside anything Ray syncs; removed when the trial ends. What an
    earlier attempt of the same trial left on this node (killed before its cleanup ran) goes first; what a
    trial killed by the scheduler leaves goes when the sweep ends (`remote.clean_everywhere`)."""
    root = scratch_root(experiment_fs_path)
    root.mkdir(parents=True, exist_ok=True)
    prefix = f"{trial_id}_"
    for stale in root.glob(f"{prefix}*"):
        shutil.rmtree(stale, ignore_errors=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def artifact_dir(context: Any) -> Path:
    """The trial's artifact folder: Ray uploads it to the trial's storage folder from any node."""
    path = Path(context.get_storage().trial_working_directory)
    path.mkdir(parents=True, exist_ok=True)
    return path


def staging_dir(artifacts: Path) -> Path:
    """Where writes into the artifact folder keep their temporaries: beside it (same file system, so the
    final rename stays atomic) but outside it. Ray uploads the artifact folder in a background thread after
    a report, while the trial goes on and publishes again; a temporary inside would be uploaded and, as the
    upload never deletes at the destination, stay in the experiment folder for good."""
    return artifacts.parent / f".staging_{artifacts.name}"


def publish_small_files(work_dir: Path, destination: Path, tmp_dir: Path | None = None) -> None:
    """Copy the trainer's log.csv and TensorBoard events to `destination` (the artifact folder, or a
    checkpoint's LOGS_IN_CHECKPOINT folder); each copy replaces the previous one atomically, so a concurrent
    upload sees a whole file (`tmp_dir`: where the temporaries live, see `staging_dir`)."""
    for name in SMALL_FILES:
        source = work_dir / name
        if source.is_file():
            _copy_file(source, destination / name, tmp_dir)
        elif source.is_dir():
            for item in source.rglob("*"):
                if item.is_file():
                    _copy_file(item, destination / name / item.relative_to(source), tmp_dir)


def _copy_file(source: Path, target: Path, tmp_dir: Path | None) -> None:
    from cmda.io import atomic_path

    with atomic_path(target, tmp_dir) as tmp:
        shutil.copyfile(source, tmp)


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def make_trainable(train_fn: TrainFn | None = None) -> Callable[[dict[str, Any]], None]:
    """A Ray function trainable around `train_fn(config, report=..., resume_from=...)`.

    The default is cmda.train.run; tests pass their own small function that follows the same contract.
    """

    def cmda_trial(params: dict[str, Any]) -> None:
        from ray import tune

        # One INFO line per persisted checkpoint would bury the progress table in the driver's terminal.
        logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
        context = tune.get_context()
        artifacts = artifact_dir(context)
        staging = staging_dir(artifacts)
        fn = train_fn if train_fn is not None else default_train_fn()
        limit_threads(_trial_cpus(context))
        with scratch_dir(context.get_trial_id(), context.get_storage().experiment_fs_path) as work_dir:
            config = resolve_trial_config(params, work_dir=work_dir, name=context.get_trial_name())
            # GPU placement (tune.placement): see only Ray's GPUs, and name the device that follows from them.
            requested = config.get("train", {}).get("device", "auto")
            placement, device = place_trial(requested, _trial_gpus(context))
            config.setdefault("train", {})["device"] = device
            placement.limit_memory(device)
            write_yaml_atomic(artifacts / RESOLVED_CONFIG_NAME, config, tmp_dir=staging)

            def report(metrics: Mapping[str, float | int], checkpoint_dir: str | None) -> None:
                clean = {k: (v if isinstance(v, (int, float)) else float(v)) for k, v in metrics.items()}
                publish_small_files(work_dir, artifacts, staging)
                if checkpoint_dir is None:
                    tune.report(clean)
                    return
                write_yaml_atomic(Path(checkpoint_dir) / RESOLVED_CONFIG_NAME, config)
                publish_small_files(work_dir, Path(checkpoint_dir) / LOGS_IN_CHECKPOINT)
                tune.report(clean, checkpoint=tune.Checkpoint.from_directory(checkpoint_dir))
                if _inside(Path(checkpoint_dir), work_dir):
                    shutil.rmtree(checkpoint_dir, ignore_errors=True)  # Ray holds its copy in storage now

            from tune.heartbeat import trial_heartbeat

            beat = trial_heartbeat(context.get_experiment_name(), context.get_trial_id())
            try:
                run_trainer(fn, config, report, tune.get_checkpoint(), work_dir, beat)
            finally:
                publish_small_files(work_dir, artifacts, staging)
                shutil.rmtree(staging, ignore_errors=True)

    return cmda_trial


def _takes(fn: TrainFn, name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def run_trainer(
    fn: TrainFn, config: dict[str, Any], report: Callable[..., None], checkpoint: Any, work_dir: Path,
    heartbeat: Callable[[int], None] | None = None,
) -> None:
    """Train (from `checkpoint` when Ray restores one, with the logs it carries put back into the work dir);
    deterministic failures are re-raised as DeterministicTrialError. `heartbeat` goes to a trainer that
    takes one (tune.heartbeat)."""
    extra = {"heartbeat": heartbeat} if heartbeat is not None and _takes(fn, "heartbeat") else {}
    try:
        if checkpoint is None:
            fn(config, report=report, resume_from=None, **extra)
            return
        with checkpoint.as_directory() as resume_dir:
            publish_small_files(Path(resume_dir) / LOGS_IN_CHECKPOINT, work_dir)
            fn(config, report=report, resume_from=resume_dir, **extra)
    except Exception as exc:
        if is_deterministic(exc):
            raise DeterministicTrialError(f"{type(exc).__name__}: {exc}") from exc
        raise
