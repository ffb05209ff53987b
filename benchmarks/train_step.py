"""Iterations/s and peak memory of the whole CMDA training step, and the batched ISR against the
original's per-sample PIL/numpy path, measured in the same run.

    python benchmarks/train_step.py [--sizes mit_b0 mit_b2] [--crop 128] [--batch 2] [--steps 3]

The step is the real `DACSStep` (source pass, teacher, ClassMix, mixed pass, both backwards) on a
synthetic batch of the configured crop size; on a GPU it runs fp32 and bf16 autocast.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import time

import numpy as np
import torch
from PIL import Image

from cmda.config import config_from_dict
from cmda.data.extractors import DSEC_ISR, image_content_extractor, to_gray_uint8
from cmda.train import build_model
from cmda.uda.dacs import DACSStep


def synthetic_batch(batch: int, crop: int) -> dict:
    gen = torch.Generator().manual_seed(0)

    def domain(with_label: bool) -> dict:
        out = {
            "image": torch.randn(batch, 3, crop, crop, generator=gen),
            "isr_direction": torch.randint(0, 4, (batch,), generator=gen),
        }
        if with_label:
            out["label"] = torch.randint(0, 19, (batch, crop, crop), generator=gen)
            out["motion"] = torch.rand(batch, 1, crop, crop, generator=gen) * 2 - 1
        else:
            out["events"] = torch.randn(batch, 3, crop, crop, generator=gen).clamp(-1, 1)
        return out

    return {"source": domain(True), "target": domain(False)}


def time_steps(
    size: str, crop: int, batch: int, steps: int, device: torch.device, bf16: bool
) -> tuple[float, float]:
    config = config_from_dict(
        {"model": {"backbone": size, "pretrained": "none"}, "train": {"device": device.type}}
    )
    model = build_model(config).to(device)
    step = DACSStep(model, config.uda, config.target, seed=config.seed)
    step.teacher.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    data = synthetic_batch(batch, crop)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    durations = []
    for i in range(steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        step(data, i + 1, device, autocast)
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        durations.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    return 1 / float(np.median(durations[1:])), peak


def per_sample_pil_isr(images_uint8: np.ndarray) -> list[np.ndarray]:
    """The original's path: every sample through PIL ('L') and numpy, one after the other, on the CPU."""
    out = []
    a, b = DSEC_ISR.val_range
    for image in images_uint8:
        gray = np.asarray(Image.fromarray(image).convert("L"), dtype=np.float64)
        results = []
        for shifted in (
            np.concatenate([gray[:, :1], gray[:, :-1]], 1),
            np.concatenate([gray[1:], gray[-1:]], 0),
        ):
            d = np.log(shifted / 255 * (b - a) + a) - np.log(gray / 255 * (b - a) + a)
            r = np.log(b) - np.log(a)
            d[np.abs(d) <= DSEC_ISR.threshold * r] = 0
            pos, neg = np.clip(d, 0, DSEC_ISR.clip_range * r), np.clip(d, -DSEC_ISR.clip_range * r, 0)
            pos = (pos - pos.min()) / (pos.max() - pos.min() + 1e-8)
            neg = (neg - neg.min()) / (neg.max() - neg.min() + 1e-8) - 1
            results.append(pos + neg)
        out.append(0.5 * results[0] + 0.5 * results[1])
    return out


def isr_speed(batch: int, size: int, device: torch.device) -> tuple[float, float]:
    images = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    start = time.perf_counter()
    per_sample_pil_isr(images)
    pil = time.perf_counter() - start
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).to(device)
    image_content_extractor(to_gray_uint8(tensor), DSEC_ISR, 0)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    image_content_extractor(to_gray_uint8(tensor), DSEC_ISR, 0)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return pil, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", default=["mit_b0", "mit_b2"])
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print("| device | backbone | crop | batch | precision | it/s | peak memory (MiB) |")
    print("| --- | --- | ---: | ---: | --- | ---: | ---: |")
    for device in devices:
        for size in args.sizes:
            for bf16 in [False, True] if device.type == "cuda" else [False]:
                its, peak = time_steps(size, args.crop, args.batch, args.steps, device, bf16)
                precision = "bf16" if bf16 else "fp32"
                row = (device.type, size, args.crop, args.batch, precision, f"{its:.2f}", f"{peak:.0f}")
                print("| " + " | ".join(map(str, row)) + " |")
    print()
    print("| device | ISR of a batch | per-sample PIL/numpy (ms) | batched torch (ms) | speed-up |")
    print("| --- | --- | ---: | ---: | ---: |")
    for device in devices:
        pil, batched = isr_speed(8, 512, device)
        print(
            f"| {device.type} | 8 x 512x512 | {pil * 1e3:.1f} | {batched * 1e3:.1f} | {pil / batched:.1f}x |"
        )


if __name__ == "__main__":
    main()
