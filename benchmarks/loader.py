"""Loader throughput at the real resolutions: samples/s of ONE worker for source and target samples.

Generates a synthetic twin at 2048x1024 (Cityscapes) and 640x480 (DSEC) with about `--events` events per
inter-frame window (real DSEC-Night windows hold ~0.9-1.4 M), then times `dataset[i]` in this process,
which is what each DataLoader worker does. Multiply by num_workers for an upper bound of the loader's rate.

    .venv/bin/python benchmarks/loader.py [--samples 12] [--events 1000000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from cmda.data.cityscapes import CityscapesDataset
from cmda.data.dsec import DSECNightDataset
from cmda.data.paired import SourceTargetDataset
from cmda.data.rcs import RareClassSampler
from cmda.data.synthetic import generate


def time_samples(dataset: torch.utils.data.Dataset, count: int) -> tuple[float, float]:
    """(samples/s, ms/sample) of `count` samples after one warm-up sample (opens files, fills caches)."""
    dataset[0]
    start = time.perf_counter()
    for index in range(count):
        dataset[index % len(dataset)]
    elapsed = time.perf_counter() - start
    return count / elapsed, 1000 * elapsed / count


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=12)
    parser.add_argument("--events", type=int, default=1_000_000, help="background events per window")
    parser.add_argument("--keep", type=Path, default=None, help="generate into this folder and keep it")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a loader worker uses 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        start = time.perf_counter()
        paths = generate(
            root, seed=0, cityscapes_size=(2048, 1024), cities=("aachen",), images_per_city=4,
            dsec_size=(640, 480), frames_per_sequence=6, label_every=2, noise_events_per_window=args.events,
            dsec_sequences=1,
        )  # fmt: skip
        print(f"generated real-resolution twin in {time.perf_counter() - start:.1f} s")
        source = CityscapesDataset(paths.cityscapes, resize=(1024, 512), crop=(512, 512), seed=0)
        target = DSECNightDataset(paths.dsec, crop=(400, 400), resize=(512, 512), seed=0)
        target_test = DSECNightDataset(paths.dsec, split="test", seed=0)
        rcs = RareClassSampler(
            paths.cityscapes / "sample_class_stats.json", label_wh=source.label_size(), resize_wh=(1024, 512)
        )
        paired = SourceTargetDataset(source, target, rcs=rcs, seed=0)
        first, last = target.event_window(*target.samples[0])
        rows = [
            ("source (Cityscapes 2048x1024 -> 512 crop)", source),
            (f"target train (DSEC 640x480, {last - first + 1:,} events -> 512)", target),
            ("target test (640x440 full frame)", target_test),
            ("paired source+target with RCS", paired),
        ]
        print(f"{'dataset':<58} {'samples/s':>10} {'ms/sample':>10}")
        for name, dataset in rows:
            rate, ms = time_samples(dataset, args.samples)
            print(f"{name:<58} {rate:>10.2f} {ms:>10.1f}")


if __name__ == "__main__":
    main()
