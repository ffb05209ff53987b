"""The synthetic twin: deterministic, in the real formats, and with learnable structure."""

from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401 - registers the Blosc filter used by events.h5
import numpy as np
import pytest
from PIL import Image

from cmda.data.scenes import MOVING_CLASSES
from cmda.data.synthetic import generate

SMALL = {
    "cityscapes": {"cities": ("aachen",), "images_per_city": 2},
    "dsec_night": {"frames_per_sequence": 10, "label_every": 3},
}


def h5_digest(path: Path) -> str:
    """sha256 over the names and contents of every dataset of an HDF5 file."""
    digest = hashlib.sha256()
    with h5py.File(path, "r") as handle:
        names: list[str] = []
        handle.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        for name in sorted(names):
            digest.update(name.encode() + np.asarray(handle[name][()]).tobytes())
    return digest.hexdigest()


def file_digests(root: Path) -> dict[str, str]:
    """sha256 of every file; HDF5 files are hashed by their datasets (HDF5 headers may hold write times)."""
    digests = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        key = str(path.relative_to(root))
        if path.suffix == ".h5":
            digests[key] = h5_digest(path)
        else:
            digests[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def test_same_seed_gives_identical_files(tmp_path: Path) -> None:
    generate(tmp_path / "a", seed=4, options=SMALL)
    generate(tmp_path / "b", seed=4, options=SMALL)
    generate(tmp_path / "c", seed=5, options=SMALL)
    a, b, c = (file_digests(tmp_path / n) for n in "abc")
    assert len(a) > 50 and a == b
    changed = [k for k in a if a[k] != c.get(k)]
    assert len(changed) > len(a) // 2


def test_real_layout_is_written(synthetic_root: Path) -> None:
    cs = synthetic_root / "cityscapes"
    image = cs / "leftImg8bit/train/aachen/aachen_000000_000000_leftImg8bit.png"
    assert Image.open(image).size == (256, 128) and Image.open(image).mode == "RGB"
    assert Image.open(cs / "leftImg8bit_IC1/train/aachen/aachen_000000_000000_leftImg8bit.png").mode == "L"
    label_ids = np.asarray(Image.open(cs / "gtFine/train/aachen/aachen_000000_000000_gtFine_labelIds.png"))
    assert set(np.unique(label_ids)) <= {1, 7, 8, 11, 17, 20, 21, 22, 23, 24, 26, 27}
    assert (cs / "gtFine/train/aachen/aachen_000000_000000_gtFine_color.png").is_file()
    seq = synthetic_root / "DSEC_Night/zurich_city_synth_c"
    with h5py.File(seq / "events/left/events.h5", "r") as handle:
        assert {"events", "ms_to_idx", "t_offset"} <= set(handle)
        assert handle["events/x"].dtype == np.uint16
        assert handle["events/x"][:].max() < 160 and handle["events/y"][:].max() < 120
    with h5py.File(seq / "events/left/rectify_map.h5", "r") as handle:
        rect = handle["rectify_map"][:]
    assert rect.shape == (120, 160, 2)
    ys, xs = np.mgrid[0:120, 0:160]
    shift = np.hypot(rect[..., 0] - xs, rect[..., 1] - ys)
    assert shift.max() < 6.0 and shift.max() > 0.5  # mild but real distortion
    stamps = np.loadtxt(seq / "images/timestamps.txt", dtype=np.int64)
    assert len(stamps) == 40 and set(np.diff(stamps)) == {50_000}


def test_class_colour_and_texture_predict_the_class(synthetic_root: Path) -> None:
    """A per-pixel nearest-mean classifier on (RGB, local contrast) must beat chance by far."""
    files = sorted((synthetic_root / "cityscapes/leftImg8bit/train").glob("*/*.png"))
    features, labels = [], []
    for path in files:
        image = np.asarray(Image.open(path), dtype=np.float64)
        label_path = str(path).replace("leftImg8bit", "gtFine").replace(".png", "_labelTrainIds.png")
        label = np.asarray(Image.open(label_path))
        contrast = np.abs(np.diff(image.mean(-1), axis=1, append=image.mean(-1)[:, -1:]))
        features.append(np.concatenate([image, contrast[..., None]], -1).reshape(-1, 4))
        labels.append(label.ravel())
    x, y = np.concatenate(features), np.concatenate(labels)
    keep = y != 255
    x, y = x[keep], y[keep]
    train = np.arange(len(y)) % 2 == 0
    classes = np.unique(y)
    assert len(classes) >= 9
    means = np.stack([x[train & (y == c)].mean(0) for c in classes])
    pred = classes[np.argmin(((x[~train][:, None] - means[None]) ** 2).sum(-1), axis=1)]
    assert (pred == y[~train]).mean() > 0.6


def test_events_fire_at_moving_object_boundaries(synthetic_root: Path) -> None:
    from cmda.data.dsec import DSECNightDataset

    dataset = DSECNightDataset(synthetic_root / "DSEC_Night", split="test", test_rows=120)
    near_moving, elsewhere = [], []
    for index in range(len(dataset)):
        sample = dataset[index]
        label = sample["label"].numpy()
        moving = np.isin(label, MOVING_CLASSES)
        edge = np.zeros_like(moving)
        edge[:, 1:] |= moving[:, 1:] != moving[:, :-1]
        edge[:, :-1] |= moving[:, 1:] != moving[:, :-1]
        band = edge.copy()
        for shift in (1, 2, 3):
            band[:, shift:] |= edge[:, :-shift]
            band[:, :-shift] |= edge[:, shift:]
        active = sample["events"][0].numpy() != 0
        near_moving.append(active[band].mean())
        elsewhere.append(active[~band].mean())
    assert np.mean(near_moving) > 5 * np.mean(elsewhere)


def test_frames_too_few_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="frames_per_sequence must be >= 4"):
        generate(tmp_path, options={"dsec_night": {"frames_per_sequence": 2}})


def test_synth_command_writes_a_ready_tree(tmp_path: Path) -> None:
    from cmda.data.commands import main

    options = ["--set", "cityscapes.images_per_city=1", "--set", "dsec_night.frames_per_sequence=8"]
    assert main(["synth", str(tmp_path), "--seed", "2", *options]) == 0
    assert len(list((tmp_path / "cityscapes/leftImg8bit/train").glob("*/*.png"))) == 3
    assert (tmp_path / "cityscapes/sample_class_stats.json").is_file()
    train_list = (tmp_path / "DSEC_Night/night_dataset_warp.txt").read_text().splitlines()
    assert train_list and all(line.startswith("zurich_city_synth_") for line in train_list)
