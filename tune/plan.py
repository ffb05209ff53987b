"""`cmda-tune plan SWEEP.yaml`: what a sweep will run and cost, without starting Ray.

The trials in launch order (variant, per-term lambdas, search-space setting, seed), their count, the
iterations at which the scheduler decides (`tune.configuration.Ladder`, the scheduler's own rungs), the
trainer iterations and GPU-hours if every trial runs to the end and as expected under those rungs, and the
storage the kept checkpoints will take.

Expected compute under early stopping is the successive-halving ideal: every rung keeps the top
1/reduction_factor of what reaches it, and a stopped trial stops at its first evaluation at or after the rung.
Asynchronous ASHA lets the first arrivals at a rung continue, so a real sweep spends somewhat more
(`benchmarks/scheduler_simulation.py` measures it; figures in benchmarks/README.md).

Checkpoint size is computed from the model built on PyTorch's meta device (no memory, no weights): model and
EMA teacher weights plus AdamW's two moments, all fp32. With `--memory`, the GPU memory one training step
of the first trial needs (`cmda.memory`, measured on a real CPU step; on request because it takes seconds).
The JSON contract: docs/ARCHITECTURE.md (tune).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from tune.configuration import Configuration, first_evaluation
from tune.sweep import GridSearch, SweepError, SweepSpec

SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class Plan:
    sweep: str
    search: str
    scheduler: str
    rungs: list[int]
    """The iterations at which the scheduler decides, one per rung (two rungs between two evaluations are
    decided at the same one); empty without early stopping."""
    trials: list[dict[str, Any]]
    count: int
    configurations: int | None
    seeds: list[int]
    max_iters: int
    iterations_to_end: int
    iterations_expected: int
    expected_share: float
    sec_per_iter: float | None
    gpus_per_trial: float
    gpu_hours_to_end: float | None
    gpu_hours_expected: float | None
    trial_hours_to_end: float | None
    trial_hours_expected: float | None
    checkpoint_bytes: int
    kept_checkpoints_per_trial: int
    checkpoint_storage_bytes: int
    space: dict[str, Any] = field(default_factory=dict)
    """The search space over other trainer keys, as the sweep file gives it ({} without one)."""
    memory: dict[str, Any] | None = None
    """`cmda.memory.memory_json` of the first trial (with --memory), else None."""
    gpus: int | None = None
    """The cluster's GPUs the plan was made for (`--gpus`), None when not given."""
    concurrency: int | None = None
    """Trials at once: the sweep's max_concurrent_trials, or for `auto` what `gpus` hold (tune.capacity);
    None when unbounded or unknown (`auto` without `--gpus`)."""
    wall_hours_to_end: float | None = None
    wall_hours_expected: float | None = None
    """Wall-clock hours at that concurrency: whole waves of trials to the end; the expected trial-hours spread
    over the concurrent slots (ideal packing)."""
    warnings: list[str] = field(default_factory=list)
    """What `sweep` would refuse or warn about (missing data, unwritable storage, mis-aligned rungs)."""
    slots: dict[str, Any] = field(default_factory=dict)
    """The slot model: `max_concurrent_trials` (None: as many as the cluster fits), `seeds_per_configuration`,
    `configurations_at_once` (a configuration's seeds start together, only when all fit), `seeds_together`
    (the slots hold a configuration's seeds; without, its first seeds run ahead unjudged), `waits_at_rungs`
    (a seed waits at a rung until its siblings reach it)."""
    decide: dict[str, Any] | None = None
    """A `decide:` sweep's design (tune.decision.plan_decision at `seed_sd`), None otherwise."""
    labels: list[str] = field(default_factory=list)
    """Each trial's configuration label, for the text table (not part of the JSON)."""
    space_lines: list[str] = field(default_factory=list)
    """The space as text, one line per key (not part of the JSON)."""

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in ("labels", "space_lines")}


def launch_order(spec: SweepSpec) -> list[dict[str, Any]]:
    """The grid's trials as {"variant", "lambdas", "params", "seed"} in the order they start
    (configuration-major); `params` are the dotted trainer keys the search space sets ({} without one).
    An Optuna sweep's configurations are sampled at run time: none are listed."""
    if not isinstance(spec.search, GridSearch):
        return []
    return [
        {"variant": p["ablation"]["variant"], "lambdas": dict(p["ablation"]["lambdas"]),
         "params": dict(p["ablation"].get("params") or {}), "seed": p["seed"]}
        for p in spec.grid_trials()
    ]


def decision_points(spec: SweepSpec) -> list[int]:
    """The iterations at which the sweep's scheduler decides (empty without early stopping)."""
    ladder = spec.scheduler.ladder
    return [] if ladder is None else list(ladder.decision_points(spec.eval_interval, spec.max_iters))


def stop_points(spec: SweepSpec) -> list[int]:
    """Iterations at which a trial can end: where the scheduler decides, and the end (max_t)."""
    if spec.scheduler.ladder is None:
        return [spec.max_iters]
    end = first_evaluation(spec.scheduler.max_t, spec.eval_interval, spec.max_iters)
    return [*decision_points(spec), end]


def expected_iterations_per_trial(spec: SweepSpec) -> float:
    """Iterations of an average trial when rung k keeps a 1/reduction_factor share of what reaches it."""
    points = stop_points(spec)
    if len(points) == 1:
        return float(points[0])
    keep = 1.0 / spec.scheduler.reduction_factor
    total, reached, previous = 0.0, 1.0, 0
    for point in points:
        total += reached * (point - previous)
        previous = point
        reached *= keep
    return total


def checkpoint_bytes(config: dict[str, Any]) -> int:
    """Size of one trainer checkpoint (model + EMA teacher + AdamW moments, fp32) from the model's shapes."""
    import torch

    from cmda.config import config_from_dict
    from cmda.models.segmentor import build_model
    from cmda.overrides import apply_overrides

    cfg = config_from_dict(apply_overrides(config, {"model.pretrained": "none"}))
    with torch.device("meta"):
        model = build_model(cfg)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    return 4 * params + 2 * buffers


def memory_budget(config: dict[str, Any]) -> dict[str, Any]:
    """The memory one training step of `config` needs (`cmda.memory`; a real CPU step, seconds)."""
    from cmda.config import config_from_dict
    from cmda.memory import memory_json, profile_step

    return memory_json(profile_step(config_from_dict(config)))


def measure_seconds_per_iter(config: dict[str, Any], steps: int = 3, threads: int = 1) -> float:
    """Median seconds of one training step (source pass, teacher, ClassMix, mixed pass, both backwards and
    the optimizer) of the sweep's first trial on this machine's device, on one real batch held fixed, so
    that data loading is not included; one warm-up step first. torch uses `threads` CPU threads, as a
    trial does with its `resources.cpu`."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        return _median_step_seconds(config, steps)
    finally:
        torch.set_num_threads(previous)


def _median_step_seconds(config: dict[str, Any], steps: int) -> float:
    """The trainer's own pieces (cmda.train: datasets, session, loader, one `train_step`), so that the timed
    step is exactly what a trial runs; ImageNet weights are not loaded (they change nothing of the speed)."""
    import torch

    from cmda.config import config_from_dict
    from cmda.overrides import apply_overrides
    from cmda.train import (
        autocast_factory,
        build_datasets,
        build_session,
        build_train_loader,
        iteration_batches,
        resolve_device,
        train_step,
    )

    starting = {"model.pretrained": "none", "model.init_from": "none", "data.num_workers": 0}
    cfg = config_from_dict(apply_overrides(config, starting))
    device = resolve_device(cfg.train.device)
    session = build_session(cfg, device, None)
    autocast = autocast_factory(device, cfg.train.amp)
    loader = build_train_loader(cfg, build_datasets(cfg).paired, 0)
    batch = next(iteration_batches(loader, cfg.train.accumulate))  # every micro-batch of one iteration
    durations = []
    session.model.train()
    for _ in range(steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        train_step(session, batch, device, autocast)
        if device.type == "cuda":
            torch.cuda.synchronize()
        durations.append(time.perf_counter() - start)
    timed = sorted(durations[1:])
    return timed[len(timed) // 2]


def slot_model(spec: SweepSpec, slots: int | None) -> dict[str, Any]:
    """How the trials share `slots` (the concurrency: plan_concurrency; None: as many as the cluster fits,
    which `max_concurrent_trials: auto` rounds to whole configurations)."""
    seeds = len(spec.seeds)
    return {"max_concurrent_trials": slots, "seeds_per_configuration": seeds,
            "configurations_at_once": None if slots is None else max(slots // seeds, 1),
            "seeds_together": slots is None or slots >= seeds, "waits_at_rungs": spec.waits_at_rungs}


@dataclass(frozen=True)
class MeasuredSD:
    """A paired seed-to-seed SD measured in an earlier experiment (`plan --from`)."""

    sd: float
    dof: int
    source: str  # the experiment's location

    def interval(self) -> tuple[float, float]:
        """The 95% interval of the SD from its degrees of freedom (chi-square)."""
        from scipy import stats

        return (self.sd * math.sqrt(self.dof / stats.chi2.ppf(0.975, self.dof)),
                self.sd * math.sqrt(self.dof / stats.chi2.ppf(0.025, self.dof)))


def seed_sd_from(location: str, metric: str) -> MeasuredSD:
    """The paired seed-to-seed SD of `metric` in an earlier experiment: every configuration's full-budget
    values (stopped and failed seeds left out), the seed effect shared by all configurations removed as the
    decision removes it (tune.decision.paired_seed_sd). Its sweep.yaml says which metric and budget."""
    from pathlib import Path

    from tune.best import experiment_runs
    from tune.decision import COMPLETE, paired_seed_sd
    from tune.experiment import SWEEP_FILE, ExperimentError, open_experiment
    from tune.sweep import parse_sweep

    experiment = open_experiment(location)
    raw = experiment.sweep()
    if raw is None:
        raise ExperimentError(f"--from {experiment.location}: no {SWEEP_FILE} in it, so its metric and "
                              "budget are unknown")
    earlier = parse_sweep(raw, Path(experiment.where(SWEEP_FILE)))
    if earlier.metric != metric:
        raise SweepError(f"--from {experiment.location}: it measured {earlier.metric}, this sweep decides on "
                         f"{metric}")
    values: dict[str, dict[int, float]] = {}
    for run in experiment_runs(experiment.trials(), earlier.metric, earlier.max_iters).values():
        if run.state == COMPLETE and math.isfinite(run.value):
            values.setdefault(str(run.config), {})[run.seed] = run.value
    sd, dof = paired_seed_sd(values)
    if dof == 0 or not sd > 0:
        raise SweepError(f"--from {experiment.location}: too few seeds reached the full budget to measure a "
                         "seed-to-seed SD (it needs two configurations with at least two common seeds); "
                         "give --seed-sd instead")
    return MeasuredSD(sd, dof, experiment.location)


def decide_design(spec: SweepSpec, seed_sd: float | None,
                  measured: MeasuredSD | None = None) -> dict[str, Any] | None:
    """plan's `decide` object: the decision design at a seed-to-seed SD (the paired SD of one seed's
    configuration-minus-reference difference): `measured` in an earlier experiment (its range: the 95%
    interval from its degrees of freedom), else `seed_sd` as stated (range x0.6 to x1.4), else the
    effect itself, said so; with the survivors the early phase is expected to leave (rung by rung,
    1/reduction_factor each) and the expected compute capped by decide.budget."""
    from tune.decision import plan_decision

    if spec.decide is None or not isinstance(spec.search, GridSearch):
        return None
    assumed = seed_sd is None and measured is None
    sd = float(measured.sd if measured is not None else spec.decide.effect if seed_sd is None else seed_sd)
    if not (math.isfinite(sd) and sd > 0):
        raise SweepError(f"--seed-sd: expected a number > 0, got {seed_sd}")
    sd_range = measured.interval() if measured is not None else (sd * 0.6, sd * 1.4)
    configurations = len(spec.search.configurations)
    seeds = len(spec.seeds)
    rungs = len(decision_points(spec))
    survivors = max(1, int(round((configurations - 1) / spec.scheduler.reduction_factor ** rungs)))
    early = configurations * seeds * expected_iterations_per_trial(spec)
    design = plan_decision(spec.decide, initial=seeds, configurations=configurations, survivors=survivors,
                           max_iters=spec.max_iters, early_iterations=early, sd=sd, sd_range=sd_range)
    grid = configurations * seeds * spec.max_iters
    cap = spec.decide.budget * grid
    out = design.as_json()
    out.update(budget=spec.decide.budget, fit=spec.decide.fit, seed_sd_assumed=assumed,
               seed_sd_from=None if measured is None else measured.source,
               seed_sd_dof=None if measured is None else measured.dof,
               grid_iterations=grid, expected_iterations=round(min(design.expected_iterations, cap)),
               worst_iterations=round(min(design.worst_iterations, max(cap, early))),
               expected_share=round(min(design.expected_iterations, cap) / grid, 3),
               early_iterations=round(early))
    return out


def plan_concurrency(spec: SweepSpec, gpus: int | None) -> int | None:
    """Trials at once on a cluster of `gpus` GPUs (tune.capacity), or the sweep's own number."""
    from tune.capacity import AUTO, resolve, slots_from_gpus

    setting = spec.max_concurrent_trials
    if gpus is None:
        return setting if isinstance(setting, int) else None
    resolved = resolve(AUTO, cpu=spec.cpu, gpu=spec.gpu, seeds=len(spec.seeds), cluster_gpus=gpus).trials
    if spec.gpu == 0:  # a CPU sweep: the GPUs do not bound it
        resolved = None
    if isinstance(setting, int):
        return setting if resolved is None else min(setting, max(1, slots_from_gpus(gpus, spec.gpu)))
    return resolved


def make_plan(
    spec: SweepSpec,
    sec_per_iter: float | None = None,
    ckpt_bytes: int | None = None,
    memory: dict[str, Any] | None = None,
    gpus: int | None = None,
    warnings: list[str] | None = None,
    seed_sd: float | None = None,
    measured_sd: MeasuredSD | None = None,
) -> Plan:
    from tune.preflight import representative_trials
    from tune.trainable import resolve_trial_config

    count = spec.search.num_trials
    per_trial = expected_iterations_per_trial(spec)
    to_end, expected = count * spec.max_iters, int(round(count * per_trial))
    if ckpt_bytes is None:
        ckpt_bytes = checkpoint_bytes(resolve_trial_config(representative_trials(spec)[0]))
    evaluations = math.ceil(spec.max_iters / spec.eval_interval)
    kept = min(spec.num_to_keep + 1, evaluations)

    def hours(iterations: float, gpus: float) -> float | None:
        return None if sec_per_iter is None else iterations * sec_per_iter * gpus / SECONDS_PER_HOUR

    concurrency = plan_concurrency(spec, gpus)
    wall_to_end = wall_expected = None
    if concurrency is not None and sec_per_iter is not None:
        wall_to_end = hours(math.ceil(count / concurrency) * spec.max_iters, 1.0)
        wall_expected = hours(expected / min(concurrency, count), 1.0)

    return Plan(
        sweep=str(spec.path),
        search="grid" if isinstance(spec.search, GridSearch) else "optuna",
        scheduler=spec.scheduler.type,
        rungs=decision_points(spec),
        trials=launch_order(spec),
        count=count,
        configurations=len(spec.search.configurations) if isinstance(spec.search, GridSearch) else None,
        seeds=list(spec.seeds),
        max_iters=spec.max_iters,
        iterations_to_end=to_end,
        iterations_expected=expected,
        expected_share=per_trial / spec.max_iters,
        sec_per_iter=sec_per_iter,
        gpus_per_trial=spec.gpu,
        gpu_hours_to_end=hours(to_end, spec.gpu),
        gpu_hours_expected=hours(expected, spec.gpu),
        trial_hours_to_end=hours(to_end, 1.0),
        trial_hours_expected=hours(expected, 1.0),
        checkpoint_bytes=int(ckpt_bytes),
        kept_checkpoints_per_trial=kept,
        checkpoint_storage_bytes=int(count * kept * ckpt_bytes),
        space=spec.search.space.as_json(),
        space_lines=spec.search.space.describe(),
        memory=memory,
        gpus=gpus,
        concurrency=concurrency,
        wall_hours_to_end=wall_to_end,
        wall_hours_expected=wall_expected,
        warnings=list(warnings or []),
        slots=slot_model(spec, concurrency),
        decide=decide_design(spec, seed_sd, measured_sd),
        labels=[Configuration.from_params(p).label for p in spec.grid_trials()]
        if isinstance(spec.search, GridSearch) else [],
    )


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"


def format_plan(plan: Plan) -> str:
    lines = [f"sweep: {plan.sweep}  ({plan.search}, scheduler: {plan.scheduler})"]
    if plan.trials:
        width = max(len(label) for label in plan.labels)
        lines.append(f"{'#':>4}  {'configuration':<{width}}  seed  lambdas")
        for i, (t, label) in enumerate(zip(plan.trials, plan.labels), 1):
            lambdas = Configuration(t["variant"], t["lambdas"]).lambda_label or "-"  # the resolved values
            lines.append(f"{i:>4}  {label:<{width}}  {t['seed']:>4}  {lambdas}")
    else:
        lines.append(f"configurations are sampled at run time; each runs on seeds {plan.seeds}")
    if plan.space:
        lines.extend(f"search space: {line}" for line in plan.space_lines)
    lines.append(
        f"trials: {plan.count}"
        + (
            f" ({plan.configurations} configurations x {len(plan.seeds)} seeds)"
            if plan.configurations
            else " (at most)"
        )
    )
    lines.append(f"iterations to the end: {plan.iterations_to_end:,} ({plan.max_iters:,} per trial)")
    if plan.rungs:
        lines.append(f"the scheduler decides at iterations {', '.join(f'{r:,}' for r in plan.rungs)}")
    lines.append(
        f"expected under the scheduler's rungs: {plan.iterations_expected:,} "
        f"({plan.expected_share:.0%} of the full budget)"
    )
    if plan.sec_per_iter is None:
        lines.append("GPU-hours: give --sec-per-iter S or --measure")
    else:
        lines.append(
            f"seconds per iteration: {plan.sec_per_iter:.3g}; trial-hours to the end "
            f"{plan.trial_hours_to_end:,.1f}, expected {plan.trial_hours_expected:,.1f}; GPU-hours "
            f"({plan.gpus_per_trial:g} GPU per trial) to the end {plan.gpu_hours_to_end:,.1f}, "
            f"expected {plan.gpu_hours_expected:,.1f}"
        )
    if plan.concurrency is not None:
        on = f" on {plan.gpus} GPUs" if plan.gpus is not None else ""
        wall = ("" if plan.wall_hours_to_end is None else
                f"; wall-clock hours to the end {plan.wall_hours_to_end:,.1f}, expected "
                f"{plan.wall_hours_expected:,.1f}")
        lines.append(f"concurrency: {plan.concurrency} trials at once{on}{wall}")
    elif plan.gpus is None:
        lines.append("concurrency: as many trials as the cluster holds (give --gpus N for the number)")
    slots = plan.slots
    if slots:
        limit = slots["max_concurrent_trials"]
        at_once = (f"{limit} slots: {slots['configurations_at_once']} configuration(s) at a time"
                   if limit is not None else "slots: as many trials as the cluster fits")
        seeds = slots["seeds_per_configuration"]
        if slots.get("seeds_together", True):
            lines.append(f"{at_once}; a configuration's {seeds} seeds start together"
                         + ("; a seed waits at a rung for its siblings" if slots["waits_at_rungs"] else ""))
        else:
            lines.append(f"{limit} slots for {seeds} seeds: a configuration's seeds cannot run together, so "
                         "the first ones train past each rung before the last is judged there (more compute "
                         f"than expected below; give max_concurrent_trials >= {seeds})")
    if plan.decide is not None:
        d = plan.decide
        def hours(iterations: float) -> str:
            if plan.sec_per_iter is None:
                return ""
            gpu_hours = iterations * plan.sec_per_iter * plan.gpus_per_trial / SECONDS_PER_HOUR
            return f", {gpu_hours:,.1f} GPU-hours"

        sd_note = (" (assumed equal to the effect: give --seed-sd or --from)" if d["seed_sd_assumed"] else
                   f" (measured in {d['seed_sd_from']}, {d['seed_sd_dof']} degrees of freedom)"
                   if d.get("seed_sd_from") else "")
        low, high = d["expected_power_range"]
        lines += [
            f"decide: effect {d['effect']:g}, power {d['power']:g}, alpha {d['alpha']:g}, max_seeds "
            f"{d['max_seeds']}, budget {d['budget']:g} of the fixed-seed grid ({d['grid_iterations']:,} "
            f"iterations), fit {d['fit']}",
            f"  paired seed-to-seed SD {d['seed_sd']:.3g}{sd_note}; about {d['survivors']} survivor(s) of "
            "the early phase get fresh seeds",
            f"  expected power to find +{d['effect']:g}: {d['expected_power']:.0%} ({high:.0%} to {low:.0%} "
            f"for SD {d['seed_sd_range'][0]:.2g} to {d['seed_sd_range'][1]:.2g})"
            + ("" if d["seeds_for_power"] is None else f"; max_seeds {d['seeds_for_power']} reaches "
               f"{d['power']:.0%}"),
            f"  seeds per survivor: expected {d['expected_seeds']:.1f}, worst case {d['max_seeds']} (the "
            f"reference too); iterations: expected {d['expected_iterations']:,} "
            f"({d['expected_share']:.0%} of the grid{hours(d['expected_iterations'])}), worst case "
            f"{d['worst_iterations']:,}"
            f"{hours(d['worst_iterations'])}",
        ]
    lines.append(
        f"kept checkpoints: up to {plan.kept_checkpoints_per_trial} per trial x "
        f"{_size(plan.checkpoint_bytes)} = {_size(plan.checkpoint_storage_bytes)} for {plan.count} trials"
    )
    if plan.memory is None:
        lines.append("GPU memory of a training step: give --memory")
    else:
        from cmda.memory import format_memory

        lines += format_memory(plan.memory)
    lines.extend(f"warning: {line}" for line in plan.warnings)
    return "\n".join(lines)
