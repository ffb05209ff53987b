"""Sweep spec -> Ray Tune Tuner: construction, cluster checks, run and resume.

The experiment folder is Ray Tune's own on-disk format; we add `sweep.yaml` (a copy of the sweep file,
plus the resolved base config path) so that `resume` and `status` need nothing but the folder.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tune.experiment import Experiment, ExperimentError, normalize_location, open_experiment
from tune.paths import FILE, TrialPath, resolve_sweep_paths, sweep_paths
from tune.remote import check_paths_where_trials_run, is_client_address
from tune.status import TrialStatus, experiment_status, format_status  # noqa: F401 - re-exported
from tune.sweep import (
    GridSearch,
    OptunaSpec,
    SweepError,
    SweepSpec,
    common_params,
    grid_param_space,
    load_sweep,
    parse_sweep,
)
from tune.trainable import TrainFn, make_trainable, resolve_trial_config

SWEEP_COPY_NAME = "sweep.yaml"
# Trials resolve relative data paths against the driver's cwd: keep Ray from chdir-ing into trial folders.
TRIAL_ENV = {"RAY_CHDIR_TO_TRIAL_DIR": "0"}


class ClusterError(RuntimeError):
    """No cluster to connect to, or one that cannot host the sweep's trials."""


def trial_label(config: dict[str, Any]) -> str:
    """Readable trial name: variant, lambda and seed are what a person scans a table for."""
    ablation = config.get("ablation", {})
    if ablation.get("variant") == "none":
        return f"none_s{config.get('seed', 0)}"
    lam = ablation.get("lambda")
    lam_text = "default" if lam is None else f"{lam:g}"
    return f"{ablation.get('variant', 'trial')}_l{lam_text}_s{config.get('seed', 0)}"


def trial_name_creator(trial: Any) -> str:
    return f"{trial_label(trial.config)}_{trial.trial_id}"


def connect(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None) -> None:
    """Start a local Ray (address None) or join a running cluster ('auto', 'ray://host:10001', ...)."""
    import ray

    if ray.is_initialized():
        return
    runtime_env = {"env_vars": dict(TRIAL_ENV)}
    os.environ.update(TRIAL_ENV)
    if address is None:
        # "local": a Ray of our own, never a cluster that happens to run on this machine (Ray would join it)
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, runtime_env=runtime_env,
                 include_dashboard=False)
        return
    try:
        ray.init(address=address, runtime_env=runtime_env)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterError(
            f"could not connect to a Ray cluster at --address {address!r}: {exc}\n"
            "Start one first (`ray start --head`, `ray up configs/cluster/cluster.yaml`) or drop --address "
            "to run locally."
        ) from exc


def check_cluster_resources(spec: SweepSpec, resources: dict[str, float] | None = None) -> None:
    """Refuse a sweep whose trials can never be placed (e.g. GPUs asked on a CPU-only cluster)."""
    if resources is None:
        import ray

        resources = ray.cluster_resources()
    have_gpu = float(resources.get("GPU", 0.0))
    have_cpu = float(resources.get("CPU", 0.0))
    if spec.gpu > have_gpu:
        raise ClusterError(
            f"{spec.path}: field 'resources.gpu': each trial asks for {spec.gpu:g} GPU but the cluster has "
            f"{have_gpu:g}; set resources.gpu: 0 to train on CPU or connect to a GPU cluster (--address)"
        )
    if spec.cpu > have_cpu:
        raise ClusterError(
            f"{spec.path}: field 'resources.cpu': each trial asks for {spec.cpu:g} CPUs but the cluster "
            f"has {have_cpu:g}"
        )


def build_scheduler(spec: SweepSpec) -> Any:
    """Ray's (stopping) ASHA or our per-configuration ASHA on the `iteration` metric, or no scheduler."""
    if spec.scheduler.type == "none":
        return None
    s = spec.scheduler
    if s.type == "per_config_asha":
        from tune.schedulers import PerConfigASHA

        seeds = len(spec.search.seeds) if isinstance(spec.search, GridSearch) else 1
        return PerConfigASHA(time_attr=s.time_attr, grace_period=s.grace_period, max_t=s.max_t,
                             reduction_factor=s.reduction_factor, seeds_per_config=seeds)
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr=s.time_attr, max_t=s.max_t, grace_period=s.grace_period,
                         reduction_factor=s.reduction_factor)


@dataclass(frozen=True)
class OptunaSpace:
    """Define-by-run space: lambda is only sampled for variants that have one (the baseline has none).

    A module-level class rather than a closure: Ray saves the searcher with plain pickle.
    """

    opt: OptunaSpec
    common: dict[str, Any]

    def __call__(self, trial: Any) -> dict[str, Any]:
        variant = trial.suggest_categorical("optuna/variant", list(self.opt.variants))
        weight = None
        if variant in self.opt.ranges:
            rng = self.opt.ranges[variant]
            weight = trial.suggest_float(f"optuna/lambda_{variant}", rng.low, rng.high, log=True)
        ablation = {"variant": variant, "lambda": weight, "lambdas": dict(self.opt.terms.get(variant, {}))}
        return {"ablation": ablation, "seed": self.opt.trial_seed, **self.common}


def build_search(spec: SweepSpec) -> tuple[dict[str, Any], Any, int]:
    """(param_space, search_alg, num_samples) for the sweep's search section."""
    if isinstance(spec.search, GridSearch):
        return grid_param_space(spec), None, 1
    from ray.tune.search.optuna import OptunaSearch

    opt = spec.search
    search = OptunaSearch(space=OptunaSpace(opt, common_params(spec)), metric=spec.metric, mode=spec.mode,
                          seed=opt.seed)
    return {}, search, opt.num_samples


def build_callbacks(spec: SweepSpec) -> list[Any]:
    """W&B / MLflow through Ray's own integrations; imported only when the sweep enables them."""
    callbacks: list[Any] = []
    for name, options in spec.callbacks.items():
        if importlib.util.find_spec(name) is None:
            raise ImportError(
                f"{spec.path}: field 'callbacks.{name}': enabled but the '{name}' package is not installed "
                f"(pip install {name}), or remove callbacks.{name}"
            )
        if name == "wandb":
            from ray.air.integrations.wandb import WandbLoggerCallback

            callbacks.append(WandbLoggerCallback(**{"project": spec.name, **options}))
        elif name == "mlflow":
            from ray.air.integrations.mlflow import MLflowLoggerCallback

            callbacks.append(MLflowLoggerCallback(**{"experiment_name": spec.name, **options}))
    return callbacks


def resolve_storage(storage: str) -> str:
    """Local folders become absolute (Ray requires it); URIs (s3://, gs://, ...) pass through."""
    if "://" in storage:
        return storage
    return str(Path(storage).expanduser().resolve())


def with_trial_resources(spec: SweepSpec, train_fn: TrainFn | None) -> Any:
    from ray import tune

    resources = {"cpu": spec.cpu, "gpu": spec.gpu}
    return tune.with_resources(make_trainable(train_fn), resources)


def build_tuner(spec: SweepSpec, *, train_fn: TrainFn | None = None, extra_callbacks: Sequence[Any] = (),
                verbose: int = 1) -> Any:
    """The Tuner for a validated sweep (no Ray calls beyond object construction)."""
    from ray import tune

    # Ray warns on every forced snapshot when num_to_keep is small; with one report per evaluation that is
    # expected, and the warning only buries the progress table.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    param_space, search_alg, num_samples = build_search(spec)
    tune_config = tune.TuneConfig(
        metric=spec.metric, mode=spec.mode, scheduler=build_scheduler(spec), search_alg=search_alg,
        num_samples=num_samples, max_concurrent_trials=spec.max_concurrent_trials,
        trial_name_creator=trial_name_creator, trial_dirname_creator=trial_name_creator,
    )
    run_config = tune.RunConfig(
        name=spec.name, storage_path=resolve_storage(spec.storage_path), verbose=verbose,
        callbacks=[*build_callbacks(spec), *extra_callbacks],
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=spec.num_to_keep),
    )
    return tune.Tuner(with_trial_resources(spec, train_fn), param_space=param_space,
                      tune_config=tune_config, run_config=run_config)


def experiment_dir(spec: SweepSpec) -> str:
    """Where Ray writes this sweep (a local path or a URI)."""
    return resolve_storage(spec.storage_path).rstrip("/") + "/" + spec.name


def _save_sweep_copy(spec: SweepSpec) -> None:
    """Keep the sweep next to its results (a folder or a bucket) so `resume`/`status` need only the
    experiment location. The overrides are the settled ones (absolute data paths, tune.paths)."""
    raw = yaml.safe_load(spec.path.read_text())
    raw["base_config"] = str(spec.base_config)
    raw["storage_path"] = resolve_storage(spec.storage_path)
    raw["name"] = spec.name
    raw["overrides"] = dict(spec.overrides)
    Experiment(experiment_dir(spec)).write_text(yaml.safe_dump(raw, sort_keys=False), SWEEP_COPY_NAME)


def check_trainer_config(spec: SweepSpec) -> None:
    """Let the trainer's own config schema judge base config + overrides + each cell, before Ray starts.

    A typo in an override key (`train.max_iter`) would otherwise surface only inside every trial.
    """
    from cmda.config import config_from_dict

    if isinstance(spec.search, GridSearch):
        cells = [p.as_param() for p in spec.search.points]
        seed = spec.search.seeds[0]
    else:
        cells = [{"variant": v, "lambda": None, "lambdas": spec.search.terms.get(v, {})}
                 for v in spec.search.variants]
        seed = spec.search.trial_seed
    for cell in cells:
        params = {"ablation": cell, "seed": seed, **common_params(spec)}
        try:
            config_from_dict(resolve_trial_config(params))
        except Exception as exc:  # noqa: BLE001 - any rejection is reported with the file and the cell
            raise SweepError(
                f"{spec.path}: fields 'base_config'/'overrides' with variant {cell['variant']!r}: "
                f"the trainer rejects the resolved config: {exc}"
            ) from exc


def settle_paths(spec: SweepSpec, address: str | None) -> tuple[SweepSpec, list[TrialPath]]:
    """Data and weight paths as every node must see them (tune.paths), joined to the overrides; plus the
    list of paths the trials read (the base config included), for the check where trials run."""
    settled = resolve_sweep_paths(spec.base_config, spec.overrides, spec.path, path_map=spec.path_map,
                                  client=is_client_address(address))
    spec = dataclasses.replace(spec, overrides={**spec.overrides, **settled})
    base = TrialPath("base_config", str(spec.base_config), FILE, f"{spec.path}: field 'base_config'")
    return spec, [base, *sweep_paths(spec.base_config, spec.overrides, spec.path)]


def run_sweep(spec: SweepSpec, *, address: str | None = None, train_fn: TrainFn | None = None,
              extra_callbacks: Sequence[Any] = (), num_cpus: int | None = None, verbose: int = 1) -> Any:
    """Connect, check the cluster can host the trials, and run every trial. Returns Ray's ResultGrid.

    `train_fn` replaces cmda.train.run (tests); the trainer-config check only applies to the real trainer.
    """
    spec, paths = settle_paths(spec, address)
    if train_fn is None:
        check_trainer_config(spec)
    connect(address, num_cpus=num_cpus)
    check_cluster_resources(spec)
    for note in check_paths_where_trials_run(paths, cpu=spec.cpu, gpu=spec.gpu,
                                             client=is_client_address(address)):
        print(f"cmda-tune: note: {note}")
    tuner = build_tuner(spec, train_fn=train_fn, extra_callbacks=extra_callbacks, verbose=verbose)
    _save_sweep_copy(spec)
    return tuner.fit()


def load_experiment_sweep(path: str | Path, sweep_file: str | Path | None = None) -> SweepSpec:
    """The sweep an experiment (folder or URI) was started from: its saved copy, or an explicit file."""
    if sweep_file is not None:
        return load_sweep(sweep_file)
    experiment = open_experiment(path)
    raw = experiment.sweep()
    if raw is None:
        raise FileNotFoundError(
            f"{experiment.where(SWEEP_COPY_NAME)}: no sweep copy in the experiment; pass the original sweep "
            "file with --sweep"
        )
    return parse_sweep(raw, Path(experiment.where(SWEEP_COPY_NAME)))


def check_restorable_state(location: str) -> None:
    """Refuse to resume from an experiment state Ray cannot read.

    Ray 2.60 rewrites `experiment_state-*.json` in place while its background sync may be uploading the
    previous version, so a driver killed at that moment can leave the file empty or cut short in storage.
    `Tuner.restore` then does not fail: it silently starts a new experiment with one empty trial. The trials'
    own folders (results, checkpoints) are intact; only the experiment state is lost.
    """
    experiment = open_experiment(location)
    try:
        state = experiment.state()
    except ExperimentError as error:
        raise ExperimentError(
            f"{error}. Ray cannot resume from it (the driver died while Ray was saving it); the trials' "
            f"results and checkpoints are intact (`cmda-tune status {location}` reads them); to finish the "
            "study, run the sweep again under a new name (its trials start over)."
        ) from error
    if state is None:
        raise ExperimentError(f"{location}: no experiment_state-*.json yet; Ray has nothing to resume from")


def resume_sweep(path: str | Path, *, address: str | None = None, train_fn: TrainFn | None = None,
                 sweep_file: str | Path | None = None, num_cpus: int | None = None) -> Any:
    """Finish an interrupted sweep: unfinished and errored trials continue, finished ones are kept."""
    from ray import tune

    path_text = normalize_location(path)
    if not tune.Tuner.can_restore(path_text):
        raise FileNotFoundError(f"{path_text}: not a Ray Tune experiment folder (no tuner.pkl)")
    check_restorable_state(path_text)
    spec = load_experiment_sweep(path_text, sweep_file)
    connect(address, num_cpus=num_cpus)
    check_cluster_resources(spec)
    tuner = tune.Tuner.restore(path_text, trainable=with_trial_resources(spec, train_fn), resume_errored=True)
    return tuner.fit()
