"""Loader throughput at the paper's resolution: samples/s of ONE loader worker, and the workers a step needs.

Generates a synthetic twin at 2048x1024 (Cityscapes) and 640x480 (DSEC) with about `--events` events per
inter-frame window (real DSEC-Night windows hold ~0.9-1.4 M), builds the datasets exactly as the trainer
does (source resize 1024x512 + 512 crop, RCS; target 400 crop -> 512, events rectified and normalised; the
ISR is computed batched on the training device, not in the loader), then times `dataset[i]` in this
process with one torch thread, which is what each DataLoader worker does. The paired rate gives the number
of workers that keep a step fed: ceil(batch x iterations/s / paired samples/s per worker).

    python benchmarks/loader.py [--samples 12] [--events 1000000] [--batch 2] [--its 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch

from cmda.data.cityscapes import CityscapesDataset
from cmda.data.dsec import DSECNightDataset
from cmda.data.paired import SourceTargetDataset
from cmda.data.rcs import RareClassSampler
from cmda.data.synthetic import generate


def time_samples(dataset: torch.utils.data.Dataset, count: int) -> float:
    """Samples/s over `count` samples after one warm-up sample (opens files, fills caches)."""
    dataset[0]
    start = time.perf_counter()
    for index in range(count):
        dataset[index % len(dataset)]
    return count / (time.perf_counter() - start)


def build(root: Path, events: int) -> dict[str, torch.utils.data.Dataset]:
    paths = generate(root, seed=0, options={
        "cityscapes": {"size": (2048, 1024), "cities": ("aachen",), "images_per_city": 4},
        "dsec_night": {"size": (640, 480), "frames_per_sequence": 6, "label_every": 2,
                       "noise_events_per_window": events, "sequences": 1},
    })  # fmt: skip
    source = CityscapesDataset(
        paths["cityscapes"], resize=(1024, 512), crop=(512, 512), with_isr=False, seed=0
    )
    target = DSECNightDataset(paths["dsec_night"], crop=(400, 400), resize=(512, 512), with_isr=False, seed=0)
    rcs = RareClassSampler.for_dataset(source, seed=0)
    first, last = target.event_window(*target.samples[0])
    return {
        "source (Cityscapes 2048x1024 -> 1024x512 -> 512 crop, RCS)": source,
        f"target train (DSEC 640x480, {last - first + 1:,} events, 400 crop -> 512)": target,
        "target test (640x440 full frame, for evaluation)": DSECNightDataset(
            paths["dsec_night"], split="test", with_isr=False
        ),
        "paired source + target (one training sample)": SourceTargetDataset(source, target, rcs=rcs, seed=0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=12)
    parser.add_argument("--events", type=int, default=1_000_000, help="background events per window")
    parser.add_argument("--batch", type=int, default=2, help="paired samples per training step (paper: 2)")
    parser.add_argument("--its", type=float, default=2.0, help="training steps per second to keep fed")
    parser.add_argument("--keep", type=Path, default=None, help="generate into this folder and keep it")
    args = parser.parse_args()
    torch.set_num_threads(1)  # a loader worker runs with one thread
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        datasets = build(args.keep or Path(tmp), args.events)
        print(f"generated the real-resolution twin in {time.perf_counter() - start:.1f} s\n")
        print("| dataset | samples/s per worker | ms/sample |")
        print("| --- | ---: | ---: |")
        rate = 0.0
        for name, dataset in datasets.items():
            rate = time_samples(dataset, args.samples)
            print(f"| {name} | {rate:.2f} | {1000 / rate:.0f} |")
    needed = args.batch * args.its
    print(
        f"\na batch-{args.batch} step at {args.its:g} it/s needs {needed:g} paired samples/s: "
        f"{math.ceil(needed / rate)} loader worker(s) at {rate:.2f} samples/s each"
    )


if __name__ == "__main__":
    main()
