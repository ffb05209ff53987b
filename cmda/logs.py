"""What a training run logs: `log.csv`, TensorBoard events, the means since the last row, the progress bar.

A run that resumes must not log twice what the interrupted run logged after its last checkpoint, and a
run that fails at once must leave no log behind; `MetricLog` owns both rules. The trainer's loop
(cmda/train.py) decides when to write; docs/ARCHITECTURE.md ("cmda.train") lists what is logged.
"""

from __future__ import annotations

import csv
import io
import logging
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from cmda.io import write_text_atomic

log = logging.getLogger(__name__)
LOG_FILE = "log.csv"
TENSORBOARD_DIR = "tensorboard"


class MetricLog:
    """CSV (one row per logged iteration: losses, and metrics where it evaluated) and TensorBoard logs.

    Opened at `start` (the iteration a run resumes from), rows and events after it are dropped: they were
    logged by the interrupted run after its last checkpoint and will be logged again. Nothing is created
    before the first row, so a run that fails at once leaves no log behind.
    """

    def __init__(self, work_dir: Path, tensorboard: bool, start: int = 0) -> None:
        self.path = work_dir / LOG_FILE
        self.tensorboard_dir = work_dir / TENSORBOARD_DIR
        self.tensorboard = tensorboard
        self.start = start
        self.writer = None
        self.fields: list[str] = []
        self.rows: list[dict[str, Any]] = []
        if self.path.is_file():
            with self.path.open(newline="") as handle:
                reader = csv.DictReader(handle)
                self.fields = list(reader.fieldnames or [])
                self.rows = [row for row in reader if int(float(row["iteration"])) <= start]
            self._rewrite()

    def _rewrite(self) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.fields)
        writer.writeheader()
        writer.writerows(self.rows)
        write_text_atomic(self.path, buffer.getvalue())

    def _tensorboard(self):
        if self.writer is None and self.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                # events at steps after `start` came from the interrupted run: purge them
                self.writer = SummaryWriter(str(self.tensorboard_dir), purge_step=self.start + 1)
            except Exception as error:  # tensorboard is optional; training must not depend on it
                log.info("TensorBoard logging off: %s", error)
                self.tensorboard = False
        return self.writer

    def write(self, iteration: int, values: dict[str, float]) -> None:
        """Append a row, or complete the last one when it has the same iteration (losses + metrics)."""
        row = {"iteration": iteration, **values}
        new_fields = [k for k in row if k not in self.fields]
        merge = bool(self.rows) and int(float(self.rows[-1]["iteration"])) == iteration
        if merge:
            self.rows[-1].update(row)
        else:
            self.rows.append(row)
        if merge or new_fields or not self.path.is_file():
            self.fields += new_fields
            self._rewrite()
        else:
            with self.path.open("a", newline="") as handle:
                csv.DictWriter(handle, fieldnames=self.fields).writerow(row)
        writer = self._tensorboard()
        if writer is not None:
            for key, value in values.items():
                writer.add_scalar(key, value, iteration)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Means:
    """Running sums of logged values, averaged and reset on demand (a log row, a report)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.count = 0

    def add(self, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.sums[key] += value
        self.count += 1

    def pop(self) -> dict[str, float]:
        means = {k: v / max(self.count, 1) for k, v in self.sums.items()}
        self.sums.clear()
        self.count = 0
        return means


def progress_bar(total: int, initial: int, enabled: bool):
    """A tqdm bar on a terminal only (a Ray trial's or a redirected log stays free of bar updates)."""
    from tqdm import tqdm

    return tqdm(
        total=total, initial=initial, disable=not (enabled and sys.stderr.isatty()), dynamic_ncols=True
    )
