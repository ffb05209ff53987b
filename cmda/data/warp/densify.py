"""Dense frame coordinates for every event pixel: the disparity projection, its densification over the
whole grid, and the homography (infinite depth) it falls back on.

The package docstring (cmda/data/warp/__init__.py) says how the two methods and the two densification
passes relate to the original generator; docs/ARCHITECTURE.md ("cmda.data") has the contracts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cmda.data.warp.calibration import Calibration

DIAGONAL_STEP = 10  # event pixels between samples when extrapolating a corner along its diagonal
DISPARITY_SCALE = 256.0  # DSEC: disparity in pixels = uint16 value / 256


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
