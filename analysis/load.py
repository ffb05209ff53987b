"""Experiment folders (local paths or URIs) -> pandas frames, through the one reader `tune.experiment`.

Three frames: `trials` (one row per trial, started or not), `history` (one row per evaluation report,
a retried trial's repeated iterations already reduced to their last report) and `train_log` (the trainer's
own per-iteration `log.csv` in the trial folder). Whatever Ray left behind (errored, running or pending
trials, a result file cut mid-line, a retry that repeated iterations) is loaded as far as it goes and listed
in `missing` with the reason; only a location without any trial is an error (`NothingToAnalyse`).
See docs/ARCHITECTURE.md (analysis).
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import pandas as pd

from analysis.cells import configuration_names, read_configuration
from analysis.setting import Setting, experiment_setting, merge_settings, read_resolved_config
from cmda.io import YAMLFileError
from tune.configuration import BASELINE_VARIANT, ITERATION, Configuration, report_iteration, trial_label
from tune.experiment import (
    ERROR,
    PAUSED,
    PENDING,
    RUNNING,
    SWEEP_FILE,
    Experiment,
    ExperimentError,
    TrialRecord,
    open_experiment,
    stopped_early,
)

PARAM_PREFIX = "param/"
"""Column prefix of each search-space key a configuration sets (`param/optim.lr`), beside `lambda/<term>`."""
TRAIN_LOG = "log.csv"
"""The trainer's log in the trial folder (tune.trainable publishes it there)."""


class NothingToAnalyse(ExperimentError):
    """The experiments hold no trial at all, so no report could show anything."""


@dataclass
class Loaded:
    """Everything the tables, figures and report are drawn from."""

    trials: pd.DataFrame
    history: pd.DataFrame
    train_log: pd.DataFrame
    setting: Setting
    locations: list[str]
    missing: list[str] = field(default_factory=list)
    documents: list[tuple[str, str]] = field(default_factory=list)
    """(title, text) of the files the report embeds: each sweep.yaml and one resolved trainer config."""
    decide: dict[str, Any] | None = None
    """The sweep's `decide:` section (of the first experiment that has one)."""
    reference_key: str | None = None
    """Configuration.key of the sweep's reference (`reference:`, default the baseline)."""
    initial_seeds: tuple[int, ...] = ()
    """The grid's seeds (those the early-stopping phase ran)."""
    recorded: dict[str, Any] | None = None
    """The latest record of the sweep's decisions (decisions.jsonl), None without one."""


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _history_rows(trial: str, record: TrialRecord) -> list[dict[str, Any]]:
    """One row per report with every numeric scalar (Ray's nested `config` and booleans left out)."""
    rows = []
    for result in record.results:
        iteration = report_iteration(result)
        if iteration is None:
            continue
        values = {k: float(v) for k, v in result.items()
                  if _number(v) is not None and not k.startswith("config") and k != ITERATION}
        rows.append({"trial": trial, "iteration": iteration, **values})
    return rows


def parse_train_log(text: str, where: str) -> tuple[pd.DataFrame, list[str]]:
    """The trainer's log.csv -> (one row per logged iteration, problems). A resumed run appends the
    iterations after its checkpoint again: the last row of each iteration wins, as in result.json."""
    try:
        frame = pd.read_csv(io.StringIO(text), on_bad_lines="skip")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as error:
        return pd.DataFrame(), [f"{where}: unreadable ({error}); no per-iteration loss curves"]
    if "iteration" not in frame.columns:
        return pd.DataFrame(), [f"{where}: no 'iteration' column; no per-iteration loss curves"]
    frame = frame.apply(pd.to_numeric, errors="coerce").dropna(subset=["iteration"])
    rows = len(frame)
    frame = frame.drop_duplicates(subset="iteration", keep="last").sort_values("iteration")
    problems = []
    if len(frame) < rows:
        problems.append(f"{where}: {rows - len(frame)} repeated iteration(s) from a resumed run; "
                        "the last row of each is used")
    frame["iteration"] = frame["iteration"].astype(int)
    return frame.reset_index(drop=True), problems


def _read_train_log(experiment: Experiment, record: TrialRecord) -> tuple[pd.DataFrame | None, list[str]]:
    if not record.started or not experiment.is_file(record.dirname, TRAIN_LOG):
        return None, []
    text = experiment.read_text(record.dirname, TRAIN_LOG)
    return parse_train_log(text, experiment.where(record.dirname, TRAIN_LOG))


def _why_missing(name: str, state: str, record: TrialRecord, max_iters: int | None) -> str | None:
    """One sentence on a trial that did not run to the end, or None when it did."""
    reached = record.iteration
    budget = f" of {max_iters}" if max_iters else ""
    if state == ERROR:
        where = f"at iteration {reached}" if reached is not None else "before its first report"
        failures = f" after {record.num_failures} failure(s)" if record.num_failures else ""
        what = record.error or "no error message"
        file = record.error_file or "no error.txt in the trial folder"
        return f"trial {name}: errored {where}{failures}: {what} ({file})"
    if not record.started:
        return f"trial {name}: {state.lower()}, not started yet (no trial folder)"
    if state in (RUNNING, PAUSED, PENDING):
        if reached is None:
            return f"trial {name}: {state.lower()}, no result yet"
        return f"trial {name}: still {state.lower()} at iteration {reached}{budget}"
    if reached is None:
        return f"trial {name}: {state.lower()} without reporting any result"
    return None


def _load_one(location: str, gpus: float, prefix: bool) -> dict[str, Any]:
    experiment = open_experiment(location)
    records = experiment.trials()
    missing: list[str] = []
    try:
        sweep = experiment.sweep()
    except (ExperimentError, YAMLFileError) as error:
        missing.append(f"{error}; the sweep's settings are taken from the trials")
        sweep = None
    if sweep is None and not missing:
        missing.append(f"{experiment.where(SWEEP_FILE)}: absent; the sweep's settings are taken from the "
                       "trials")
    resolved = read_resolved_config(experiment, records, BASELINE_VARIANT)
    setting = experiment_setting(experiment, sweep, resolved, records, gpus)
    name = PurePosixPath(experiment.location.rstrip("/")).name or experiment.location
    documents = []
    if sweep is not None:
        documents.append((f"Sweep file ({experiment.where(SWEEP_FILE)})", experiment.read_text(SWEEP_FILE)))
    if resolved is not None:
        documents.append((f"Trainer config as resolved for trial {resolved[0]} (other trials differ in "
                          "their ablation cell, seed, name and work_dir)", resolved[1]))
    trials, history, logs = [], [], []
    without_log = 0
    odd_params: dict[str, list[str]] = {}
    for record in records:
        trial = f"{name}/{record.dirname}" if prefix else record.dirname
        configuration, odd = read_configuration(record.params)
        state = record.status
        max_iters = record.max_iters or setting.max_iters
        iteration = record.iteration
        values = [(r, _number(r.get(setting.metric))) for r in record.results]
        values = [(r, v) for r, v in values if v is not None and not math.isnan(v)]
        sign = -1.0 if setting.mode == "min" else 1.0
        best = max(values, key=lambda rv: sign * rv[1]) if values else None
        final = values[-1][1] if values else None
        last_value = _number(record.last_result.get(setting.metric)) if record.results else None
        final_nan = bool(record.results) and (last_value is None or math.isnan(last_value))
        wall = _number(record.last_result.get("time_total_s"))
        trials.append({
            "experiment": name,
            "trial": trial,
            "trial_id": record.trial_id,
            "configuration": configuration,
            "seed": record.params.get("seed"),
            "backbone": record.params.get("backbone"),
            "state": state,
            "started": record.started,
            "iterations": iteration,
            "max_iters": max_iters,
            "stopped_early": stopped_early(state, iteration, max_iters) and not record.cut_last_line,
            "final_nan": final_nan,
            "cut_last_line": record.cut_last_line,
            "final": final,
            "best": best[1] if best else None,
            "best_iteration": report_iteration(best[0]) if best else None,
            "num_failures": record.num_failures,
            "error": record.error,
            "error_file": record.error_file,
            "wall_s": wall,
            "gpu_hours": wall * setting.gpus_per_trial / 3600 if wall is not None else None,
        })
        label = f"{record.dirname} ({trial_label(configuration, record.params.get('seed'))})"
        reason = _why_missing(label, state, record, max_iters)
        if reason:
            missing.append(reason)
        for problem in odd:
            odd_params.setdefault(problem, []).append(record.dirname)
        missing.extend(record.problems)
        history.extend(_history_rows(trial, record))
        log, problems = _read_train_log(experiment, record)
        missing.extend(problems)
        if log is not None and not log.empty:
            logs.append(log.assign(trial=trial))
        elif record.started and record.results:
            without_log += 1
    for problem, names in odd_params.items():
        which = names[0] if len(names) == 1 else f"{len(names)} trials ({names[0]}, ...)"
        missing.append(f"{which}: {problem}")
    if without_log:
        missing.append(f"{experiment.location}: {without_log} trial(s) have no trainer log (log.csv); "
                       "their loss curves come from the evaluation reports only")
    try:
        history_of_decisions = experiment.decisions()
    except ExperimentError as error:
        missing.append(f"{error}; the decisions are taken again from the trials")
        history_of_decisions = []
    return {"setting": setting, "trials": trials, "history": history, "logs": logs, "missing": missing,
            "documents": documents, "location": experiment.location, "sweep": sweep,
            "recorded": history_of_decisions[-1] if history_of_decisions else None}


def load(locations: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], gpus: float = 0.0) -> Loaded:
    """Load one or several experiments. `gpus` per trial is used where a sweep.yaml does not say (it turns
    wall time into GPU-hours). Raises ExperimentError for a location that is not an experiment and
    NothingToAnalyse when no experiment holds a single trial."""
    locations = [locations] if isinstance(locations, str | os.PathLike) else list(locations)
    parts = [_load_one(str(location), gpus, prefix=len(locations) > 1) for location in locations]
    if not any(part["trials"] for part in parts):
        where = ", ".join(part["location"] for part in parts)
        raise NothingToAnalyse(f"{where}: no trials (Ray has not started any); nothing to analyse")
    setting = merge_settings([(part["location"], part["setting"]) for part in parts])
    rows = [row for part in parts for row in part["trials"]]
    configurations = {row["configuration"].key: row["configuration"] for row in rows}
    names = configuration_names(configurations)
    terms = sorted({term for c in configurations.values() for term, _ in c.lambdas})
    keys = sorted({key for c in configurations.values() for key, _ in c.params})
    for row in rows:
        configuration: Configuration = row.pop("configuration")
        lambdas = dict(configuration.lambdas)
        row.update({"config": names[configuration.key], "config_key": configuration.key,
                    "variant": configuration.variant,
                    "lambda": configuration.lambda_label, "lambda_scale": configuration.lambda_scale,
                    "lambdas": json.dumps(lambdas, sort_keys=True)})
        row.update({f"lambda/{term}": lambdas.get(term) for term in terms})
        settings = json.loads(configuration.setting_key)
        row["setting"] = configuration.setting_key
        row.update({f"{PARAM_PREFIX}{key}": settings.get(key) for key in keys})
    trials = pd.DataFrame(rows)
    first = ["experiment", "trial", "config", "variant", "lambda", "lambda_scale", "lambdas", "seed"]
    trials = trials[first + [c for c in trials.columns if c not in first]]
    history = pd.DataFrame([row for part in parts for row in part["history"]])
    if history.empty:
        history = pd.DataFrame(columns=["trial", "iteration"])
    logs = [log for part in parts for log in part["logs"]]
    train_log = pd.concat(logs, ignore_index=True) if logs else pd.DataFrame(columns=["trial", "iteration"])
    keys = trials[["trial", "config", "variant", "lambda", "seed"]]
    history = history.merge(keys, on="trial", how="left")
    train_log = train_log.merge(keys, on="trial", how="left")
    missing = [note for part in parts for note in part["missing"]]
    started = trials[trials["iterations"].notna()].dropna(subset=["seed"])
    for (config, seed), group in started.groupby(["config", "seed"]):
        if len(group) > 1:
            missing.append(f"configuration {config}, seed {seed}: {len(group)} trials "
                           f"({', '.join(group['trial'])}); their mean is used")
    if not len(history):
        missing.insert(0, "no trial has reported a result yet: there is nothing to compare")
    sweeps = [part["sweep"] for part in parts if isinstance(part.get("sweep"), dict)]
    decide = next((dict(sw["decide"]) for sw in sweeps if isinstance(sw.get("decide"), dict)), None)
    return Loaded(trials=trials, history=history, train_log=train_log, setting=setting,
                  locations=[part["location"] for part in parts],
                  missing=list(setting.notes) + missing,
                  documents=[d for part in parts for d in part["documents"]],
                  decide=decide, reference_key=_reference_key(sweeps[0] if sweeps else None),
                  initial_seeds=_grid_seeds(sweeps[0] if sweeps else None),
                  recorded=next((part["recorded"] for part in parts if part.get("recorded")), None))


def _grid_seeds(sweep: dict[str, Any] | None) -> tuple[int, ...]:
    seeds = ((sweep or {}).get("search") or {}).get("grid", {}) or {}
    seeds = seeds.get("seeds", [0]) if isinstance(seeds, dict) else [0]
    return tuple(int(s) for s in seeds if isinstance(s, int))


def _reference_key(sweep: dict[str, Any] | None) -> str:
    """The key of the sweep's reference: `reference:` (a variant name or {variant, lambda_scale, lambdas}),
    default the baseline."""
    from tune.sweep import make_configuration

    entry = (sweep or {}).get("reference")
    if isinstance(entry, str):
        entry = {"variant": entry}
    if not isinstance(entry, dict) or "variant" not in entry:
        return Configuration(BASELINE_VARIANT).key
    try:
        return make_configuration(str(entry["variant"]), entry.get("lambda_scale"), entry.get("lambdas")).key
    except (KeyError, ValueError):
        return Configuration(BASELINE_VARIANT).key
