"""Pairs one source sample with one target sample per index, reproducibly.

Sample i depends only on (seed, i): the generator for every random choice (RCS class and file, target index,
crops, flips) is seeded with [seed, i]. A training run that restarts at iteration k therefore sees exactly
the samples it would have seen without the interruption, whatever the number of loader workers.
"""

from __future__ import annotations

import numpy as np
import torch

from cmda.data.errors import reports_data_errors
from cmda.data.rcs import RareClassSampler


class SourceTargetDataset(torch.utils.data.Dataset):
    """{"source": source sample, "target": target sample}; the default collate batches it.

    Without `rcs` the pairs enumerate source x target (index // |T|, index % |T|), like DAFormer's UDADataset.
    With `rcs` the source comes from rare class sampling (crop re-drawn for the class) and the target is
    uniform. Default length |S| * |T| (the original's nominal length); the trainer samples indices from it.
    """

    def __init__(
        self,
        source: torch.utils.data.Dataset,
        target: torch.utils.data.Dataset,
        rcs: RareClassSampler | None = None,
        seed: int = 0,
        length: int | None = None,
    ) -> None:
        if len(source) == 0 or len(target) == 0:
            raise ValueError(f"empty dataset: {len(source)} source and {len(target)} target samples")
        self.source = source
        self.target = target
        self.rcs = rcs
        self.seed = seed
        self.length = len(source) * len(target) if length is None else int(length)

    def __len__(self) -> int:
        return self.length

    @reports_data_errors
    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} outside 0..{self.length - 1}")
        rng = np.random.default_rng([self.seed, index])
        if self.rcs is not None:
            cls, label_name = self.rcs.sample(rng)
            source_index = self.source.index_of_label(label_name)
            source = self.source.get_sample(
                source_index, rng, rare_class=cls, min_crop_pixels=self.rcs.min_crop_pixels
            )
            target_index = int(rng.integers(len(self.target)))
        else:
            source_index = (index // len(self.target)) % len(self.source)
            target_index = index % len(self.target)
            source = self.source.get_sample(source_index, rng)
        target = self.target.get_sample(target_index, rng)
        return {"source": source, "target": target}
