"""`cmda data warp-dsec`: DSEC's left frame images warped into the rectified left event camera.

Why this exists. DSEC-Night training pairs each event window with a "warp image": the left frame camera's
rectified image (camRect1, 1440x1080) resampled onto the rectified left event camera's grid (camRect0,
640x480), stored as `<sequence>/warp_images/NNNNNN.png`. CMDA ships these for zurich_city_09_a..e only and
never published the generator, so the target data could not be extended to other DSEC sequences nor the
released images checked. This module is that generator, documented and tested.

Two ways to map an event pixel to a frame pixel:
- `disparity` (what CMDA did): DSEC's event disparity (`disparity/event/NNNNNN.png`, value/256 pixels,
  0 = invalid) gives depth; each valid event pixel is back-projected with the event pair's Q matrix, taken
  out of the rectified event frame (R_rect0 undone), moved into the frame camera (T_10), rectified there
  (R_rect1) and projected with camRect1's K. The sparse map is densified over the whole grid by
  piecewise-linear interpolation on a Delaunay triangulation, after adding the four image corners,
  extrapolated along the diagonals, so that every pixel gets a value. DSEC has disparity at even frame
  indices only, so only those frames get a warp image (as in CMDA's release).
- `homography`: the infinite-depth warp DSEC's maintainers recommend,
  H = K_rect1 · R_rect1 · R_10 · R_rect0⁻¹ · K_rect0⁻¹; every frame, no disparity needed, but objects at
  depth Z are misplaced by about f_event · |t_10| / Z event pixels (26/Z with zurich_city_09's calibration).

Two sampling conventions (see docs/ARCHITECTURE.md, "Where we differ from the original"):
- `cmda_v1=True` reproduces the original generator's pixels: torch `grid_sample` (bilinear,
  align_corners=False, zero padding) on coordinates normalised by half the frame size, i.e. sampling half
  a frame pixel up-left of the computed position; coordinates clamped to the image, so pixels out of the
  frame camera's view get half the edge pixel's value; the result truncated to uint8. The densification
  evaluates scipy's `LinearNDInterpolator` over the full grid in both passes, with the original's points
  in the original's order (x and y in one interpolator, where it built one each: same triangulation, same
  arithmetic), so the output bytes match; checked against the original code, not part of the tests.
- the default samples with OpenCV's pixel-centre convention (integer coordinates are pixel centres),
  rounds to the nearest integer and sets pixels out of the frame camera's view (the bottom rows with DSEC's
  calibration) to 0, counting them per file in `<sequence>/warp_images_log.csv`. Its densification uses one
  incremental triangulation and rasterises only the pixels without disparity (1.5-2x faster than
  `cmda_v1`, see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import multiprocessing
import os
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cmda.io import clean_stale_tmp, load_yaml, write_bytes_atomic

METHODS = ("disparity", "homography")
DSEC_EVENT_SIZE = (640, 480)  # camRect0 (W, H), used when cam_to_cam.yaml gives no resolution
DSEC_FRAME_SIZE = (1440, 1080)  # camRect1 (W, H)
CALIBRATION_FILE = Path("calibration/cam_to_cam.yaml")
IMAGE_DIR = Path("images/left/rectified")
DISPARITY_DIR = Path("disparity/event")
OUTPUT_DIR = Path("warp_images")
LOG_FILE = "warp_images_log.csv"
DIAGONAL_STEP = 10  # event pixels between samples when extrapolating a corner along its diagonal
DISPARITY_SCALE = 256.0  # DSEC: disparity in pixels = uint16 value / 256
_FRAME_NAME = re.compile(r"^\d{6}\.png$")

# zurich_city_09's rectified calibration (DSEC gives zurich_city_00-03, 09, 10, 12 and 14 one calibration), as
# transcribed in public code from its cam_to_cam.yaml. The synthetic twin, the tests and the benchmark use it;
# the event stereo baseline (Q of cams_03) is not part of the transcription, 0.6 m is an assumption.
ZURICH_CITY_09 = {
    "camRect0": [583.3081203392971, 583.3081203392971, 336.83414459228516, 220.91131019592285],
    "camRect1": [1150.8249465165975, 1150.8249465165975, 724.4121398925781, 569.1058044433594],
    "T_10": [
        [0.9997112144904777, 0.00986845600843356, 0.02191121169595574, -0.04410796144531285],
        [-0.00996970822323083, 0.9999401008187403, 0.00451660188111385, 0.000933594786315412],
        [-0.02186532734534335, -0.0047337459393644215, 0.9997497182342509, -0.01216624740013352],
        [0.0, 0.0, 0.0, 1.0],
    ],
    "R_rect0": [
        [0.9999534546309575, -0.0030745983972593127, 0.009145240090297576],
        [0.003087094888434143, 0.9999943200819906, -0.0013526451518654562],
        [-0.009141029305467696, 0.001380814416433941, 0.9999572665543184],
    ],
    "R_rect1": [
        [0.9998378277031966, -0.01324800441141771, -0.01219871603357244],
        [0.013290206303291856, 0.9999059517045085, 0.0033849907410636757],
        [0.012152724392852067, -0.0035465652420619918, 0.9999198633714681],
    ],
}
EVENT_BASELINE_M = 0.6


class WarpError(ValueError):
    """Bad input for warp-dsec; the message names the file (and the field) and what was expected."""


# -- calibration --------------------------------------------------------------------------------------------


def _matrix(data: Any, path: Path, dotted: str, shape: tuple[int, ...], expected: str) -> np.ndarray:
    node = data
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            raise WarpError(f"{path}: missing field {dotted} (expected {expected})")
        node = node[key]
    try:
        array = np.asarray(node, dtype=np.float64)
    except (TypeError, ValueError):
        array = None
    if array is None or array.shape != shape or not np.isfinite(array).all():
        raise WarpError(f"{path}: field {dotted} must be {expected}, got {node!r}")
    return array


def _camera_matrix(fx_fy_cx_cy: np.ndarray) -> np.ndarray:
    fx, fy, cx, cy = fx_fy_cx_cy
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class Calibration:
    """What the warp needs from a sequence's cam_to_cam.yaml (DSEC names: cam0 = left events, cam1 = left
    frames, camRectX = rectified camX, T_10 maps cam0 points into cam1)."""

    path: Path
    k_event: np.ndarray  # camRect0 3x3
    k_frame: np.ndarray  # camRect1 3x3
    r_rect0: np.ndarray  # cam0 -> camRect0
    r_rect1: np.ndarray  # cam1 -> camRect1
    t_10: np.ndarray  # 4x4, cam0 -> cam1
    q_event: np.ndarray  # 4x4, disparity_to_depth.cams_03: [x, y, d, 1] in camRect0 -> homogeneous 3D
    event_size: tuple[int, int]  # (W, H) of camRect0
    frame_size: tuple[int, int]  # (W, H) of camRect1

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        path = Path(path)
        if not path.is_file():
            raise WarpError(
                f"{path}: calibration file not found (DSEC ships it as <sequence>/{CALIBRATION_FILE})"
            )
        return cls.from_dict(load_yaml(path), path)

    @classmethod
    def from_dict(cls, data: Any, path: Path) -> Calibration:
        k4 = "a list [fx, fy, cx, cy]"
        sizes = []
        for camera, default in (("camRect0", DSEC_EVENT_SIZE), ("camRect1", DSEC_FRAME_SIZE)):
            node = data.get("intrinsics", {}).get(camera, {}) if isinstance(data, dict) else {}
            if isinstance(node, dict) and "resolution" in node:
                size = _matrix(data, path, f"intrinsics.{camera}.resolution", (2,), "[width, height]")
                if (size < 2).any() or (size != np.round(size)).any():
                    raise WarpError(f"{path}: intrinsics.{camera}.resolution must be two integers >= 2")
                sizes.append((int(size[0]), int(size[1])))
            else:
                sizes.append(default)
        return cls(
            path=path,
            k_event=_camera_matrix(_matrix(data, path, "intrinsics.camRect0.camera_matrix", (4,), k4)),
            k_frame=_camera_matrix(_matrix(data, path, "intrinsics.camRect1.camera_matrix", (4,), k4)),
            r_rect0=_matrix(data, path, "extrinsics.R_rect0", (3, 3), "a 3x3 rotation"),
            r_rect1=_matrix(data, path, "extrinsics.R_rect1", (3, 3), "a 3x3 rotation"),
            t_10=_matrix(data, path, "extrinsics.T_10", (4, 4), "a 4x4 transform"),
            q_event=_matrix(data, path, "disparity_to_depth.cams_03", (4, 4), "the 4x4 Q matrix"),
            event_size=sizes[0],
            frame_size=sizes[1],
        )

    def homography(self) -> np.ndarray:
        """3x3 map from event pixels to frame pixels for points at infinite depth."""
        rotation = self.r_rect1 @ self.t_10[:3, :3] @ np.linalg.inv(self.r_rect0)
        return self.k_frame @ rotation @ np.linalg.inv(self.k_event)


def reference_calibration(scale: float = 1.0, event_baseline: float = EVENT_BASELINE_M) -> dict:
    """cam_to_cam.yaml content with DSEC's field names and zurich_city_09's geometry; intrinsics and
    resolutions scaled by `scale` (the synthetic twin's small size uses 0.25)."""
    intrinsics = {}
    for camera, size in (("camRect0", DSEC_EVENT_SIZE), ("camRect1", DSEC_FRAME_SIZE)):
        k = [value * scale for value in ZURICH_CITY_09[camera]]
        intrinsics[camera] = {
            "camera_model": "pinhole",
            "camera_matrix": k,
            "resolution": [round(size[0] * scale), round(size[1] * scale)],
        }
    f, cx, cy = intrinsics["camRect0"]["camera_matrix"][0], *intrinsics["camRect0"]["camera_matrix"][2:]
    q = [
        [1.0, 0.0, 0.0, -cx],
        [0.0, 1.0, 0.0, -cy],
        [0.0, 0.0, 0.0, f],
        [0.0, 0.0, 1.0 / event_baseline, 0.0],
    ]
    return {
        "intrinsics": intrinsics,
        "extrinsics": {name: copy.deepcopy(ZURICH_CITY_09[name]) for name in ("T_10", "R_rect0", "R_rect1")},
        "disparity_to_depth": {"cams_03": q},
    }


# -- geometry -----------------------------------------------------------------------------------------------


def project_disparity(calib: Calibration, x: np.ndarray, y: np.ndarray, disparity: np.ndarray) -> np.ndarray:
    """Event pixels (x, y) with disparity (pixels) -> frame pixel coordinates, float64 [N, 2].

    Operations and their order follow the original generator so `--cmda-v1` is exact to the last bit.
    A disparity whose Q-projection lies at infinity (W = 0, e.g. d = 0 with DSEC's Q) gets the homography.
    """
    points = np.concatenate(
        [np.stack([x, y, disparity]).astype(np.float64), np.ones((1, len(x)))], axis=0
    )  # [4, N], C-contiguous
    world = np.matmul(calib.q_event, points)
    with np.errstate(divide="ignore", invalid="ignore"):
        world = world / world[-1, :]
        world[:3, :] = np.matmul(np.linalg.inv(calib.r_rect0), world[:3, :])
        frame = np.matmul(calib.t_10, world)
        frame[:3, :] = np.matmul(calib.r_rect1, frame[:3, :])
        frame = frame[:3, :]
        pixels = np.matmul(calib.k_frame, frame / frame[2, :])[:2].T
    at_infinity = ~np.isfinite(pixels).all(axis=1)
    if at_infinity.any():
        pixels[at_infinity] = apply_homography(calib.homography(), x[at_infinity], y[at_infinity])
    return pixels


def apply_homography(h: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """[N, 2] = dehomogenised H · [x, y, 1]."""
    mapped = h @ np.stack([np.asarray(x, np.float64), np.asarray(y, np.float64), np.ones(len(x))])
    return (mapped[:2] / mapped[2]).T


def homography_map(calib: Calibration) -> np.ndarray:
    """Frame coordinates of every event pixel at infinite depth, float64 [H, W, 2]."""
    width, height = calib.event_size
    ys, xs = np.mgrid[0:height, 0:width]
    return apply_homography(calib.homography(), xs.ravel(), ys.ravel()).reshape(height, width, 2)


def _grid_points(width: int, height: int) -> np.ndarray:
    """(x, y) of every pixel, row-major, float64 [H*W, 2]."""
    ys, xs = np.mgrid[0:height, 0:width]
    return np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)


def _corners(width: int, height: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(corner, diagonal direction into the image), in the original's order: top-left, bottom-left,
    bottom-right, top-right."""
    return [
        ((0, 0), (1, 1)),
        ((0, height - 1), (1, -1)),
        ((width - 1, height - 1), (-1, -1)),
        ((width - 1, 0), (-1, 1)),
    ]


def extrapolate_corner(
    values_at: Any, corner: tuple[int, int], direction: tuple[int, int], size: tuple[int, int]
) -> np.ndarray | None:
    """Value for an image corner from the first two interpolated samples along its diagonal.

    Walking from the corner in DIAGONAL_STEP steps, the first sample i with a value and the next one
    (i + 1) define a line that is followed back i steps to the corner: first - (second - first) * i (the
    original's rule). `values_at(xs, ys)` returns [N, 2] values, NaN outside the triangulation. None when no
    such pair exists inside the image (the caller falls back to the homography).
    """
    width, height = size
    reach = min((width - 1) // DIAGONAL_STEP, (height - 1) // DIAGONAL_STEP)  # last step inside the image
    steps = np.arange(reach + 1)
    xs = corner[0] + steps * DIAGONAL_STEP * direction[0]
    ys = corner[1] + steps * DIAGONAL_STEP * direction[1]
    values = values_at(xs, ys)
    finite = np.isfinite(values).all(axis=1)
    for i in range(reach):
        if finite[i] and finite[i + 1]:
            first, second = values[i], values[i + 1]
            return first - (second - first) * i
    return None


@dataclass
class DenseMap:
    """Frame coordinates for every event pixel [H, W, 2] and how they were obtained. `fallback` is "" or
    "homography" (fewer than 3 usable disparities) or "corners:N" (N corners had no diagonal to extrapolate
    along and took the homography's value)."""

    coords: np.ndarray
    disparity_pixels: int | None  # valid disparities used; None for the homography
    fallback: str = ""


def densify(calib: Calibration, disparity: np.ndarray, *, cmda_v1: bool = False) -> DenseMap:
    """Disparity map (uint16 as DSEC stores it) -> dense frame coordinates for the event grid."""
    from scipy.spatial import QhullError

    height, width = disparity.shape
    ys, xs = np.nonzero(disparity)
    sparse = project_disparity(calib, xs, ys, disparity[ys, xs] / DISPARITY_SCALE)
    points = np.stack([xs, ys], axis=1).astype(np.float64)
    homography = calib.homography()
    try:
        if len(points) < 3:
            raise QhullError("fewer than 3 valid disparities")
        if cmda_v1:
            coords, missing = _densify_scipy(points, sparse, width, height, homography)
        else:
            coords, missing = _densify_lattice(points, sparse, width, height, homography)
    except QhullError:
        return DenseMap(homography_map(calib), len(points), "homography")
    return DenseMap(coords.reshape(height, width, 2), len(points), f"corners:{missing}" if missing else "")


def _corner_values(values_at: Any, width: int, height: int, homography: np.ndarray) -> tuple[np.ndarray, int]:
    found, missing = [], 0
    for corner, direction in _corners(width, height):
        value = extrapolate_corner(values_at, corner, direction, (width, height))
        if value is None:
            missing += 1
            value = apply_homography(homography, [corner[0]], [corner[1]])[0]
        found.append(value)
    return np.array(found), missing


def _densify_scipy(
    points: np.ndarray, sparse: np.ndarray, width: int, height: int, homography: np.ndarray
) -> tuple[np.ndarray, int]:
    """The original's densification, call for call: interpolate the full grid without corners, extrapolate
    the corners from it, interpolate the full grid again with them."""
    from scipy.interpolate import LinearNDInterpolator

    grid = _grid_points(width, height)
    first_pass = LinearNDInterpolator(points, sparse)(grid)
    corner_xy = np.array([corner for corner, _ in _corners(width, height)], dtype=np.float64)
    corner_uv, missing = _corner_values(
        lambda x, y: first_pass[np.asarray(y) * width + np.asarray(x)], width, height, homography
    )
    second = LinearNDInterpolator(np.concatenate([points, corner_xy]), np.concatenate([sparse, corner_uv]))
    return second(grid), missing


def _densify_lattice(
    points: np.ndarray, sparse: np.ndarray, width: int, height: int, homography: np.ndarray
) -> tuple[np.ndarray, int]:
    """The same interpolant, cheaper: one triangulation to which the corners are added, interpolated only
    where there is no disparity (valid pixels keep their exact projection) and only on the pixel lattice."""
    from scipy.spatial import Delaunay

    xs, ys = points[:, 0].astype(np.int64), points[:, 1].astype(np.int64)
    valid = np.zeros((height, width), dtype=bool)
    valid[ys, xs] = True
    coords = np.full((height * width, 2), np.nan)
    coords[valid.ravel()] = sparse  # np.nonzero listed the valid pixels in row-major order
    diagonals = np.zeros_like(valid)
    for corner, direction in _corners(width, height):
        steps = np.arange(min(width - 1, height - 1) // DIAGONAL_STEP + 1) * DIAGONAL_STEP
        diagonals[corner[1] + steps * direction[1], corner[0] + steps * direction[0]] = True
    tri = Delaunay(points, incremental=True)
    try:
        first_pass = coords.copy()
        wanted = (diagonals & ~valid).ravel()
        first_pass[wanted] = _interpolate_on_lattice(tri.points, tri.simplices, sparse, diagonals & ~valid)[
            wanted
        ]
        corner_uv, missing = _corner_values(
            lambda x, y: first_pass[np.asarray(y) * width + np.asarray(x)], width, height, homography
        )
        corner_xy = np.array([corner for corner, _ in _corners(width, height)], dtype=np.float64)
        new = ~valid[corner_xy[:, 1].astype(np.int64), corner_xy[:, 0].astype(np.int64)]
        values = sparse
        if new.any():
            tri.add_points(corner_xy[new])
            values = np.concatenate([sparse, corner_uv[new]])
        holes = (~valid).ravel()
        coords[holes] = _interpolate_on_lattice(tri.points, tri.simplices, values, ~valid)[holes]
    finally:
        tri.close()
    return coords, missing


def _interpolate_on_lattice(
    vertices: np.ndarray, simplices: np.ndarray, values: np.ndarray, wanted: np.ndarray
) -> np.ndarray:
    """Piecewise-linear interpolation of per-vertex `values` at the `wanted` pixels [H, W] of a triangulation
    whose vertices are integer pixel positions; [H*W, C], NaN where not wanted or outside every triangle.

    Rasterises the triangles row by row instead of locating each pixel: scipy's find_simplex first builds a
    barycentric transform per simplex, which costs more than the triangulation itself. Edge functions of
    integer points are exact, so a pixel on an edge shared by two triangles gets the same value from both.
    """
    height, width = wanted.shape
    out = np.full((height * width, values.shape[1]), np.nan)
    x = vertices[simplices][..., 0]
    y = vertices[simplices][..., 1]
    twice_area = (x[:, 1] - x[:, 0]) * (y[:, 2] - y[:, 0]) - (x[:, 2] - x[:, 0]) * (y[:, 1] - y[:, 0])
    y_min, y_max = y.min(axis=1).astype(np.int64), y.max(axis=1).astype(np.int64)
    wanted_rows = np.concatenate([[0], np.cumsum(wanted.any(axis=1))])
    # A lattice triangle of area 1/2 holds no lattice point besides its vertices (Pick's theorem).
    keep = (np.abs(twice_area) >= 2) & (wanted_rows[y_max + 1] > wanted_rows[y_min])
    simplices, x, y, twice_area = simplices[keep], x[keep], y[keep], twice_area[keep]
    y_min, y_max = y_min[keep], y_max[keep]
    # one entry per (triangle, row it spans)
    rows_per = y_max - y_min + 1
    tri = np.repeat(np.arange(len(simplices)), rows_per)
    row = y_min[tri] + np.arange(len(tri)) - np.repeat(np.cumsum(rows_per) - rows_per, rows_per)
    on_wanted_row = wanted.any(axis=1)[row]
    tri, row = tri[on_wanted_row], row[on_wanted_row]
    low, high = np.full(len(tri), np.inf), np.full(len(tri), -np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        for a, b in ((0, 1), (1, 2), (2, 0)):
            xa, ya, xb, yb = x[tri, a], y[tri, a], x[tri, b], y[tri, b]
            spans = (np.minimum(ya, yb) <= row) & (row <= np.maximum(ya, yb))
            flat = ya == yb
            crossing = xa + (row - ya) * (xb - xa) / (yb - ya)
            low = np.where(spans & ~flat, np.minimum(low, crossing), low)
            high = np.where(spans & ~flat, np.maximum(high, crossing), high)
            low = np.where(spans & flat, np.minimum(low, np.minimum(xa, xb)), low)
            high = np.where(spans & flat, np.maximum(high, np.maximum(xa, xb)), high)
    first = np.maximum(np.ceil(low - 1e-6), 0).astype(np.int64)
    last = np.minimum(np.floor(high + 1e-6), width - 1).astype(np.int64)
    count = np.maximum(last - first + 1, 0)
    span = np.repeat(np.arange(len(tri)), count)
    px = first[span] + np.arange(len(span)) - np.repeat(np.cumsum(count) - count, count)
    py = row[span]
    tri = tri[span]
    chosen = wanted[py, px]
    px, py, tri = px[chosen].astype(np.float64), py[chosen].astype(np.float64), tri[chosen]
    x0, x1, x2 = x[tri, 0] - px, x[tri, 1] - px, x[tri, 2] - px
    y0, y1, y2 = y[tri, 0] - py, y[tri, 1] - py, y[tri, 2] - py
    edges = np.stack([x1 * y2 - x2 * y1, x2 * y0 - x0 * y2, x0 * y1 - x1 * y0], axis=1)  # exact integers
    inside = (edges * np.sign(twice_area[tri])[:, None] >= 0).all(axis=1)
    weights = edges[inside] / twice_area[tri[inside], None]
    flat_index = (py[inside] * width + px[inside]).astype(np.int64)
    out[flat_index] = np.einsum("nk,nkc->nc", weights, values[simplices[tri[inside]]])
    return out


# -- sampling -----------------------------------------------------------------------------------------------


def in_view(coords: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """Event pixels whose frame position lies on the frame sensor (pixel centres at integers)."""
    width, height = frame_size
    u, v = coords[..., 0], coords[..., 1]
    with np.errstate(invalid="ignore"):
        return (u >= -0.5) & (u <= width - 0.5) & (v >= -0.5) & (v <= height - 0.5)


def sample_cmda_v1(image: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """The original's sampling: grid_sample(align_corners=False, zeros) on coordinates / (size / 2) - 1,
    clamped to [-1, 1], in float64, truncated to uint8. Grid memory layout as in the original."""
    import torch
    import torch.nn.functional as F

    height, width = image.shape[:2]
    layout = np.ascontiguousarray(coords.transpose(2, 1, 0)).transpose(2, 1, 0)  # strides of a [2, W, H] base
    grid = torch.from_numpy(layout)[None]
    grid[:, :, :, 0] = grid[:, :, :, 0] / (width / 2) - 1
    grid[:, :, :, 1] = grid[:, :, :, 1] / (height / 2) - 1
    grid = torch.clamp(grid, min=-1, max=1)
    source = torch.from_numpy(np.transpose(image, (2, 0, 1)))[None].double()
    warped = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # NaN where scipy could not place a pixel in the triangulation: uint8 0, as numpy casts it on x86
    return np.nan_to_num(warped[0].numpy().transpose(1, 2, 0), nan=0.0).astype(np.uint8)


def bilinear_taps(coords: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Flat pixel indices [4, H, W] and float32 weights [4, H, W] that sample an image of `size` (W, h)
    bilinearly at `coords` [H, W, 2] (x, y): integer coordinates at pixel centres (OpenCV's remap
    convention), positions off the image clamped to its edge. Separate from `apply_taps` so a fixed
    geometry is computed once for many images."""
    width, height = size
    x = np.clip(np.nan_to_num(coords[..., 0]), 0, width - 1)
    y = np.clip(np.nan_to_num(coords[..., 1]), 0, height - 1)
    x0, y0 = np.floor(x).astype(np.intp), np.floor(y).astype(np.intp)
    x1, y1 = np.minimum(x0 + 1, width - 1), np.minimum(y0 + 1, height - 1)
    fx, fy = x - x0, y - y0
    indices = np.stack([y0 * width + x0, y0 * width + x1, y1 * width + x0, y1 * width + x1])
    weights = np.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy]).astype(np.float32)
    return indices, weights


def apply_taps(image: np.ndarray, taps: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """float32 [H, W, C] = the taps' weighted sum of a [h, w, C] image's pixels (one channel plane at a
    time: 1-D gathers are several times faster than gathering pixel rows)."""
    indices, weights = taps
    planes = np.ascontiguousarray(np.moveaxis(image, -1, 0)).reshape(image.shape[2], -1)
    out = np.empty((image.shape[2], *indices.shape[1:]), dtype=np.float32)
    for channel, plane in enumerate(planes):
        total = plane.take(indices[0]) * weights[0]
        for k in range(1, 4):
            total += plane.take(indices[k]) * weights[k]
        out[channel] = total
    return np.moveaxis(out, 0, -1)


def sample_bilinear(image: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """float32 [H, W, C] bilinear samples of a [h, w, C] image at `coords` [H, W, 2] (see `bilinear_taps`).
    Plain numpy, so worker processes need not import torch."""
    return apply_taps(image, bilinear_taps(coords, (image.shape[1], image.shape[0])))


def sample_pixel_centres(
    image: np.ndarray,
    coords: np.ndarray,
    taps: tuple[np.ndarray, np.ndarray] | None = None,
    visible: np.ndarray | None = None,
) -> tuple[np.ndarray, int]:
    """`sample_bilinear` rounded to uint8, with pixels off the frame sensor set to 0; also returns how many
    pixels were off the sensor. `taps` and `visible` (`bilinear_taps` and `in_view` of `coords` on the
    image) may be passed in when precomputed."""
    size = (image.shape[1], image.shape[0])
    if visible is None:
        visible = in_view(coords, size)
    if taps is None:
        taps = bilinear_taps(coords, size)
    out = np.clip(np.rint(apply_taps(image, taps)), 0, 255).astype(np.uint8)
    out[~visible] = 0
    return out, int((~visible).sum())


# -- one frame ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameJob:
    image: Path
    disparity: Path | None  # None for the homography
    output: Path


@dataclass(frozen=True)
class FrameResult:
    file: str
    disparity_pixels: int | None
    out_of_view: int
    fallback: str


def _open_png(path: Path, writable: bool = False) -> tuple[np.ndarray, str]:
    """Pixels and PIL mode of an image file; an unreadable file is a WarpError naming it."""
    from PIL import Image

    try:
        with Image.open(path) as handle:
            # writable for the frame image: torch.from_numpy warns on read-only arrays
            return (np.array(handle) if writable else np.asarray(handle)), handle.mode
    except OSError as error:
        raise WarpError(f"{path}: cannot read the image ({error})") from error


def read_frame_image(path: Path, calib: Calibration) -> np.ndarray:
    image, mode = _open_png(path, writable=True)
    if mode != "RGB":
        raise WarpError(f"{path}: expected an 8-bit RGB image, got mode {mode}")
    width, height = calib.frame_size
    if image.shape[:2] != (height, width):
        raise WarpError(
            f"{path}: image is {image.shape[1]}x{image.shape[0]}, expected {width}x{height} "
            f"(camRect1 resolution of {calib.path})"
        )
    return image


def read_disparity(path: Path, calib: Calibration) -> np.ndarray:
    disparity, _ = _open_png(path)
    if disparity.ndim != 2 or disparity.dtype.kind not in "ui" or disparity.dtype.itemsize < 2:
        raise WarpError(
            f"{path}: expected a 16-bit single-channel disparity PNG, got {disparity.dtype} {disparity.shape}"
        )
    width, height = calib.event_size
    if disparity.shape != (height, width):
        raise WarpError(
            f"{path}: disparity map is {disparity.shape[1]}x{disparity.shape[0]}, expected {width}x{height} "
            f"(camRect0 resolution of {calib.path})"
        )
    return disparity.astype(np.uint16)


_HOMOGRAPHY_GEOMETRY: dict[tuple, tuple[np.ndarray, tuple[np.ndarray, np.ndarray], np.ndarray]] = {}
"""The last `_homography_geometry` of this process (one sequence's, as a sequence is warped at a time)."""


def _homography_geometry(
    calib: Calibration, image_size: tuple[int, int]
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], np.ndarray]:
    """`homography_map(calib)`, its `bilinear_taps` and its `in_view` mask on an image of `image_size`
    (W, H), read-only: the same for every frame of a sequence, so computed once per calibration and kept
    (keyed by value, as each worker process receives its own copy of the calibration per frame)."""
    key = (tuple(calib.event_size), tuple(image_size), calib.homography().tobytes())
    geometry = _HOMOGRAPHY_GEOMETRY.get(key)
    if geometry is None:
        coords = homography_map(calib)
        taps = bilinear_taps(coords, image_size)
        visible = in_view(coords, image_size)
        for array in (coords, *taps, visible):
            array.setflags(write=False)
        _HOMOGRAPHY_GEOMETRY.clear()
        geometry = _HOMOGRAPHY_GEOMETRY[key] = (coords, taps, visible)
    return geometry


def _warp(
    image: np.ndarray, calib: Calibration, disparity: np.ndarray | None, cmda_v1: bool
) -> tuple[np.ndarray, DenseMap, int]:
    """`warp_image` plus the number of event pixels whose frame position is off the frame sensor."""
    size = (image.shape[1], image.shape[0])
    taps = visible = None
    if disparity is None:
        coords, taps, visible = _homography_geometry(calib, size)
        dense = DenseMap(coords, None)
    else:
        dense = densify(calib, disparity, cmda_v1=cmda_v1)
    if cmda_v1:
        warped = sample_cmda_v1(image, dense.coords)
        if visible is None:
            visible = in_view(dense.coords, size)
        return warped, dense, int((~visible).sum())
    warped, out_of_view = sample_pixel_centres(image, dense.coords, taps=taps, visible=visible)
    return warped, dense, out_of_view


def warp_image(
    image: np.ndarray, calib: Calibration, disparity: np.ndarray | None, *, cmda_v1: bool = False
) -> tuple[np.ndarray, DenseMap]:
    """One frame image -> its warp image [H_event, W_event, 3] uint8 and the coordinates it sampled
    (disparity None = the homography, whose coordinates are read-only and shared between frames)."""
    warped, dense, _ = _warp(image, calib, disparity, cmda_v1)
    return warped, dense


def warp_file(job: FrameJob, calib: Calibration, cmda_v1: bool) -> FrameResult:
    """Read, warp and atomically write one frame."""
    from PIL import Image

    disparity = read_disparity(job.disparity, calib) if job.disparity is not None else None
    image = read_frame_image(job.image, calib)  # its size is calib.frame_size
    warped, dense, out_of_view = _warp(image, calib, disparity, cmda_v1)
    buffer = io.BytesIO()
    Image.fromarray(warped).save(buffer, format="PNG")
    write_bytes_atomic(job.output, buffer.getvalue())
    return FrameResult(job.output.name, dense.disparity_pixels, out_of_view, dense.fallback)


# -- sequences ----------------------------------------------------------------------------------------------


def find_sequences(path: str | Path) -> list[Path]:
    """PATH is a sequence (holds images/left/rectified/) or a folder of sequences."""
    path = Path(path)
    if not path.is_dir():
        raise WarpError(f"{path}: folder not found")
    if (path / IMAGE_DIR).is_dir():
        return [path]
    found = sorted(p for p in path.iterdir() if (p / IMAGE_DIR).is_dir())
    if not found:
        raise WarpError(f"{path}: neither a DSEC sequence (no {IMAGE_DIR}/) nor a folder of sequences")
    return found


def _frame_files(folder: Path) -> dict[int, Path]:
    return {int(p.stem): p for p in folder.iterdir() if _FRAME_NAME.match(p.name)} if folder.is_dir() else {}


@dataclass
class SequencePlan:
    sequence: Path
    calibration: Calibration
    jobs: list[FrameJob]
    kept: int  # outputs that exist and are kept
    without_disparity: int  # frame images with no disparity map (odd indices in DSEC)


def plan_sequence(sequence: Path, method: str, overwrite: bool) -> SequencePlan:
    """Which frames to warp; checks the calibration and that every disparity map has its image."""
    if method not in METHODS:
        raise WarpError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    calib = Calibration.load(sequence / CALIBRATION_FILE)
    images = _frame_files(sequence / IMAGE_DIR)
    if method == "disparity":
        disparity_dir = sequence / DISPARITY_DIR
        if not disparity_dir.is_dir():
            raise WarpError(
                f"{disparity_dir}: folder not found (DSEC has disparity for its train sequences only; "
                f"use --method homography for the others)"
            )
        maps = _frame_files(disparity_dir)
        for index, path in sorted(maps.items()):
            if index not in images:
                raise WarpError(
                    f"{path}: disparity map without its frame image {sequence / IMAGE_DIR / path.name}"
                )
        pairs = [(images[i], maps[i]) for i in sorted(maps)]
        without = len(set(images) - set(maps))
    else:
        pairs = [(images[i], None) for i in sorted(images)]
        without = 0
    jobs, kept = [], 0
    for image, disparity in pairs:
        output = sequence / OUTPUT_DIR / image.name
        if output.exists() and not overwrite:
            kept += 1
            continue
        jobs.append(FrameJob(image, disparity, output))
    return SequencePlan(sequence, calib, jobs, kept, without)


def _init_worker() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"  # one frame per process: torch (--cmda-v1 only) gets one thread


def _run_jobs(plan: SequencePlan, cmda_v1: bool, workers: int, progress: bool) -> list[FrameResult]:
    from tqdm import tqdm

    show = progress and bool(plan.jobs)
    bar = tqdm(total=len(plan.jobs), desc=plan.sequence.name, unit="frame", disable=not show)
    results: list[FrameResult] = []
    try:
        if workers <= 1 or len(plan.jobs) <= 1:
            for job in plan.jobs:
                results.append(warp_file(job, plan.calibration, cmda_v1))
                bar.update()
        else:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker) as pool:
                futures = [pool.submit(warp_file, job, plan.calibration, cmda_v1) for job in plan.jobs]
                try:
                    for future in futures:
                        results.append(future.result())
                        bar.update()
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
    finally:
        bar.close()
    return results


LOG_FIELDS = ("file", "method", "convention", "disparity_pixels", "out_of_view_pixels", "fallback")


def _write_log(sequence: Path, results: Iterable[FrameResult], method: str, cmda_v1: bool) -> Path:
    """Merge this run's rows into <sequence>/warp_images_log.csv (rows of kept files stay)."""
    path = sequence / LOG_FILE
    rows: dict[str, dict[str, str]] = {}
    if path.is_file():
        with path.open(newline="") as handle:
            rows = {row["file"]: row for row in csv.DictReader(handle) if row.get("file")}
    for result in results:
        rows[result.file] = {
            "file": result.file,
            "method": method,
            "convention": "cmda_v1" if cmda_v1 else "pixel_centre",
            "disparity_pixels": "" if result.disparity_pixels is None else str(result.disparity_pixels),
            "out_of_view_pixels": str(result.out_of_view),
            "fallback": result.fallback,
        }
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=LOG_FIELDS, lineterminator="\n")
    writer.writeheader()
    for name in sorted(rows):
        writer.writerow({key: rows[name].get(key, "") for key in LOG_FIELDS})
    write_bytes_atomic(path, text.getvalue().encode())
    return path


@dataclass
class SequenceReport:
    sequence: Path
    written: list[FrameResult]
    kept: int
    without_disparity: int
    log: Path | None

    def summary(self) -> str:
        parts = [f"{self.sequence.name}: {len(self.written)} written, {self.kept} kept"]
        if self.kept:
            parts[0] += " (already there; --overwrite replaces them)"
        if self.without_disparity:
            parts.append(
                f"{self.without_disparity} frames without disparity map skipped (DSEC has them at even "
                f"indices only; --method homography warps every frame)"
            )
        if self.written:
            counts = [r.out_of_view for r in self.written]
            parts.append(f"out-of-view pixels per frame {min(counts)}..{max(counts)}")
            fallbacks = sum(1 for r in self.written if r.fallback)
            if fallbacks:
                parts.append(f"{fallbacks} frames used the homography fallback (see {LOG_FILE})")
        return "; ".join(parts)


def warp_sequences(
    paths: Sequence[str | Path],
    method: str = "disparity",
    *,
    cmda_v1: bool = False,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> list[SequenceReport]:
    """Warp every sequence found under `paths`. All sequences are planned (and checked) before any work."""
    plans = [plan_sequence(seq, method, overwrite) for path in paths for seq in find_sequences(path)]
    reports = []
    for plan in plans:
        clean_stale_tmp(plan.sequence / OUTPUT_DIR)
        results = _run_jobs(plan, cmda_v1, workers, progress)
        log = _write_log(plan.sequence, results, method, cmda_v1) if results else None
        reports.append(SequenceReport(plan.sequence, results, plan.kept, plan.without_disparity, log))
    return reports


# -- command line -------------------------------------------------------------------------------------------


def add_warp_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `cmda data warp-dsec PATH [PATH ...]`."""
    parser.add_argument(
        "paths", nargs="+", type=Path, metavar="PATH", help="a DSEC sequence or a folder of them"
    )
    parser.add_argument(
        "--method",
        choices=METHODS,
        default="disparity",
        help="disparity: CMDA's depth-aware warp (needs disparity/event/, even frames only); "
        "homography: infinite depth, every frame",
    )
    parser.add_argument(
        "--cmda-v1",
        action="store_true",
        help="reproduce the original generator's pixels (half-pixel offset, half-edge padding, truncation)",
    )
    parser.add_argument("--workers", type=int, default=1, help="processes, parallel over frames")
    parser.add_argument("--overwrite", action="store_true", help="replace existing warp images")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_warp_dsec(args: argparse.Namespace) -> list[SequenceReport]:
    """Execute `cmda data warp-dsec` from parsed arguments."""
    if args.workers < 1:
        raise WarpError(f"--workers must be >= 1, got {args.workers}")
    reports = warp_sequences(
        args.paths,
        args.method,
        cmda_v1=args.cmda_v1,
        workers=args.workers,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    for report in reports:
        print(report.summary())
    return reports
