"""Frames/s per core of `cmda data warp-dsec` against the original generator's procedure, in the same run.

The baseline does the work the original generator (XiaRho/CMDA 7536d35, utils/wrap_images.py) does per frame,
written plainly with this module's helpers: separate scipy interpolators for x and y (four triangulations,
each with its own barycentric transforms), both passes evaluated over the full grid, then float64
grid_sample. Ours: `--cmda-v1` (one triangulation per pass, bit-identical output), the default (one
incremental triangulation, lattice rasterisation of the holes only, numpy sampling) and the homography.

Inputs at DSEC's resolution: zurich_city_09's calibration, a 1440x1080 RGB frame, and a LiDAR-like event
disparity of a road scene (ground plane plus a near wall; no returns in the top quarter, `--density` of the
pixels below valid). `--workers` also times whole sequences through `warp_sequences` (PNG I/O included).

    python benchmarks/warp.py [--density 0.3 0.6] [--repeats 2] [--workers 2] [--frames 6]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # per core

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from cmda.data import warp  # noqa: E402
from cmda.data.warp.densify import _corners, _grid_points  # noqa: E402 - the original's steps, one by one


def road_disparity(calib: warp.Calibration, density: float, rng: np.random.Generator) -> np.ndarray:
    width, height = calib.event_size
    ys, xs = np.mgrid[0:height, 0:width]
    ground = 1.0 / (1 / 60 + (1 / 4 - 1 / 60) * ys / (height - 1))
    depth = np.where((xs < width // 4) & (ys > height // 3), 6.0, ground)
    disparity = calib.k_event[0, 0] / calib.q_event[3, 2] / depth
    valid = (rng.random((height, width)) < density) & (ys >= height // 4)
    return np.where(valid, np.round(disparity * 256), 0).astype(np.uint16)


def original_procedure(image: np.ndarray, calib: warp.Calibration, disparity: np.ndarray) -> np.ndarray:
    """The original's per-frame work: x and y interpolated separately, every pass over the full grid."""
    from scipy.interpolate import LinearNDInterpolator

    height, width = disparity.shape
    ys, xs = np.nonzero(disparity)
    sparse = warp.project_disparity(calib, xs, ys, disparity[ys, xs] / warp.DISPARITY_SCALE)
    points = np.stack([xs, ys], axis=1).astype(np.float64)
    grid = _grid_points(width, height)
    first = np.stack([LinearNDInterpolator(points, sparse[:, k])(grid) for k in (0, 1)], axis=1)
    corners = _corners(width, height)
    corner_uv = np.array(
        [
            warp.extrapolate_corner(lambda x, y: first[y * width + x], c, d, (width, height))
            for c, d in corners
        ]
    )
    all_points = np.concatenate([points, np.array([c for c, _ in corners], dtype=np.float64)])
    values = np.concatenate([sparse, corner_uv])
    second = np.stack([LinearNDInterpolator(all_points, values[:, k])(grid) for k in (0, 1)], axis=1)
    return warp.sample_cmda_v1(image, second.reshape(height, width, 2))


def seconds(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def sequences_per_second(
    calib_data: dict, image: np.ndarray, disparity: np.ndarray, frames: int, workers: int
):
    from PIL import Image

    folder = Path(tempfile.mkdtemp(prefix="warp_bench_"))
    try:
        (folder / "calibration").mkdir()
        (folder / "calibration/cam_to_cam.yaml").write_text(yaml.safe_dump(calib_data))
        for sub in ("images/left/rectified", "disparity/event"):
            (folder / sub).mkdir(parents=True)
        for index in range(0, 2 * frames, 2):
            Image.fromarray(image).save(folder / f"images/left/rectified/{index:06d}.png")
            Image.fromarray(disparity).save(folder / f"disparity/event/{index:06d}.png")
        start = time.perf_counter()
        warp.warp_sequences([folder], "disparity", workers=workers, overwrite=True, progress=False)
        return frames / (time.perf_counter() - start)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--density", type=float, nargs="+", default=[0.3, 0.6])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="also time whole sequences with this many")
    parser.add_argument("--frames", type=int, default=6, help="frames per sequence for the --workers timing")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    calib_data = warp.reference_calibration(1.0)
    calib = warp.Calibration.from_dict(calib_data, Path("zurich_city_09/cam_to_cam.yaml"))
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (1080, 1440, 3), dtype=np.uint8)
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n")
    print("| valid disparities | variant | s/frame | frames/s per core | speed-up |")
    print("| ---: | --- | ---: | ---: | ---: |")
    for density in args.density:
        disparity = road_disparity(calib, density, rng)
        baseline = seconds(lambda d=disparity: original_procedure(image, calib, d), args.repeats)
        variants = {
            "original procedure (baseline)": baseline,
            "--cmda-v1": seconds(
                lambda d=disparity: warp.warp_image(image, calib, d, cmda_v1=True), args.repeats
            ),
            "default": seconds(lambda d=disparity: warp.warp_image(image, calib, d), args.repeats),
            "--method homography": seconds(lambda: warp.warp_image(image, calib, None), args.repeats),
        }
        valid = f"{(disparity > 0).sum():,} ({(disparity > 0).mean():.0%})"
        for name, value in variants.items():
            print(f"| {valid} | {name} | {value:.2f} | {1 / value:.2f} | {baseline / value:.1f}x |")
    if args.workers > 1:
        disparity = road_disparity(calib, args.density[-1], rng)
        one = sequences_per_second(calib_data, image, disparity, args.frames, 1)
        many = sequences_per_second(calib_data, image, disparity, args.frames, args.workers)
        print(
            f"\nwhole sequence, default method, PNG I/O included: {one:.2f} frames/s with 1 worker, "
            f"{many:.2f} with {args.workers} ({many / one:.2f}x)"
        )

    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
