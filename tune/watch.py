"""What the live table says while a sweep runs: how far (trials done, running, pending, errored out of all
N), how long (an ETA from the measured seconds per iteration and the slots in use), what the rungs say (each
configuration's mean at its last completed rung) and where each running trial is between evaluations (its
heartbeat). Plain data, no Ray: `tune.live_table` feeds it Ray's trials and prints it.
See docs/ARCHITECTURE.md (tune).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tune.configuration import Configuration

DONE, RUNNING, PENDING, ERRORED = "TERMINATED", "RUNNING", "PENDING", "ERROR"


@dataclass
class TrialView:
    """One trial as the table knows it: its evaluations (iteration -> metric), its last report's wall time
    and iteration, and the iteration of its latest heartbeat."""

    trial_id: str
    configuration: Configuration
    seed: int
    state: str = PENDING
    max_iters: int | None = None
    evaluations: dict[int, float] = field(default_factory=dict)
    reported_iteration: int = 0
    time_total_s: float | None = None
    heartbeat: int | None = None
    heartbeat_at: float | None = None

    @property
    def iteration(self) -> int:
        """The furthest iteration known: the last report, or a later heartbeat."""
        return max(self.reported_iteration, self.heartbeat or 0)


def duration(seconds: float) -> str:
    """"2h05m", "7m30s", "45s"."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


@dataclass
class Watch:
    """The sweep's fixed facts: N trials, the metric, the rungs (decision iterations; the evaluations when
    there is no early stopping) and the expected share of the full budget a trial runs (tune.plan).

    A `decide:` sweep adds fresh seeds once its early phase is over: N is then the initial trials, `upper`
    the most it may create, and N grows with the trials seen."""

    total: int
    metric: str
    rungs: Sequence[int] = ()
    max_iters: int | None = None
    expected_share: float = 1.0
    peak_running: int = 0
    upper: int | None = None

    def known(self, trials: Sequence[TrialView]) -> int:
        """N: the trials the sweep will run as far as known now (fresh seeds count once created)."""
        return max(self.total, len(trials))

    def counts(self, trials: Sequence[TrialView]) -> dict[str, int]:
        """done, running, errored, and pending = every other of the N (not yet created included)."""
        states = [t.state for t in trials]
        out = {"done": states.count(DONE), "running": states.count(RUNNING), "errored": states.count(ERRORED)}
        out["pending"] = max(self.known(trials) - sum(out.values()), 0)
        return out

    @staticmethod
    def seconds_per_iteration(trials: Iterable[TrialView]) -> float | None:
        """Wall seconds per trainer iteration (evaluations included) over every trial that has reported."""
        timed = [(t.time_total_s, t.reported_iteration) for t in trials
                 if t.time_total_s is not None and t.reported_iteration > 0]
        iterations = sum(i for _, i in timed)
        return sum(s for s, _ in timed) / iterations if iterations else None

    def eta_s(self, trials: Sequence[TrialView]) -> float | None:
        """Seconds to the end: the iterations still to run (running trials to their budget, pending ones
        a whole budget, both times the share the scheduler is expected to let run), times the seconds per
        iteration, over the slots (the most trials seen running at once)."""
        per_iteration = self.seconds_per_iteration(trials)
        counts = self.counts(trials)
        self.peak_running = max(self.peak_running, counts["running"])
        if per_iteration is None or self.max_iters is None:
            return None
        running = sum(max((t.max_iters or self.max_iters) - t.iteration, 0) for t in trials
                      if t.state == RUNNING)
        remaining = (running + counts["pending"] * self.max_iters) * self.expected_share
        return remaining * per_iteration / max(self.peak_running, 1)

    def rung_means(self, trials: Sequence[TrialView]) -> list[tuple[Configuration, int, float, int]]:
        """(configuration, rung, mean over its seeds, seeds) at each configuration's last completed rung:
        the latest rung some seed evaluated at that none of its unfinished seeds is still short of."""
        groups: dict[str, list[TrialView]] = {}
        for trial in trials:
            groups.setdefault(trial.configuration.key, []).append(trial)
        out = []
        for group in groups.values():
            rungs = self.rungs or sorted({i for t in group for i in t.evaluations})
            waiting = [t for t in group if t.state in (RUNNING, PENDING)]
            for rung in sorted(rungs, reverse=True):
                values = [t.evaluations[rung] for t in group if rung in t.evaluations]
                if values and all(rung in t.evaluations for t in waiting):
                    out.append((group[0].configuration, rung, sum(values) / len(values), len(values)))
                    break
        return out

    def headline(self, trials: Sequence[TrialView]) -> str:
        counts = self.counts(trials)
        known = self.known(trials)
        more = f" (fresh seeds: up to {self.upper})" if self.upper is not None and self.upper > known else ""
        text = (f"{counts['done']} of {known}{more} done, {counts['running']} running, {counts['pending']} "
                f"pending, {counts['errored']} errored")
        eta = self.eta_s(trials)
        per_iteration = self.seconds_per_iteration(trials)
        if eta is not None and per_iteration is not None:
            text += (f" | {per_iteration:.3g} s/iter, {max(self.peak_running, 1)} slot(s), "
                     f"ETA {duration(eta)}")
        return text

    def lines(self, trials: Sequence[TrialView], now: float | None = None) -> list[str]:
        """The whole block: headline, one line per configuration with a rung mean, one per running trial."""
        now = time.time() if now is None else now
        lines = [f"[{time.strftime('%H:%M:%S', time.localtime(now))}] {self.headline(trials)}"]
        means = self.rung_means(trials)
        if means:
            width = max(len(c.label) for c, *_ in means)
            for configuration, rung, mean, seeds in means:
                lines.append(f"  {configuration.label:<{width}}  {self.metric} {mean:.2f} at {rung} "
                             f"({seeds} seed{'s' if seeds != 1 else ''})")
        for trial in trials:
            if trial.state != RUNNING:
                continue
            where = f"iteration {trial.iteration}/{trial.max_iters or self.max_iters or '?'}"
            if trial.heartbeat_at is not None:
                where += f" (heartbeat {duration(now - trial.heartbeat_at)} ago)"
            last = max(trial.evaluations) if trial.evaluations else None
            seen = f", {self.metric} {trial.evaluations[last]:.2f} at {last}" if last is not None else ""
            lines.append(f"  running: {trial.configuration.label}, seed {trial.seed}: {where}{seen}")
        return lines


def changed_lines(previous: Sequence[str], current: Sequence[str]) -> list[str]:
    """What a log (not a terminal) gets: the headline when anything but its clock and ETA changed, and each
    other line that is new. Numbers of the clock, the speed and the heartbeat age do not count as a change."""
    def steady(line: str) -> str:
        line = re.sub(r"^\[[\d:]+\] ", "", line)
        line = re.sub(r" \| .*$", "", line)
        return re.sub(r" \(heartbeat [^)]*\)", "", line)

    before = {steady(line) for line in previous}
    out = [line for line in current if steady(line) not in before]
    if out and current and current[0] not in out:
        out.insert(0, current[0])
    return out

