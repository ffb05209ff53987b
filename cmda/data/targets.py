"""The target-domain registry: what the rest of the code may ask of a target dataset.

A target domain is one module in `cmda/data` (its Dataset and layout) plus one `TargetSpec` entry in
`TARGETS`. Nothing outside this registry and that module names a dataset: the trainer, the training step,
evaluation, `cmda test`, sweep validation, the scheduler's metric and the analysis read what they need
from the entry (DAFormer's "a dataset = one module + one registry entry + one config").

This module holds only plain data and imports nothing heavy, so `tune/` and `analysis/` can read it
without loading torch models.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cmda.data import CLASSES, DSEC_EXCLUDED_CLASS

SECOND_MODALITIES = ("events", "isr")
"""What the second backbone encodes on the target: event voxel grids, or the image's ISR."""


@dataclass(frozen=True)
class TargetSpec:
    """One target domain. `headline_metric` is what sweeps rank on by default and the analysis headlines;
    `metrics` maps every mIoU the evaluation reports to the trainIds it averages over."""

    name: str
    description: str
    second_modality: str
    """"events" (the second backbone sees event voxel grids) or "isr" (it sees the night image's ISR)."""
    headline_metric: str
    metrics: dict[str, tuple[int, ...]]
    """mIoU name -> trainIds averaged (the names are reported in percent, with `iou/<class>` and `acc`)."""
    train_split: str
    test_split: str
    modalities: frozenset[str] = field(default_factory=frozenset)
    """What a target sample provides beyond image (+ label on the test split): e.g. {"events"}."""

    def __post_init__(self) -> None:
        if self.second_modality not in SECOND_MODALITIES:
            raise ValueError(f"target {self.name!r}: second_modality must be one of {SECOND_MODALITIES}")
        if self.headline_metric not in self.metrics:
            raise ValueError(f"target {self.name!r}: headline metric {self.headline_metric!r} not in metrics")

    @property
    def metric_names(self) -> tuple[str, ...]:
        """Every scalar an evaluation of this target reports (what a scheduler may rank on)."""
        return (*self.metrics, "acc", *(f"iou/{c}" for c in CLASSES))


ALL_CLASSES = tuple(range(len(CLASSES)))

TARGETS: dict[str, TargetSpec] = {
    "dsec_night": TargetSpec(
        name="dsec_night",
        description="DSEC-Night (zurich_city_09_a..e): warped night frames + events, 18 evaluated classes",
        second_modality="events",
        headline_metric="miou18",
        metrics={
            "miou18": tuple(c for c in ALL_CLASSES if c != DSEC_EXCLUDED_CLASS),
            "miou19": ALL_CLASSES,
        },
        train_split="train",
        test_split="test",
        modalities=frozenset({"events"}),
    ),
}


class UnknownTargetError(ValueError):
    """A target name that is not in the registry."""


def get_target(name: str) -> TargetSpec:
    try:
        return TARGETS[name]
    except KeyError:
        raise UnknownTargetError(f"unknown target {name!r}; registered targets: {sorted(TARGETS)}") from None
