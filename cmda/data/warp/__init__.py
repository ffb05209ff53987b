"""`cmda data warp-dsec`: DSEC's left frame images warped into the rectified left event camera.

Modules, one job each: `calibration` (cam_to_cam.yaml), `densify` (event pixel -> frame pixel, dense),
`sample` (frame image at those coordinates), `run` (frames, files, worker processes, the command line).
This package re-exports their public names, so `from cmda.data import warp; warp.densify(...)` works.

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
  depth Z are misplaced by about f_event · |t_10| / Z event pixels (README.md gives zurich_city_09's figure).

Two sampling conventions (see docs/ARCHITECTURE.md, "Deliberate deviations from the original"):
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
  incremental triangulation and rasterises only the pixels without disparity (faster than `cmda_v1`:
  benchmarks/README.md, "DSEC warp images").
"""

from cmda.data.warp.calibration import (
    CALIBRATION_FILE,
    DSEC_EVENT_SIZE,
    DSEC_FRAME_SIZE,
    EVENT_BASELINE_M,
    ZURICH_CITY_09,
    Calibration,
    WarpError,
    reference_calibration,
)
from cmda.data.warp.densify import (
    DIAGONAL_STEP,
    DISPARITY_SCALE,
    DenseMap,
    apply_homography,
    densify,
    extrapolate_corner,
    homography_map,
    project_disparity,
)
from cmda.data.warp.run import (
    LOG_FIELDS,
    LOG_FILE,
    METHODS,
    FrameJob,
    FrameResult,
    SequencePlan,
    SequenceReport,
    add_warp_arguments,
    find_sequences,
    plan_sequence,
    read_disparity,
    read_frame_image,
    run_warp_dsec,
    warp_file,
    warp_image,
    warp_sequences,
)
from cmda.data.warp.sample import apply_taps, bilinear_taps, in_view, sample_cmda_v1, sample_pixel_centres

__all__ = [
    "CALIBRATION_FILE",
    "DIAGONAL_STEP",
    "DISPARITY_SCALE",
    "DSEC_EVENT_SIZE",
    "DSEC_FRAME_SIZE",
    "EVENT_BASELINE_M",
    "LOG_FIELDS",
    "LOG_FILE",
    "METHODS",
    "ZURICH_CITY_09",
    "Calibration",
    "DenseMap",
    "FrameJob",
    "FrameResult",
    "SequencePlan",
    "SequenceReport",
    "WarpError",
    "add_warp_arguments",
    "apply_homography",
    "apply_taps",
    "bilinear_taps",
    "densify",
    "extrapolate_corner",
    "find_sequences",
    "homography_map",
    "in_view",
    "plan_sequence",
    "project_disparity",
    "read_disparity",
    "read_frame_image",
    "reference_calibration",
    "run_warp_dsec",
    "sample_cmda_v1",
    "sample_pixel_centres",
    "warp_file",
    "warp_image",
    "warp_sequences",
]
