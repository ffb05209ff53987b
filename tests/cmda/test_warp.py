"""`cmda data warp-dsec`: geometry against closed forms, both sampling conventions, and the file behaviour.

Most tests run at a tenth of DSEC's resolution (events 64x48, frames 144x108) with zurich_city_09's rotations
and baseline; the depth-error figure uses the full-size calibration.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from cmda.data import warp
from cmda.data.warp import Calibration, WarpError

SCALE = 0.1
EVENT_W, EVENT_H = 64, 48
FRAME_W, FRAME_H = 144, 108


def calibration(scale: float = SCALE, *, translation: bool = True) -> Calibration:
    data = warp.reference_calibration(scale)
    if not translation:
        for row in data["extrinsics"]["T_10"][:3]:
            row[3] = 0.0
    return Calibration.from_dict(data, Path("cam_to_cam.yaml"))


def disparity_png(depth: np.ndarray, calib: Calibration, valid: np.ndarray) -> np.ndarray:
    """DSEC's uint16 encoding (value / 256 = disparity, 0 = invalid) of a depth map [m]."""
    disparity = calib.k_event[0, 0] * (1.0 / calib.q_event[3, 2]) / depth
    return np.where(valid, np.round(disparity * 256), 0).astype(np.uint16)


def exact_map(calib: Calibration, encoded: np.ndarray) -> np.ndarray:
    """Frame coordinates of every event pixel from a dense disparity map, no interpolation."""
    ys, xs = np.mgrid[0 : encoded.shape[0], 0 : encoded.shape[1]]
    coords = warp.project_disparity(calib, xs.ravel(), ys.ravel(), encoded.ravel() / 256.0)
    return coords.reshape(*encoded.shape, 2)


def coordinate_image() -> np.ndarray:
    """Frame image whose red channel is x and green channel is y: a warp's pixels tell where they sampled."""
    ys, xs = np.mgrid[0:FRAME_H, 0:FRAME_W]
    return np.stack([xs, ys, np.full_like(xs, 77)], axis=-1).astype(np.uint8)


def sampling_coords() -> np.ndarray:
    """The homography's map moved 2 frame pixels down: its last rows leave the frame, as a near scene's do."""
    return warp.homography_map(calibration()) + np.array([0.0, 2.0])


def lidar_mask(rng: np.random.Generator, every_row: int = 3, keep: float = 0.6) -> np.ndarray:
    """Sparse scan lines with dropouts, nothing in the top quarter (sky)."""
    mask = rng.random((EVENT_H, EVENT_W)) < keep
    mask[np.arange(EVENT_H) % every_row != 0] = False
    mask[: EVENT_H // 4] = False
    return mask


# -- calibration ---------------------------------------------------------------------------------------------


def test_calibration_reads_dsec_fields(tmp_path: Path) -> None:
    path = tmp_path / "cam_to_cam.yaml"
    data = warp.reference_calibration(SCALE)
    path.write_text(yaml.safe_dump(data))
    calib = Calibration.load(path)
    assert calib.event_size == (EVENT_W, EVENT_H) and calib.frame_size == (FRAME_W, FRAME_H)
    np.testing.assert_allclose(calib.k_event[0], [58.33081203392971, 0.0, 33.683414459228516])
    assert calib.t_10[0, 3] == pytest.approx(-0.04410796144531285)
    # without `resolution`, DSEC's sizes are assumed
    for camera in ("camRect0", "camRect1"):
        del data["intrinsics"][camera]["resolution"]
    path.write_text(yaml.safe_dump(data))
    calib = Calibration.load(path)
    assert calib.event_size == (640, 480) and calib.frame_size == (1440, 1080)


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda d: d["extrinsics"].pop("T_10"), "extrinsics.T_10"),
        (lambda d: d["extrinsics"].__setitem__("R_rect1", [[1, 0], [0, 1]]), "extrinsics.R_rect1"),
        (lambda d: d["intrinsics"]["camRect1"].pop("camera_matrix"), "intrinsics.camRect1.camera_matrix"),
        (lambda d: d.pop("disparity_to_depth"), "disparity_to_depth.cams_03"),
    ],
)
def test_calibration_errors_name_file_and_field(tmp_path: Path, edit, field: str) -> None:
    data = warp.reference_calibration(SCALE)
    edit(data)
    path = tmp_path / "cam_to_cam.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(WarpError, match=rf"{path}: .*{field}"):
        Calibration.load(path)


# -- geometry ------------------------------------------------------------------------------------------------


def test_homography_is_the_zero_disparity_limit() -> None:
    calib = calibration()
    xs, ys = np.array([0, 10, 63, 31]), np.array([0, 40, 47, 20])
    expected = warp.apply_homography(calib.homography(), xs, ys)
    np.testing.assert_allclose(warp.project_disparity(calib, xs, ys, np.zeros(4)), expected, atol=1e-12)
    # the smallest disparity DSEC can encode (1/256 px) is ~9 km away: indistinguishable from the homography
    tiny = warp.project_disparity(calib, xs, ys, np.full(4, 1 / 256))
    np.testing.assert_allclose(tiny, expected, atol=1e-3)
    # and a dense map of it warps like the homography, pixel for pixel
    image = np.random.default_rng(0).integers(0, 256, (FRAME_H, FRAME_W, 3), dtype=np.uint8)
    far = np.ones((EVENT_H, EVENT_W), dtype=np.uint16)
    by_disparity, _ = warp.warp_image(image, calib, far)
    by_homography, _ = warp.warp_image(image, calib, None)
    assert np.abs(by_disparity.astype(int) - by_homography).max() <= 1


def test_pure_rotation_makes_both_methods_agree() -> None:
    """Without translation depth does not matter: any disparity map gives the homography."""
    calib = calibration(translation=False)
    rng = np.random.default_rng(1)
    depth = rng.uniform(3.0, 50.0, (EVENT_H, EVENT_W))
    encoded = disparity_png(depth, calib, lidar_mask(rng))
    dense = warp.densify(calib, encoded)
    expected = warp.homography_map(calib)
    valid = encoded > 0
    np.testing.assert_allclose(dense.coords[valid], expected[valid], atol=1e-9)
    # between the scan lines (rows 12..45): piecewise-linear interpolation of a (nearly affine) homography;
    # outside them the corners' linear extrapolation, a fraction of a pixel off
    error = np.abs(dense.coords - expected).max(axis=-1)
    assert error[12:46, 3:-3].max() < 0.01 and error.max() < 0.3


def test_homography_misplaces_points_by_26_over_depth_with_zurich_city_09() -> None:
    """The documented figure: f_event * |t_10| / Z event pixels, at full resolution."""
    calib = calibration(1.0)
    ys, xs = np.mgrid[0:480, 0:640]
    for depth in (5.0, 10.0, 40.0):
        disparity = calib.k_event[0, 0] / calib.q_event[3, 2] / depth
        true = warp.project_disparity(calib, xs.ravel(), ys.ravel(), np.full(xs.size, disparity))
        far = warp.homography_map(calib).reshape(-1, 2)
        error = np.linalg.norm(true - far, axis=1) * calib.k_event[0, 0] / calib.k_frame[0, 0]
        assert np.median(error) * depth == pytest.approx(26.0, abs=0.6)
        assert 21.0 < error.min() * depth and error.max() * depth < 31.0  # t_z adds a term growing with x


def test_two_plane_scene_from_sparse_lidar_like_disparity() -> None:
    """A near wall (4 m) in front of a ground plane, disparity on sparse scan lines: the densified map is
    close to the exact one except at the wall's edge, where no interpolation can know the depth."""
    calib = calibration()
    ys, xs = np.mgrid[0:EVENT_H, 0:EVENT_W]
    ground = 1.0 / (1 / 40 + (1 / 5 - 1 / 40) * ys / (EVENT_H - 1))
    wall = xs < 20
    depth = np.where(wall, 4.0, ground)
    encoded = disparity_png(depth, calib, lidar_mask(np.random.default_rng(2)))
    truth = exact_map(calib, disparity_png(depth, calib, np.ones_like(wall)))
    dense = warp.densify(calib, encoded)
    assert dense.fallback == "" and dense.disparity_pixels == (encoded > 0).sum()
    error = np.linalg.norm(dense.coords - truth, axis=-1)
    away_from_edge = (np.abs(xs - 19.5) > 3) & (ys >= EVENT_H // 4)
    assert np.percentile(error[away_from_edge], 95) < 0.1
    homography_error = np.linalg.norm(warp.homography_map(calib) - truth, axis=-1)
    assert homography_error[wall].mean() > 10 * error[wall & away_from_edge].mean()


def test_cmda_v1_and_fast_densification_agree_on_a_smooth_scene() -> None:
    calib = calibration()
    ys, xs = np.mgrid[0:EVENT_H, 0:EVENT_W]
    depth = 1.0 / (1 / 40 + (1 / 6 - 1 / 40) * ys / (EVENT_H - 1))
    encoded = disparity_png(depth, calib, lidar_mask(np.random.default_rng(3), every_row=2))
    fast = warp.densify(calib, encoded)
    v1 = warp.densify(calib, encoded, cmda_v1=True)
    assert np.isfinite(fast.coords).all()
    both = np.isfinite(v1.coords).all(axis=-1)
    assert both.mean() > 0.99
    difference = np.abs(fast.coords[both] - v1.coords[both]).max(axis=-1)
    # equal where a pixel has disparity; elsewhere two triangulations of co-circular lattice points (and the
    # corner triangles) may differ, by no more than the interpolation error of a smooth map
    assert np.median(difference) < 1e-9 and difference.max() < 0.01


@pytest.mark.parametrize("cmda_v1", [False, True])
def test_corners_are_extrapolated_along_the_diagonals(cmda_v1: bool) -> None:
    """Disparity only in the centre: each corner continues the line through the 2nd and 3rd diagonal
    samples (steps of 10 px), and no pixel is left without a value."""
    calib = calibration()
    ys, xs = np.mgrid[0:EVENT_H, 0:EVENT_W]
    depth = 1.0 / (1 / 30 + (1 / 5 - 1 / 30) * ys / (EVENT_H - 1))
    centre = (xs >= 20) & (xs <= 43) & (ys >= 12) & (ys <= 35)
    encoded = disparity_png(depth, calib, centre)
    dense = warp.densify(calib, encoded, cmda_v1=cmda_v1)
    exact = exact_map(calib, encoded)
    assert dense.fallback == ""
    assert np.isfinite(dense.coords[:, :, 0]).mean() > 0.998  # scipy's point location may miss a pixel
    diagonals = [((0, 0), (1, 1)), ((0, 47), (1, -1)), ((63, 47), (-1, -1)), ((63, 0), (-1, 1))]
    for (cx, cy), (dx, dy) in diagonals:
        first = exact[cy + 20 * dy, cx + 20 * dx]
        second = exact[cy + 30 * dy, cx + 30 * dx]
        np.testing.assert_allclose(dense.coords[cy, cx], first - (second - first) * 2, atol=1e-9)
    if not cmda_v1:
        assert np.isfinite(dense.coords).all()


def test_densification_falls_back_to_the_homography() -> None:
    calib = calibration()
    ys, xs = np.mgrid[0:EVENT_H, 0:EVENT_W]
    depth = np.full((EVENT_H, EVENT_W), 10.0)
    two_points = disparity_png(depth, calib, (ys == 30) & ((xs == 5) | (xs == 40)))
    dense = warp.densify(calib, two_points)
    assert dense.fallback == "homography" and dense.disparity_pixels == 2
    np.testing.assert_array_equal(dense.coords, warp.homography_map(calib))
    # a block in the top-right: only that corner's diagonal reaches it
    block = disparity_png(depth, calib, (xs >= 50) & (ys <= 10))
    dense = warp.densify(calib, block)
    assert dense.fallback == "corners:3" and np.isfinite(dense.coords).all()
    homography = warp.homography_map(calib)
    for cx, cy in ((0, 0), (0, 47), (63, 47)):
        np.testing.assert_allclose(dense.coords[cy, cx], homography[cy, cx])


# -- sampling ------------------------------------------------------------------------------------------------


def test_pixel_centre_sampling_reads_where_it_should() -> None:
    coords = sampling_coords()
    image = coordinate_image()
    exact = warp.apply_taps(image, warp.bilinear_taps(coords, (FRAME_W, FRAME_H)))  # before the rounding
    inside = (coords[..., 0] <= FRAME_W - 1) & (coords[..., 1] <= FRAME_H - 1) & (coords >= 0).all(-1)
    np.testing.assert_allclose(exact[..., :2][inside], coords[inside], atol=1e-4)  # float32 weights
    warped, off_sensor = warp.sample_pixel_centres(image, coords)
    visible = warp.in_view(coords, (FRAME_W, FRAME_H))
    assert off_sensor == (~visible).sum() > 0  # the frame camera does not see the bottom rows
    assert visible[: EVENT_H // 2].all()
    np.testing.assert_array_equal(warped[..., :2][inside], np.rint(coords[inside]))
    assert (warped[~visible] == 0).all() and (warped[visible][:, 2] == 77).all()


def test_cmda_v1_samples_half_a_pixel_up_left_and_truncates() -> None:
    coords = sampling_coords()
    image = coordinate_image()
    v1 = warp.sample_cmda_v1(image, coords).astype(np.float64)
    shifted = coords - 0.5
    interior = (shifted >= 0).all(-1) & (shifted[..., 0] <= FRAME_W - 1) & (shifted[..., 1] <= FRAME_H - 1)
    fraction = shifted - np.floor(shifted)
    clear = interior & ((fraction > 1e-6) & (fraction < 1 - 1e-6)).all(-1)
    assert clear.sum() > 0.8 * coords[..., 0].size
    np.testing.assert_array_equal(v1[..., :2][clear], np.floor(shifted[clear]))
    # a plain mid-grey frame shows the padding: out of view (bottom rows), half the edge value
    grey = np.full((FRAME_H, FRAME_W, 3), 201, dtype=np.uint8)
    below = coords[..., 1] > FRAME_H - 0.5
    middle = below & (coords[..., 0] > 1) & (coords[..., 0] < FRAME_W - 2)
    assert middle.any()
    np.testing.assert_array_equal(warp.sample_cmda_v1(grey, coords)[middle], 100)  # 201 / 2, truncated
    np.testing.assert_array_equal(warp.sample_pixel_centres(grey, coords)[0][below], 0)


# -- files and command ---------------------------------------------------------------------------------------


def write_sequence(folder: Path, frames: int = 6, disparity_frames: tuple[int, ...] = (0, 2, 4)) -> Path:
    """A DSEC sequence in the download layout at a tenth of the resolution: a ground plane 3-40 m away (near
    enough that the frame camera misses the bottom row)."""
    data = warp.reference_calibration(SCALE)
    (folder / "calibration").mkdir(parents=True)
    (folder / "calibration/cam_to_cam.yaml").write_text(yaml.safe_dump(data))
    (folder / "images/left/rectified").mkdir(parents=True)
    (folder / "disparity/event").mkdir(parents=True)
    rng = np.random.default_rng(5)
    for index in range(frames):
        image = rng.integers(0, 256, (FRAME_H, FRAME_W, 3), dtype=np.uint8)
        Image.fromarray(image).save(folder / f"images/left/rectified/{index:06d}.png")
    calib = Calibration.from_dict(data, Path("cam_to_cam.yaml"))
    ys = np.mgrid[0:EVENT_H, 0:EVENT_W][0]
    depth = 1.0 / (1 / 40 + (1 / 3 - 1 / 40) * ys / (EVENT_H - 1))
    encoded = disparity_png(depth, calib, lidar_mask(rng, every_row=1))
    for index in disparity_frames:
        Image.fromarray(encoded).save(folder / f"disparity/event/{index:06d}.png")
    return folder


def outputs(sequence: Path) -> list[str]:
    return sorted(p.name for p in (sequence / "warp_images").iterdir())


def test_warp_dsec_files_even_indices_sizes_and_kept_outputs(tmp_path: Path) -> None:
    root = tmp_path / "DSEC"
    sequence = write_sequence(root / "zurich_city_10_a")
    write_sequence(root / "zurich_city_10_b", frames=2, disparity_frames=(0,))
    reports = warp.warp_sequences([root], "disparity", progress=False)
    assert [r.sequence.name for r in reports] == ["zurich_city_10_a", "zurich_city_10_b"]
    assert outputs(sequence) == ["000000.png", "000002.png", "000004.png"]
    assert reports[0].without_disparity == 3
    with Image.open(sequence / "warp_images/000002.png") as image:
        assert image.size == (EVENT_W, EVENT_H) and image.mode == "RGB"
    with (sequence / warp.LOG_FILE).open() as handle:
        log = list(csv.DictReader(handle))
    assert [row["file"] for row in log] == ["000000.png", "000002.png", "000004.png"]
    assert all(int(row["out_of_view_pixels"]) == r.out_of_view > 0 for row, r in zip(log, reports[0].written))
    assert {row["method"] for row in log} == {"disparity"} and {row["convention"] for row in log} == {
        "pixel_centre"
    }

    before = {name: (sequence / "warp_images" / name).stat().st_mtime_ns for name in outputs(sequence)}
    again = warp.warp_sequences([sequence], "disparity", progress=False)
    assert again[0].kept == 3 and again[0].written == []
    assert {n: (sequence / "warp_images" / n).stat().st_mtime_ns for n in outputs(sequence)} == before

    # homography: every frame; only the missing odd ones are new without --overwrite
    (sequence / "warp_images" / ".tmp_000001.png.abc").write_bytes(b"left by a killed run")
    homography = warp.warp_sequences([sequence], "homography", progress=False)
    assert [r.file for r in homography[0].written] == ["000001.png", "000003.png", "000005.png"]
    assert outputs(sequence) == [f"{i:06d}.png" for i in range(6)]
    with (sequence / warp.LOG_FILE).open() as handle:
        methods = {row["file"]: row["method"] for row in csv.DictReader(handle)}
    assert methods["000000.png"] == "disparity" and methods["000001.png"] == "homography"

    other = root / "zurich_city_10_b"
    old = (other / "warp_images/000000.png").read_bytes()
    rerun = warp.warp_sequences([other], "disparity", cmda_v1=True, overwrite=True, progress=False)
    assert [r.file for r in rerun[0].written] == ["000000.png"]
    assert (other / "warp_images/000000.png").read_bytes() != old


def test_bad_inputs_are_clear_errors_naming_the_file(tmp_path: Path, capsys) -> None:
    from cmda.cli import main

    sequence = write_sequence(tmp_path / "seq")
    (sequence / "images/left/rectified/000004.png").unlink()
    with pytest.raises(WarpError, match=r"disparity/event/000004.png: disparity map without its frame image"):
        warp.warp_sequences([sequence], progress=False)

    sequence = write_sequence(tmp_path / "small")
    Image.new("RGB", (FRAME_W, FRAME_H - 1)).save(sequence / "images/left/rectified/000002.png")
    with pytest.raises(WarpError, match=r"rectified/000002.png: image is 144x107, expected 144x108"):
        warp.warp_sequences([sequence], progress=False)
    assert not (sequence / "warp_images/000002.png").exists()

    sequence = write_sequence(tmp_path / "disparity")
    Image.fromarray(np.zeros((EVENT_H, EVENT_W + 2), np.uint16)).save(sequence / "disparity/event/000000.png")
    with pytest.raises(WarpError, match=r"event/000000.png: disparity map is 66x48, expected 64x48"):
        warp.warp_sequences([sequence], progress=False)
    (sequence / "disparity/event/000000.png").write_bytes(b"not a png")
    with pytest.raises(WarpError, match=r"event/000000.png: cannot read the image"):
        warp.warp_sequences([sequence], progress=False)

    sequence = write_sequence(tmp_path / "no_disparity")
    shutil.rmtree(sequence / "disparity")
    with pytest.raises(WarpError, match=r"disparity/event: folder not found .*--method homography"):
        warp.warp_sequences([sequence], progress=False)
    assert len(warp.warp_sequences([sequence], "homography", progress=False)[0].written) == 6

    with pytest.raises(WarpError, match=r"neither a DSEC sequence"):
        warp.warp_sequences([tmp_path / "no_disparity" / "images"], progress=False)

    sequence = write_sequence(tmp_path / "calib")
    data = warp.reference_calibration(SCALE)
    del data["intrinsics"]["camRect0"]["camera_matrix"]
    (sequence / "calibration/cam_to_cam.yaml").write_text(yaml.safe_dump(data))
    assert main(["data", "warp-dsec", str(sequence), "--no-progress"]) == 2
    message = capsys.readouterr().err
    calibration_file = sequence / "calibration/cam_to_cam.yaml"
    assert f"{calibration_file}: missing field intrinsics.camRect0.camera_matrix" in message


def test_warp_dsec_on_the_synthetic_twin(synthetic_root: Path, tmp_path: Path, capsys) -> None:
    """The twin's frames are a plane seen by the frame camera; warping them back with its disparity
    recovers the event view (the twin's warp_images) better than the homography does."""
    from cmda.cli import main
    from cmda.data.dsec import build_index_files
    from cmda.data.dsec_twin import DSEC_SEQUENCES

    root = tmp_path / "DSEC_Night"
    shutil.copytree(synthetic_root / "DSEC_Night" / DSEC_SEQUENCES[1], root / "zurich_city_10_a")
    sequence = root / "zurich_city_10_a"
    event_view = sequence / "event_view"
    (sequence / "warp_images").rename(event_view)
    for folder in ("images/left/rectified", "disparity/event"):  # keep it quick: frames 0..9
        for path in (sequence / folder).glob("*.png"):
            if int(path.stem) >= 10:
                path.unlink()
    assert main(["data", "warp-dsec", str(root), "--workers", "2", "--no-progress"]) == 0
    assert "zurich_city_10_a: 5 written, 0 kept" in capsys.readouterr().out
    assert outputs(sequence) == [f"{i:06d}.png" for i in range(0, 10, 2)]

    calib = Calibration.load(sequence / warp.CALIBRATION_FILE)
    image = warp.read_frame_image(sequence / "images/left/rectified/000006.png", calib)
    disparity = warp.read_disparity(sequence / "disparity/event/000006.png", calib)
    by_disparity, dense = warp.warp_image(image, calib, disparity)
    with Image.open(sequence / "warp_images/000006.png") as stored:  # written by a worker process
        np.testing.assert_array_equal(np.asarray(stored), by_disparity)
    by_homography, _ = warp.warp_image(image, calib, None)
    truth = np.asarray(Image.open(event_view / "000006.png")).astype(int)
    seen = warp.in_view(dense.coords, calib.frame_size)
    disparity_error = np.abs(by_disparity.astype(int) - truth)[seen].mean()
    homography_error = np.abs(by_homography.astype(int) - truth)[seen].mean()
    assert disparity_error < 1.6 and disparity_error < 0.6 * homography_error

    index = build_index_files(root)  # then `cmda data index-dsec` lists the new sequence
    listed = [line.split()[0] for line in (index.train.read_text() + index.test.read_text()).splitlines()]
    assert listed and all(int(Path(name).stem) % 2 == 0 for name in listed)
