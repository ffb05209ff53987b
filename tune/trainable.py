"""The function Ray Tune runs for one trial: resolve the trainer config, train, report every evaluation.

The trainer (`cmda.train.run`) never imports Ray; this module is the only bridge. It turns the trainer's
`report(metrics, checkpoint_dir)` callback into `tune.report(..., checkpoint=...)` so that Ray persists
every evaluation checkpoint, and it hands the checkpoint Ray restores (`tune.get_checkpoint()`) back
to the trainer as `resume_from`, so a retried trial continues its iteration count instead of restarting.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from tune.placement import place_trial
from tune.trial_files import TrialFiles

TrainFn = Callable[..., Any]
RESOLVED_CONFIG_NAME = "resolved_config.yaml"


def load_base_config(path: str | Path) -> dict[str, Any]:
    """The trainer config a sweep builds on, as a plain dict (the trainer accepts dicts in that shape)."""
    raw = yaml.safe_load(Path(path).read_text())
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a trainer config must be a mapping, got {type(raw).__name__}")
    return raw


def resolve_trial_config(params: Mapping[str, Any], work_dir: str | Path | None = None,
                         name: str | None = None) -> dict[str, Any]:
    """Base config + sweep overrides + this trial's ablation cell and seed (in that order of precedence)."""
    from cmda.config import apply_overrides

    ablation = params["ablation"]
    trial: dict[str, Any] = {
        "uda.feature_loss.variant": ablation["variant"],
        "uda.feature_loss.weight": ablation.get("lambda"),
        "uda.feature_loss.lambdas": dict(ablation.get("lambdas") or {}),
        "seed": int(params["seed"]),
    }
    if work_dir is not None:
        trial["train.work_dir"] = str(work_dir)
    if name is not None:
        trial["name"] = name
    config = apply_overrides(load_base_config(params["base_config"]), dict(params.get("overrides") or {}))
    return apply_overrides(config, trial)


def write_yaml_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write YAML through a temp file in the same folder so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            yaml.safe_dump(dict(data), handle, sort_keys=False)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; these are ordinary result files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _trial_cpus(context: Any) -> int:
    """CPU count Ray reserved for this trial (torch would otherwise grab every core of the node)."""
    try:
        cpus = context.get_trial_resources().required_resources.get("CPU", 1)
    except Exception:  # noqa: BLE001 - resources are informative; one thread is a safe floor
        cpus = 1
    return max(1, int(cpus))


def limit_threads(cpus: int) -> None:
    """Give torch the trial's CPU count (it would otherwise use every core of the node).

    Through the OpenMP/MKL variables when torch is not imported yet: torch reads them when it loads, and the
    trial does not pay for importing torch before the trainer does (seconds per trial; benchmarks/README).
    """
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(cpus)
        return
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(cpus)


def _trial_gpus(context: Any) -> float:
    """GPUs Ray reserved for this trial (fractions allowed)."""
    try:
        return float(context.get_trial_resources().required_resources.get("GPU", 0))
    except Exception:  # noqa: BLE001 - no resource info: the assignment itself still decides the device
        return 0.0


def trial_file_map(trial_dir: Path, work_dir: Path) -> dict[str, Path]:
    """Name in the trial's storage folder -> local file or folder, for every small file a trial keeps."""
    return {RESOLVED_CONFIG_NAME: trial_dir / RESOLVED_CONFIG_NAME, "log.csv": work_dir / "log.csv",
            "tensorboard": work_dir / "tensorboard"}


def default_train_fn() -> TrainFn:
    """The real trainer, imported inside the worker so the driver does not pay for torch models."""
    from cmda.train import run

    return run


def make_trainable(train_fn: TrainFn | None = None) -> Callable[[dict[str, Any]], None]:
    """A Ray function trainable around `train_fn(config, report=..., resume_from=...)`.

    The default is cmda.train.run; tests pass their own small function that follows the same contract.
    """

    def cmda_trial(params: dict[str, Any]) -> None:
        from ray import tune

        # One INFO line per persisted checkpoint would bury the progress table in the driver's terminal.
        logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
        context = tune.get_context()
        trial_dir = Path(context.get_trial_dir())
        work_dir = trial_dir / "work"
        config = resolve_trial_config(params, work_dir=work_dir, name=context.get_trial_name())
        # GPU placement (tune.placement): see only Ray's GPUs, and name the device that follows from them.
        placement, device = place_trial(config.get("train", {}).get("device", "auto"), _trial_gpus(context))
        config.setdefault("train", {})["device"] = device
        write_yaml_atomic(trial_dir / RESOLVED_CONFIG_NAME, config)
        # Small files reach storage from any node (tune.trial_files), not only from the driver's.
        files = TrialFiles.for_current_trial(trial_file_map(trial_dir, work_dir))
        files.upload()  # the resolved config, even if the trial fails before its first report
        limit_threads(_trial_cpus(context))
        placement.limit_memory(device)

        def report(metrics: Mapping[str, float | int], checkpoint_dir: str | None) -> None:
            clean = {k: (v if isinstance(v, (int, float)) else float(v)) for k, v in metrics.items()}
            files.upload()
            if checkpoint_dir is None:
                tune.report(clean)
                return
            write_yaml_atomic(Path(checkpoint_dir) / RESOLVED_CONFIG_NAME, config)
            tune.report(clean, checkpoint=tune.Checkpoint.from_directory(checkpoint_dir))

        fn = train_fn if train_fn is not None else default_train_fn()
        checkpoint = tune.get_checkpoint()
        try:
            if checkpoint is None:
                fn(config, report=report, resume_from=None)
                return
            files.restore()  # a retry on another node: continue the log from storage
            # A private copy: the trainer may read it lazily, and Ray's copy must stay untouched.
            with tempfile.TemporaryDirectory(prefix="resume_", dir=trial_dir) as resume_dir:
                checkpoint.to_directory(resume_dir)
                fn(config, report=report, resume_from=resume_dir)
        finally:
            try:
                files.upload()  # what the trainer logged after its last report
            except Exception as error:  # noqa: BLE001 - never hide the trial's own exception behind this one
                logging.getLogger(__name__).warning("could not copy the trial's files to storage: %s", error)

    return cmda_trial
