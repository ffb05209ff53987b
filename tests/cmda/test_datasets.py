"""Loaders, index files, rare class sampling and aligned augmentation (on the session's synthetic twin)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401 - registers the Blosc filter used by events.h5
import numpy as np
import pytest
import torch
from PIL import Image

from cmda.data.cityscapes import CityscapesDataset, label_ids_to_train_ids, prepare_cityscapes
from cmda.data.commands import main as data_main
from cmda.data.dark_zurich import DarkZurichDataset
from cmda.data.dsec import DSECNightDataset
from cmda.data.dsec_layout import labelled_frames
from cmda.data.errors import DataError
from cmda.data.paired import SourceTargetDataset
from cmda.data.rcs import RareClassSampler, class_probabilities, redraw_crop_for_class
from cmda.data.transforms import AlignedAugment, compute_isr, label_crop_is_balanced, resize, to_uint8

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def unnormalize(image: torch.Tensor) -> torch.Tensor:
    return ((image * STD + MEAN) * 255.0).round()


def locate_crop(full: torch.Tensor, crop: torch.Tensor) -> list[tuple[int, int, bool]]:
    """All (top, left, flip) placements of `crop` inside `full` (both [C,H,W], exact match)."""
    ch, cw = crop.shape[-2:]
    hits = []
    for flip in (False, True):
        view = torch.flip(crop, dims=(-1,)) if flip else crop
        for top in range(full.shape[-2] - ch + 1):
            for left in range(full.shape[-1] - cw + 1):
                if torch.equal(full[:, top : top + ch, left : left + cw], view):
                    hits.append((top, left, flip))
    return hits


# --- transforms ----------------------------------------------------------------------------------------


def test_aligned_augment_keeps_modalities_aligned() -> None:
    height, width = 20, 30
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    tensors = {"image": torch.stack([xs, ys]).float(), "label": ys * width + xs}
    augment = AlignedAugment((12, 8), flip_prob=0.5)
    flips = set()
    for seed in range(12):
        params = augment.draw(np.random.default_rng(seed), height, width)
        out = augment.apply(tensors, params)
        assert out["image"].shape == (2, 8, 12) and out["label"].shape == (8, 12)
        assert torch.equal(out["label"], out["image"][1].long() * width + out["image"][0].long())
        expected_x = torch.arange(params.left, params.left + 12)
        assert torch.equal(out["image"][0, 0].long(), expected_x.flip(0) if params.flip else expected_x)
        assert out["image"][1, 0, 0] == params.top
        flips.add(params.flip)
    assert flips == {False, True}


def test_aligned_augment_resize_uses_nearest_for_labels() -> None:
    label = torch.zeros(8, 8, dtype=torch.int64)
    label[:, 4:] = 7
    augment = AlignedAugment(None, flip_prob=0.0, resize_wh=(16, 16))
    out = augment.apply(
        {"image": label.float()[None], "label": label}, augment.draw(np.random.default_rng(0), 8, 8)
    )
    assert set(out["label"].unique().tolist()) == {0, 7}
    assert out["image"].shape == (1, 16, 16) and 0 < out["image"][0, 0, 8] < 7  # bilinear blends the edge


@pytest.mark.parametrize(
    ("size_in", "size_out"),
    [((2048, 1024), (1024, 512)), ((1920, 1080), (960, 540)), ((97, 61), (48, 30)), ((64, 36), (33, 17)),
     ((400, 400), (512, 512)), ((31, 45), (62, 89)), ((100, 100), (100, 37))],
)
def test_labels_are_resampled_exactly_as_pil_nearest(size_in, size_out) -> None:
    """The original resizes labels with PIL's NEAREST (Cityscapes 2048x1024 -> 1024x512, Dark Zurich's
    ground truth 1920x1080 -> 960x540): the same pixels, odd and even sizes, down and up."""
    (w, h), (out_w, out_h) = size_in, size_out
    label = np.random.default_rng(w * h).integers(0, 19, (h, w), dtype=np.uint8)
    label[np.random.default_rng(1).random((h, w)) < 0.1] = 255
    expected = np.asarray(Image.fromarray(label).resize((out_w, out_h), Image.NEAREST))
    out = resize(torch.from_numpy(label.astype(np.int64)), (out_w, out_h), is_label=True)
    assert out.dtype == torch.int64 and torch.equal(out, torch.from_numpy(expected.astype(np.int64)))
    # a 2x downscale keeps the odd pixels of each 2x2 block (torch's "nearest" would keep the even ones)
    if (w, h) == (2 * out_w, 2 * out_h):
        assert torch.equal(out, torch.from_numpy(label[1::2, 1::2].astype(np.int64)))


def test_cat_max_ratio_redraws_unbalanced_crops() -> None:
    label = torch.zeros(40, 40, dtype=torch.int64)
    label[:, 30:] = 1  # only crops reaching x >= 30 show two classes
    assert not label_crop_is_balanced(label[:, :20], 0.75, 255)
    augment = AlignedAugment((20, 20), flip_prob=0.0, cat_max_ratio=0.75)
    lefts = [augment.draw(np.random.default_rng(s), 40, 40, label=label).left for s in range(30)]
    assert np.mean([left >= 16 for left in lefts]) > 0.9  # x >= 16 puts more than 25% of class 1 in the crop


def test_crop_larger_than_input_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="crop 50x10"):
        AlignedAugment((50, 10)).draw(np.random.default_rng(0), 20, 30)


# --- rare class sampling -------------------------------------------------------------------------------


STATS = [
    {"0": 9000, "13": 500, "file": "a_gtFine_labelTrainIds.png"},
    {"0": 8000, "11": 4000, "file": "b_gtFine_labelTrainIds.png"},
    {"0": 7000, "13": 3500, "11": 100, "file": "c_gtFine_labelTrainIds.png"},
]


def test_rcs_probabilities_follow_the_formula() -> None:
    classes, probs = class_probabilities(STATS, temperature=0.1)
    totals = np.array([24000, 4100, 4000], dtype=float)  # classes 0, 11, 13
    freq = totals / totals.sum()
    expected = np.exp((1 - freq) / 0.1) / np.exp((1 - freq) / 0.1).sum()
    assert classes == [0, 11, 13]
    np.testing.assert_allclose(probs, expected, rtol=1e-12)


def test_rcs_sampling_frequencies_and_min_pixels() -> None:
    sampler = RareClassSampler(STATS, temperature=0.1, min_pixels=3000, seed=0)
    draws = [sampler.sample() for _ in range(20000)]
    classes = np.array([c for c, _ in draws])
    for cls, prob in zip(sampler.classes, sampler.probabilities):
        assert abs(np.mean(classes == cls) - prob) < 0.015
    files_13 = {f for c, f in draws if c == 13}
    assert files_13 == {"c_gtFine_labelTrainIds.png"}  # a has only 500 pixels of car
    assert {f for c, f in draws if c == 11} == {"b_gtFine_labelTrainIds.png"}


def test_rcs_thresholds_scale_with_label_and_resize_size() -> None:
    sampler = RareClassSampler(STATS, min_pixels=3000, label_wh=(256, 128), resize_wh=(256, 128))
    assert sampler.file_min_pixels == pytest.approx(3000 / 64)
    assert sampler.min_crop_pixels == pytest.approx(1500 / 16)
    assert "a_gtFine_labelTrainIds.png" in sampler.files_with_class[13]


def test_rcs_stats_file_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="prepare-cityscapes"):
        RareClassSampler(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"0": 1}')
    with pytest.raises(ValueError, match="bad.json: expected a JSON list"):
        RareClassSampler(bad)


def test_redraw_crop_for_class_stops_at_a_crop_with_the_class() -> None:
    label = torch.zeros(10, 100, dtype=torch.int64)
    label[:, 90:] = 5
    rng = np.random.default_rng(0)
    augment = AlignedAugment((10, 10), flip_prob=0.0)
    params = redraw_crop_for_class(
        lambda: augment.draw(rng, 10, 100), lambda p: label[:, p.left : p.left + 10], 5, 20, tries=200
    )
    assert params.left > 82


# --- Cityscapes ----------------------------------------------------------------------------------------


def test_prepare_cityscapes_outputs(synthetic_root: Path) -> None:
    root = synthetic_root / "cityscapes"
    stats = json.loads((root / "sample_class_stats.json").read_text())
    per_file = json.loads((root / "sample_class_stats_dict.json").read_text())
    with_class = json.loads((root / "samples_with_class.json").read_text())
    assert len(stats) == 24 and all("/" not in entry["file"] for entry in stats)
    entry = stats[0]
    label_file = next(root.glob(f"gtFine/train/*/{entry['file']}"))
    train_ids = np.asarray(Image.open(label_file))
    label_ids = np.asarray(Image.open(str(label_file).replace("labelTrainIds", "labelIds")))
    np.testing.assert_array_equal(train_ids, label_ids_to_train_ids(label_ids))
    assert (train_ids[-1] == 255).all()  # the ego-vehicle rows (labelId 1) are ignored
    counts = np.bincount(train_ids.ravel(), minlength=256)
    assert {k: v for k, v in entry.items() if k != "file"} == {
        str(c): int(counts[c]) for c in range(19) if counts[c]
    }
    assert per_file[entry["file"]] == {k: v for k, v in entry.items() if k != "file"}
    assert [entry["file"], entry["0"]] in with_class["0"]
    assert "14" in with_class  # truck exists in the source domain


def test_label_id_lookup_table() -> None:
    ids = np.array([[7, 8, 11, 26, 33], [0, 1, 6, 34, 255]])
    np.testing.assert_array_equal(label_ids_to_train_ids(ids), [[0, 1, 2, 13, 18], [255] * 5])


def test_cityscapes_round_trip(synthetic_root: Path) -> None:
    dataset = CityscapesDataset(synthetic_root / "cityscapes", resize=(256, 128), crop=(64, 64), seed=3)
    assert len(dataset) == 24
    full = dataset.load(0)
    directions = set()
    for index in range(6):
        sample = dataset[index]
        assert sample["image"].shape == (3, 64, 64) and sample["image"].dtype == torch.float32
        assert sample["label"].shape == (64, 64) and sample["label"].dtype == torch.int64
        assert sample["motion"].shape == (1, 64, 64) and sample["motion"].abs().max() <= 1.0
        assert sample["isr"].shape == (3, 64, 64) and sample["isr"].abs().max() <= 1.0
        values = set(sample["label"].unique().tolist())
        assert values <= set(range(19)) | {255}
        if index == 0:
            image = unnormalize(sample["image"])
            hits = locate_crop(full["image"], image)
            assert hits, "the crop must be a crop of the resized image"
            top, left, flip = hits[0]
            assert sample["isr_direction"].item() == 2 * (left % 2) + int(flip)
            expected_isr = compute_isr(to_uint8(image), dataset.isr_params, 2 * (left % 2) + int(flip))
            torch.testing.assert_close(sample["isr"], expected_isr)
            label_crop = full["label"][top : top + 64, left : left + 64]
            assert torch.equal(sample["label"], label_crop.flip(-1) if flip else label_crop)
        directions.add(sample["isr_direction"].item())
    assert len(directions) > 1
    torch.testing.assert_close(dataset[2]["image"], dataset[2]["image"])  # seeded -> reproducible


def _copy_twin(synthetic_root: Path, tmp_path: Path, folder: str) -> Path:
    """A writable copy of one dataset of the session's synthetic twin."""
    root = tmp_path / folder
    shutil.copytree(synthetic_root / folder, root)
    return root


def test_cityscapes_bad_inputs(synthetic_root: Path, tmp_path: Path) -> None:
    root = _copy_twin(synthetic_root, tmp_path, "cityscapes")
    dataset = CityscapesDataset(root, resize=(256, 128), crop=(64, 64), seed=0)
    label_path = dataset.label_path(0)
    array = np.asarray(Image.open(label_path)).copy()
    array[0, 0] = 20
    Image.fromarray(array).save(label_path)
    with pytest.raises(ValueError, match=rf"{label_path.name}: label values \[20\] outside"):
        dataset[0]
    Image.fromarray(array[:-2]).save(label_path)
    with pytest.raises(ValueError, match=rf"{label_path.name}: label size 256x126 .* does not match"):
        dataset[0]
    dataset.motion_path(1).unlink()
    with pytest.raises(DataError, match=rf"{dataset.motion_path(1).name}: file not found"):
        dataset[1]
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        CityscapesDataset(root, split="val")


# --- DSEC ----------------------------------------------------------------------------------------------


def _read_list(path: Path) -> list[tuple[str, int, int]]:
    rows = []
    for line in path.read_text().splitlines():
        rel, index = line.split()
        rows.append((Path(rel).parts[0], int(Path(rel).stem), int(index)))
    return rows


def test_index_files_follow_the_rules(synthetic_root: Path) -> None:
    root = synthetic_root / "DSEC_Night"
    train = _read_list(root / "night_dataset_warp.txt")
    test = _read_list(root / "night_test_dataset_warp.txt")
    assert train and test
    for seq_name in {s for s, _, _ in train + test}:
        seq = root / seq_name
        index = np.loadtxt(seq / "images/images_to_events_index.txt", dtype=np.int64)
        stamps = np.loadtxt(seq / "images/timestamps.txt", dtype=np.int64)
        labelled = labelled_frames(seq)
        with h5py.File(seq / "events/left/events.h5", "r") as handle:
            t = handle["events/t"][:].astype(np.int64) + int(handle["t_offset"][()])
        for frame, stamp in enumerate(stamps):  # last event at or before the frame timestamp
            assert t[index[frame]] <= stamp < (t[index[frame] + 1] if index[frame] + 1 < len(t) else np.inf)
        usable = [f for f in range(2, len(stamps)) if index[f] > 0 and index[f - 1] >= 0]
        expected_train = [f for f in usable if f > max(labelled)]
        expected_test = [f for f in labelled if f in usable]
        assert [f for s, f, _ in train if s == seq_name] == expected_train
        assert [f for s, f, _ in test if s == seq_name] == expected_test
        assert all(i == index[f] for s, f, i in train + test if s == seq_name)


def test_index_dsec_command_is_relative_and_reproducible(synthetic_root: Path, tmp_path: Path) -> None:
    root = synthetic_root / "DSEC_Night"
    assert data_main(["index-dsec", str(root), "--out-dir", str(tmp_path)]) == 0
    for name in ("night_dataset_warp.txt", "night_test_dataset_warp.txt"):
        assert (tmp_path / name).read_text() == (root / name).read_text()
        assert not (tmp_path / name).read_text().startswith("/")


def test_dsec_train_round_trip(synthetic_root: Path) -> None:
    dataset = DSECNightDataset(synthetic_root / "DSEC_Night", crop=(96, 80), resize=(96, 80), seed=1)
    full = dataset.load(0)
    sample = dataset[0]
    assert sample["image"].shape == (3, 80, 96)
    assert sample["events"].shape == (3, 80, 96) and sample["events"].dtype == torch.float32
    assert torch.equal(sample["events"][0], sample["events"][2])
    assert sample["events"].abs().max() <= 1.0 and (sample["events"] != 0).any()
    assert sample["isr"].shape == (3, 80, 96) and sample["isr"].abs().max() <= 1.0
    image = unnormalize(sample["image"])
    top, left, flip = locate_crop(full["image"], image)[0]
    assert sample["isr_direction"].item() == 2 * (left % 2) + (top % 2)
    events_crop = full["events"][:, top : top + 80, left : left + 96]
    torch.testing.assert_close(sample["events"][:1], events_crop.flip(-1) if flip else events_crop)
    resized = DSECNightDataset(synthetic_root / "DSEC_Night", crop=(96, 96), resize=(128, 128), seed=1)[3]
    assert resized["image"].shape == (3, 128, 128) and resized["events"].shape == (3, 128, 128)


def test_dsec_test_split_and_labels(synthetic_root: Path) -> None:
    dataset = DSECNightDataset(synthetic_root / "DSEC_Night", split="test", test_rows=100)
    labels = set()
    for index in range(len(dataset)):
        sample = dataset[index]
        assert sample["image"].shape == (3, 100, 160) and sample["label"].shape == (100, 160)
        assert sample["events"].shape == (3, 100, 160)
        labels |= set(sample["label"].unique().tolist())
    assert 14 not in labels and len(labels - {255}) >= 6  # no truck at night, but many classes


def test_dsec_events_window_matches_event_index(synthetic_root: Path) -> None:
    dataset = DSECNightDataset(synthetic_root / "DSEC_Night", crop=(160, 120), resize=(160, 120))
    sequence, frame = dataset.samples[0]
    first, last = dataset.event_window(sequence, frame)
    index = np.loadtxt(sequence / "images/images_to_events_index.txt", dtype=np.int64)
    assert (first, last) == (index[frame - 1], index[frame])
    two = DSECNightDataset(synthetic_root / "DSEC_Night", window_frames=2, events_bins=2)
    assert two.event_window(sequence, frame)[0] == index[frame - 2]
    assert two.load(0)["events"].shape == (2, 120, 160)


def test_event_index_0_is_an_event_for_the_dataset_and_the_check(synthetic_root: Path, monkeypatch) -> None:
    """One rule for a frame's event window (`dsec_layout.event_window`): index 0 is the recording's first
    event, -1 (a timestamp outside the recording) refuses the window; the dataset and the check apply it."""
    from cmda.data import dsec_check, dsec_layout

    path = Path("images_to_events_index.txt")
    index = np.array([-1, 0, 0, 7])
    assert dsec_layout.event_window(index, 2, 1, path) == (0, 0)
    assert dsec_layout.event_window(index, 3, 2, path) == (0, 7)
    with pytest.raises(DataError, match=r"frame 1 has an event window from line 1 \(frame 0, event index -1"):
        dsec_layout.event_window(index, 1, 1, path)
    with pytest.raises(DataError, match=r"frame 0 needs lines 0\.\.1"):
        dsec_layout.event_window(index, 0, 1, path)
    root = synthetic_root / "DSEC_Night"
    dataset = DSECNightDataset(root, split="test")
    sequence, frame = dataset.samples[0]
    dataset._event_index[sequence] = np.zeros(frame + 1, dtype=np.int64)  # every frame at the first event
    assert dataset.event_window(sequence, frame) == (0, 0)
    windows = []
    rule = dsec_layout.event_window
    monkeypatch.setattr(dsec_layout, "event_window", lambda *args: windows.append(args[:2]) or rule(*args))
    assert dsec_check.check(root, thorough=False).ok
    listed = {
        (entry.sequence, entry.frame)
        for name in (dsec_layout.TRAIN_LIST, dsec_layout.TEST_LIST)
        for entry in dsec_layout.read_list_file(root / name, root)
    }
    assert len(windows) == len(listed)  # the check asked the rule once per listed frame


def test_dsec_bad_inputs(synthetic_root: Path, tmp_path: Path) -> None:
    root = _copy_twin(synthetic_root, tmp_path, "DSEC_Night")
    test = DSECNightDataset(root, split="test")
    sequence, frame = test.samples[0]
    label = sequence / "labels" / f"{sequence.name}_{frame:06d}_grey_gtFine_labelTrainIds.png"
    array = np.asarray(Image.open(label)).copy()
    array[5, 5] = 19
    Image.fromarray(array).save(label)
    with pytest.raises(ValueError, match=rf"{label.name}: label values \[19\]"):
        test[0]
    Image.fromarray(array[:, :-4].clip(0, 18)).save(label)
    with pytest.raises(ValueError, match="label size 156x120 .* does not match"):
        test[0]

    train = DSECNightDataset(root, crop=(64, 64), resize=(64, 64), seed=0)
    sequence, frame = train.samples[0]
    index_path = sequence / "images/images_to_events_index.txt"
    original = index_path.read_text()
    index = original.splitlines()
    index[frame - 1] = "-1"
    index_path.write_text("\n".join(index) + "\n")
    with pytest.raises(DataError, match=rf"{index_path}: frame {frame} .* outside the event recording"):
        DSECNightDataset(root, crop=(64, 64), resize=(64, 64))  # rejected when the dataset is built
    index_path.write_text(original)
    (sequence / "warp_images" / f"{frame + 1:06d}.png").unlink()
    broken = DSECNightDataset(root, crop=(64, 64), resize=(64, 64))
    with pytest.raises(DataError, match=rf"warp_images/{frame + 1:06d}.png: file not found"):
        broken[1]
    with pytest.raises(DataError, match="index-dsec"):
        DSECNightDataset(root, index_file=root / "missing.txt")


# --- pairing -------------------------------------------------------------------------------------------


def test_paired_dataset_is_deterministic_and_collates(synthetic_root: Path) -> None:
    source = CityscapesDataset(synthetic_root / "cityscapes", resize=(256, 128), crop=(64, 64))
    target = DSECNightDataset(synthetic_root / "DSEC_Night", crop=(64, 64), resize=(64, 64))
    rcs = RareClassSampler.for_dataset(source, seed=0)
    assert rcs.file_min_pixels == pytest.approx(3000 / 64) and rcs.min_crop_pixels == pytest.approx(1500 / 16)
    paired = SourceTargetDataset(source, target, rcs=rcs, seed=7, length=100)
    first, again, other = paired[5], paired[5], paired[6]
    torch.testing.assert_close(first["source"]["image"], again["source"]["image"])
    torch.testing.assert_close(first["target"]["events"], again["target"]["events"])
    assert first["source"]["name"] != other["source"]["name"] or not torch.equal(
        first["source"]["image"], other["source"]["image"]
    )
    batch = next(iter(torch.utils.data.DataLoader(paired, batch_size=2)))
    assert batch["source"]["image"].shape == (2, 3, 64, 64) and batch["target"]["events"].shape == (
        2,
        3,
        64,
        64,
    )
    assert batch["source"]["isr_direction"].shape == (2,)
    plain = SourceTargetDataset(source, target, seed=0)
    assert len(plain) == len(source) * len(target)
    assert plain[len(target) + 1]["source"]["name"] == source.images[1].name


# --- Dark Zurich ---------------------------------------------------------------------------------------


def test_dark_zurich_tiny_fixture(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        folder = tmp_path / "rgb_anon" / split / "night" / "GOPR0356"
        folder.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (54, 96, 3), dtype=np.uint8)).save(
            folder / f"GOPR0356_000{split}_rgb_anon.png"
        )
    gt = tmp_path / "gt/val/night/GOPR0356"
    gt.mkdir(parents=True)
    label = np.zeros((54, 96), dtype=np.uint8)
    label[:, 48:] = 10
    Image.fromarray(label).save(gt / "GOPR0356_000val_gt_labelTrainIds.png")
    train = DarkZurichDataset(tmp_path, resize=(64, 36), crop=(32, 32), seed=0)[0]
    assert train["image"].shape == (3, 32, 32) and train["isr"].shape == (3, 32, 32)
    assert train["isr_direction"].item() == 2
    val = DarkZurichDataset(tmp_path, split="val", resize=(64, 36))[0]
    assert val["image"].shape == (3, 36, 64) and val["label"].shape == (36, 64)
    pil = np.asarray(Image.fromarray(label).resize((64, 36), Image.NEAREST)).astype(np.int64)
    assert torch.equal(val["label"], torch.from_numpy(pil))  # the original's get_gt_seg_maps
    assert set(val["label"][:, :31].unique().tolist()) == {0} and set(
        val["label"][:, 33:].unique().tolist()
    ) == {10}
    with pytest.raises(FileNotFoundError, match="night image folder"):
        DarkZurichDataset(tmp_path / "nothing")


def test_prepare_cityscapes_parallel_matches_serial(synthetic_root: Path, tmp_path: Path) -> None:
    root = _copy_twin(synthetic_root, tmp_path, "cityscapes")
    reference = (root / "sample_class_stats.json").read_text()
    (root / "sample_class_stats.json").unlink()
    prepare_cityscapes(root, workers=2)
    assert (root / "sample_class_stats.json").read_text() == reference


# --- DSEC training list: the original's fixed ranges ---------------------------------------------------


def test_training_list_uses_the_original_ranges_for_the_five_sequences(tmp_path: Path) -> None:
    """09_a..e exclude the original's fixed frame ranges (09_a 0..797, 09_b 0..149, ...); any other
    sequence excludes frames up to its last label file."""
    from cmda.data.dsec import ORIGINAL_TRAIN_EXCLUSIONS, build_index_files
    from cmda.data.dsec_twin import DSEC_SEQUENCES, write_dsec

    assert ORIGINAL_TRAIN_EXCLUSIONS == {
        "zurich_city_09_a": (0, 797),
        "zurich_city_09_b": (0, 149),
        "zurich_city_09_c": (0, 581),
        "zurich_city_09_d": (0, 743),
        "zurich_city_09_e": (0, 365),
    }
    write_dsec(tmp_path, 0, (24, 16), 160, 6, 0.15, 20, sequences=3)
    names = {DSEC_SEQUENCES[0]: "zurich_city_09_a", DSEC_SEQUENCES[1]: "zurich_city_09_b"}
    for old, new in names.items():
        (tmp_path / old).rename(tmp_path / new)
    summary = build_index_files(tmp_path)
    train, test = _read_list(summary.train), _read_list(summary.test)
    frames = {name: [f for s, f, _ in train if s == name] for name in (*names.values(), DSEC_SEQUENCES[2])}
    assert frames["zurich_city_09_a"] == []  # all 160 frames lie in 0..797
    assert frames["zurich_city_09_b"] == list(range(150, 160))
    last_label = max(labelled_frames(tmp_path / DSEC_SEQUENCES[2]))
    assert last_label < 100 and frames[DSEC_SEQUENCES[2]] == list(range(last_label + 1, 160))
    for name in frames:  # the test split is the labelled frames, whatever the training rule
        assert [f for s, f, _ in test if s == name] == labelled_frames(tmp_path / name)
