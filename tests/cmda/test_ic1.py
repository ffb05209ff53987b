"""`cmda data make-ic1`: the original's image-change math on a tiny tree built here, every image, resumable,
workers, and a missing previous frame named before anything is written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cmda.data.commands import main
from cmda.data.ic1 import image_change

SIZE = (24, 16)  # W, H


def reference_ic1(now_rgb: np.ndarray, before_rgb: np.ndarray) -> np.ndarray:
    """The original's get_image_change written from its formula: grey 'L' images, d = log(I_t + 50) -
    log(I_t-1 + 50), |d| <= 0.1 -> 0, each sign clipped at 0.8 and divided by its own largest magnitude
    (min-max to [0, 1] and [-1, 0] when unchanged pixels exist), 128 + 127.5 * value, rounded."""
    grey = [np.asarray(Image.fromarray(x).convert("L"), dtype=np.float64) for x in (now_rgb, before_rgb)]
    d = np.log(grey[0] + 50) - np.log(grey[1] + 50)
    d[np.abs(d) <= 0.1] = 0
    up, down = np.clip(d, 0, 0.8), np.clip(d, -0.8, 0)
    value = up / up.max() + down / -down.min()
    return np.around((value + 1) / 2 * 255).astype(np.uint8)


def pair(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame t-1 and t: random colours, a third of the pixels unchanged, changes of both signs."""
    rng = np.random.default_rng(seed)
    before = rng.integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
    now = rng.integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
    keep = rng.random((SIZE[1], SIZE[0])) < 1 / 3
    now[keep] = before[keep]
    return now, before


def make_tree(root: Path, names: dict[str, int]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """leftImg8bit/train/<city>/<name> (frame t) and leftImg8bit_sequence/train/<city>/<frame t-1>."""
    frames = {}
    for seed, (name, frame) in enumerate(names.items()):
        city = name.split("_")[0]
        now, before = pair(seed)
        stem = f"{name}_{frame:06d}_leftImg8bit.png"
        for folder, image, file in (
            ("leftImg8bit", now, stem),
            ("leftImg8bit_sequence", before, f"{name}_{frame - 1:06d}_leftImg8bit.png"),
        ):
            path = root / folder / "train" / city / file
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(path)
        frames[stem] = (now, before)
    return frames


NAMES = {"aachen_000001": 19, "aachen_000002": 19, "frankfurt_000000": 294}


def test_every_image_matches_the_original_formula(tmp_path, capsys):
    frames = make_tree(tmp_path, NAMES)
    assert main(["make-ic1", str(tmp_path), "--no-progress"]) == 0
    assert "3 written, 0 kept" in capsys.readouterr().out
    for stem, (now, before) in frames.items():
        written = Image.open(tmp_path / "leftImg8bit_IC1" / "train" / stem.split("_")[0] / stem)
        assert written.mode == "L" and written.size == SIZE
        np.testing.assert_array_equal(np.asarray(written), reference_ic1(now, before))


def test_no_change_is_128_and_a_sign_that_never_occurs_stays_neutral():
    before = np.full((4, 6), 100, dtype=np.uint8)
    now = before.copy()
    now[1, 2] = 200  # only brighter pixels: the darker half is empty
    result = image_change(now, before)
    assert result[1, 2] == 255 and (np.delete(result.ravel(), 1 * 6 + 2) == 128).all()
    assert (image_change(before, before) == 128).all()


def test_resumes_skips_existing_and_overwrites_on_request(tmp_path, capsys):
    make_tree(tmp_path, NAMES)
    out = tmp_path / "leftImg8bit_IC1" / "train" / "aachen" / "aachen_000001_000019_leftImg8bit.png"
    assert main(["make-ic1", str(tmp_path), "--no-progress"]) == 0
    Image.fromarray(np.zeros((SIZE[1], SIZE[0]), np.uint8)).save(out)
    (out.parent / ".tmp_aachen_000002_000019_leftImg8bit.png.x").write_bytes(b"killed")  # a killed writer
    capsys.readouterr()
    assert main(["make-ic1", str(tmp_path), "--no-progress"]) == 0
    assert "0 written, 3 kept (already there; --overwrite replaces them)" in capsys.readouterr().out
    assert not np.asarray(Image.open(out)).any()
    assert main(["make-ic1", str(tmp_path), "--no-progress", "--overwrite", "--workers", "2"]) == 0
    assert "3 written, 0 kept" in capsys.readouterr().out
    assert np.asarray(Image.open(out)).any() and not list(out.parent.glob(".tmp_*"))


def test_a_missing_previous_frame_is_named_and_nothing_is_written(tmp_path, capsys):
    make_tree(tmp_path, NAMES)
    gone = tmp_path / "leftImg8bit_sequence/train/frankfurt/frankfurt_000000_000293_leftImg8bit.png"
    gone.unlink()
    assert main(["make-ic1", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {gone}: the frame before frankfurt_000000_000294_leftImg8bit.png")
    assert "1 of 3 previous frames are missing" in err and "--list-needed" in err
    assert not (tmp_path / "leftImg8bit_IC1").exists()


def test_list_needed_names_the_previous_frames_inside_the_sequence_archive(tmp_path, capsys):
    make_tree(tmp_path, NAMES)
    assert main(["make-ic1", str(tmp_path), "--list-needed"]) == 0
    assert capsys.readouterr().out.split() == [
        "leftImg8bit_sequence/train/aachen/aachen_000001_000018_leftImg8bit.png",
        "leftImg8bit_sequence/train/aachen/aachen_000002_000018_leftImg8bit.png",
        "leftImg8bit_sequence/train/frankfurt/frankfurt_000000_000293_leftImg8bit.png",
    ]
    assert not (tmp_path / "leftImg8bit_IC1").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--split", "val"], "leftImg8bit/val: Cityscapes image folder not found"),
        (["--workers", "0"], "--workers must be >= 1"),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, args, expected):
    make_tree(tmp_path, {"aachen_000001": 19})
    assert main(["make-ic1", str(tmp_path), *args]) == 2
    assert expected in capsys.readouterr().err
