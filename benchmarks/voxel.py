"""Events/s of `events_to_voxel_grid` against the CMDA-style vectorised torch splat, in the same run.

The baseline is how DSEC's and CMDA's code splat: a Python loop over the 2x2(x2) corners, each building
its own weights, mask and flat index and calling `index_put_(..., accumulate=True)`. Rows:
- `default`: `events_to_voxel_grid` on rectified float coordinates (the compiled numba loop on CPU);
- `default + rectify`: raw sensor pixels looked up in a rectify map inside the same loop, against the
  original's numpy lookup `map[y, x]` followed by the baseline splat (what the DSEC loader does per sample);
- `torch backend`: the tensor-operation path (what runs for tensors on a GPU).
The goal is at least 10x the baseline per CPU thread with nothing to opt into.

    python benchmarks/voxel.py [--counts 1000000 5000000] [--bins 1 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import functools
import time

import numpy as np
import torch

from cmda.data.voxel import events_to_voxel_grid

HEIGHT, WIDTH = 480, 640


def cmda_splat(x, y, t, p, bins: int, height: int, width: int) -> torch.Tensor:
    """The baseline: CMDA's `events_to_voxel_grid`, corner by corner with index_put_."""
    grid = torch.zeros(bins, height, width, device=x.device).flatten()
    value = p * 2 - 1
    t_norm = (bins - 1) * (t - t[0]) / max(float(t[-1] - t[0]), 1e-9) if bins > 1 else torch.zeros_like(x)
    x0, y0, t0 = x.int(), y.int(), t_norm.int()
    for xl in (x0, x0 + 1):
        for yl in (y0, y0 + 1):
            for tl in (t0, t0 + 1) if bins > 1 else (t0,):
                mask = (xl >= 0) & (yl >= 0) & (tl >= 0) & (xl < width) & (yl < height) & (tl < bins)
                weight = value * (1 - (xl - x).abs()) * (1 - (yl - y).abs()) * (1 - (tl - t_norm).abs())
                index = height * width * tl.long() + width * yl.long() + xl.long()
                grid.index_put_((index[mask],), weight[mask], accumulate=True)
    return grid.view(bins, height, width)


def cmda_rectify_and_splat(x_raw, y_raw, t, p, rectify_map, bins: int, height: int, width: int):
    """The baseline with the original's rectification: numpy map[y, x], then the corner loop."""
    xy = rectify_map[y_raw, x_raw]
    x, y = torch.from_numpy(xy[:, 0].copy()), torch.from_numpy(xy[:, 1].copy())
    return cmda_splat(x, y, t, p, bins, height, width)


def timed(fn, device: torch.device, repeats: int) -> float:
    """Best of `repeats` wall times after one warm-up call (the CPU is shared; the minimum is the cost)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def lens_map(height: int, width: int) -> np.ndarray:
    """A mild distortion like DSEC's rectify maps (float32 [H, W, 2])."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    cx, cy = (width - 1) / 2, (height - 1) / 2
    r2 = ((xs - cx) ** 2 + (ys - cy) ** 2) / (0.9 * width) ** 2
    return np.stack([cx + (xs - cx) * (1 + 0.06 * r2), cy + (ys - cy) * (1 + 0.06 * r2)], -1)


def rows_for(count: int, bins: int, device: torch.device, rectify_map: np.ndarray, repeats: int) -> list:
    """(path, our seconds, baseline seconds) for one event count, bin count and device."""
    rng = np.random.default_rng(0)
    x_raw = rng.integers(0, WIDTH, count).astype(np.uint16)
    y_raw = rng.integers(0, HEIGHT, count).astype(np.uint16)
    t_np = np.sort(rng.integers(0, 50_000, count))
    p_np = rng.integers(0, 2, count).astype(np.uint8)
    x_np, y_np = (np.ascontiguousarray(column) for column in rectify_map[y_raw, x_raw].T)
    x, y = torch.from_numpy(x_np).to(device), torch.from_numpy(y_np).to(device)
    t, p = torch.from_numpy(t_np).float().to(device), torch.from_numpy(p_np).float().to(device)
    grid_args = (bins, HEIGHT, WIDTH)
    baseline = timed(functools.partial(cmda_splat, x, y, t, p, *grid_args), device, repeats)
    torch_path = functools.partial(events_to_voxel_grid, x, y, t, p, *grid_args, backend="torch")
    rows = [("torch backend", timed(torch_path, device, repeats), baseline)]
    if device.type != "cpu":
        return rows
    default = functools.partial(events_to_voxel_grid, x_np, y_np, t_np, p_np, *grid_args)
    fused = functools.partial(
        events_to_voxel_grid, x_raw, y_raw, t_np, p_np, *grid_args, rectify_map=rectify_map
    )
    original = functools.partial(cmda_rectify_and_splat, x_raw, y_raw, t, p, rectify_map, *grid_args)
    return [
        ("default", timed(default, device, repeats), baseline),
        ("default + rectify", timed(fused, device, repeats), timed(original, device, repeats)),
        *rows,
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--counts", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--bins", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (the goal is per thread)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rectify_map = lens_map(HEIGHT, WIDTH)
    print("| device | events | bins | path | Mev/s | baseline Mev/s | speed-up |")
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: |")
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for count in args.counts:
        for bins in args.bins:
            for device in devices:
                for name, ours, baseline in rows_for(count, bins, device, rectify_map, args.repeats):
                    print(
                        f"| {device.type} | {count:,} | {bins} | {name} | {count / ours / 1e6:.1f} "
                        f"| {count / baseline / 1e6:.1f} | {baseline / ours:.1f}x |"
                    )


if __name__ == "__main__":
    main()
