"""Bad data never passes silently: corrupt copies of the synthetic twin give clear errors naming the file.

Each test corrupts a copy (the session's `synthetic_root` is read-only) the way real data goes wrong:
unsorted event times, a sequence without warp images, frame timestamps outside the recording, a truncated
`ms_to_idx`, a transposed rectify map, a broken image read inside a loader worker (DSEC and Dark Zurich),
and whole trees with problems that `cmda data check` and the check before training must list.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401 - registers the Blosc filter used by events.h5
import numpy as np
import pytest
import torch
from PIL import Image

from cmda.data import event_files
from cmda.data.check import DataCheckError, check_test_data, check_tree
from cmda.data.commands import main as data_main
from cmda.data.dark_zurich import DarkZurichDataset
from cmda.data.dsec import DSECNightDataset
from cmda.data.dsec_check import check as check_dsec
from cmda.data.dsec_layout import TEST_LIST, TRAIN_LIST
from cmda.data.errors import DataError
from cmda.data.event_files import EventFileError


def copy_dsec(synthetic_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "DSEC_Night"
    shutil.copytree(synthetic_root / "DSEC_Night", root)
    return root


def read_h5(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as handle:
        return {key: handle[key][()] for key in event_files.EVENT_KEYS}


def write_h5(path: Path, data: dict[str, np.ndarray]) -> None:
    """Write the datasets as given (no sorting, no ms_to_idx rebuild): a file as a broken writer leaves it."""
    with h5py.File(path, "w") as handle:
        for key, value in data.items():
            handle.create_dataset(key, data=value)


def listed_frames(root: Path, sequence: str) -> list[int]:
    lines = (root / TRAIN_LIST).read_text().splitlines() + (root / TEST_LIST).read_text().splitlines()
    return sorted(int(Path(line.split()[0]).stem) for line in lines if line.startswith(f"{sequence}/"))


def test_unsorted_event_times_are_caught_when_indexing_loading_and_checking(synthetic_root, tmp_path, capsys):
    root = copy_dsec(synthetic_root, tmp_path)
    dataset = DSECNightDataset(root, crop=(64, 64), resize=(64, 64))
    sample_index = 3
    sequence, frame = dataset.samples[sample_index]
    first, last = dataset.event_window(sequence, frame)
    events_path = sequence / "events/left/events.h5"
    data = read_h5(events_path)
    middle = (first + last) // 2
    data["events/t"][middle] = data["events/t"][middle + 1] + 2_000  # one event 2 ms late, mid-window
    write_h5(events_path, data)

    assert data_main(["index-dsec", str(root)]) == 2
    message = capsys.readouterr().err
    assert f"{events_path}: events/t is not sorted: event {middle + 1} has t =" in message
    with pytest.raises(DataError, match=rf"{events_path}: events/t is not sorted"):
        DSECNightDataset(root, crop=(64, 64), resize=(64, 64))[sample_index]
    report = check_dsec(root)
    assert any(f"{events_path}: events/t is not sorted" in problem for problem in report.problems)
    assert data_main(["check", str(root)]) == 1


def test_index_dsec_refuses_incomplete_sequences_unless_told_to_skip_them(synthetic_root, tmp_path, capsys):
    root = copy_dsec(synthetic_root, tmp_path)
    shutil.rmtree(root / "zurich_city_synth_a" / "warp_images")
    for png in (root / "zurich_city_synth_b" / "warp_images").glob("*.png"):
        png.unlink()
    (root / "zurich_city_synth_c" / "events/left/events.h5").unlink()
    shutil.rmtree(root / "zurich_city_synth_d")
    (root / "zurich_city_synth_d").mkdir()  # a sequence whose copy never happened: was left out unnoticed
    before = (root / TEST_LIST).read_text()

    assert data_main(["index-dsec", str(root)]) == 2
    error = capsys.readouterr().err
    assert f"{root / 'zurich_city_synth_a'}: missing warp_images/ (the folder is missing)" in error
    assert f"{root / 'zurich_city_synth_b'}: missing warp_images/ (the folder holds no PNG)" in error
    assert f"{root / 'zurich_city_synth_c'}: missing events/left/events.h5 (events file)" in error
    assert f"{root / 'zurich_city_synth_d'}: an empty folder" in error
    assert "--skip-incomplete" in error and (root / TEST_LIST).read_text() == before  # nothing rewritten

    assert data_main(["index-dsec", str(root), "--skip-incomplete"]) == 0
    out = capsys.readouterr().out
    for name in ("a", "b", "c"):
        assert f"skipped zurich_city_synth_{name}: missing " in out
    assert "skipped zurich_city_synth_d: an empty folder" in out
    test_lines = (root / TEST_LIST).read_text().splitlines()
    assert test_lines and {line.split("/")[0] for line in test_lines} == {"zurich_city_synth_e"}
    assert data_main(["check", str(root)]) == 1  # the check names the empty folder too
    assert f"{root / 'zurich_city_synth_d'}: an empty folder in the DSEC root" in capsys.readouterr().out


def test_frames_whose_event_window_starts_before_the_recording_are_left_out(synthetic_root, tmp_path, capsys):
    root = copy_dsec(synthetic_root, tmp_path)
    sequence = root / "zurich_city_synth_a"
    assert 2 in listed_frames(root, sequence.name)  # the first labelled frame: a test frame
    with h5py.File(sequence / "events/left/events.h5", "r") as handle:
        t_offset = int(handle["t_offset"][()])
    stamps_path = sequence / "images/timestamps.txt"
    stamps = np.loadtxt(stamps_path, dtype=np.int64)
    stamps[:2] = [t_offset - 2_000, t_offset - 1_000]  # frames 0 and 1 before the first event
    stamps_path.write_text("".join(f"{t}\n" for t in stamps))

    assert data_main(["index-dsec", str(root)]) == 0
    assert "left out 1 frame(s): event window starts before the recording" in capsys.readouterr().out
    index = np.loadtxt(sequence / "images/images_to_events_index.txt", dtype=np.int64)
    assert list(index[:2]) == [-1, -1] and index[2] > 0
    assert 2 not in listed_frames(root, sequence.name)
    test = DSECNightDataset(root, split="test")  # every listed window is valid, so this builds
    assert test[0]["events"].abs().sum() > 0


def test_short_ms_to_idx_is_a_named_error(synthetic_root, tmp_path, capsys):
    root = copy_dsec(synthetic_root, tmp_path)
    events_path = root / "zurich_city_synth_b/events/left/events.h5"
    data = read_h5(events_path)
    entries = len(data["ms_to_idx"]) // 2
    data["ms_to_idx"] = data["ms_to_idx"][:entries]
    write_h5(events_path, data)
    with pytest.raises(
        EventFileError, match=rf"{events_path}: ms_to_idx has {entries} entries but events/t"
    ):
        event_files.EventSlicer(events_path)
    assert data_main(["index-dsec", str(root)]) == 2
    assert f"{events_path}: ms_to_idx has {entries} entries" in capsys.readouterr().err


def test_transposed_rectify_map_is_a_named_error(synthetic_root, tmp_path):
    root = copy_dsec(synthetic_root, tmp_path)
    dataset = DSECNightDataset(root, split="test")
    sequence, _ = dataset.samples[0]
    map_path = sequence / "events/left/rectify_map.h5"
    event_files.write_rectify_map_h5(map_path, event_files.load_rectify_map(map_path).transpose(1, 0, 2))
    with pytest.raises(
        DataError, match=rf"{map_path}: rectify_map has shape \(160, 120, 2\).*\(is the map transposed"
    ):
        DSECNightDataset(root, split="test")[0]
    problems = check_dsec(root, thorough=False).problems
    assert problems and all(problem.startswith(f"{map_path}: rectify_map has shape") for problem in problems)
    # a map of the right size but too small for the events' pixels: named by the events' range
    small = np.zeros((120, 100, 2), np.float32)
    with pytest.raises(
        EventFileError, match=rf"{map_path}: rectify_map has shape \(120, 100, 2\) .* up to x"
    ):
        events = sequence / "events.h5"
        event_files.check_events_fit_map(np.array([150]), np.array([10]), small, events, map_path)


def truncate(path: Path) -> None:
    """Keep the PNG header (it still opens) but cut the pixel data: fails only when decoded."""
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def test_a_bad_file_in_a_loader_worker_surfaces_as_its_own_message(synthetic_root, tmp_path):
    root = copy_dsec(synthetic_root, tmp_path)
    dataset = DSECNightDataset(root, crop=(64, 64), resize=(64, 64), with_isr=False)
    sequence, frame = dataset.samples[2]
    truncate(sequence / "warp_images" / f"{frame:06d}.png")
    with pytest.raises(DataError) as in_process:
        dataset[2]
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, sampler=[2], num_workers=1)
    with pytest.raises(DataError) as from_worker:
        next(iter(loader))
    assert str(from_worker.value) == str(in_process.value)
    assert str(from_worker.value).startswith(f"{sequence}/warp_images/{frame:06d}.png: not a readable image")
    assert "Traceback" not in str(from_worker.value) and "worker" not in str(from_worker.value)


def test_a_bad_dark_zurich_image_in_a_loader_worker_surfaces_as_its_own_message(tmp_path):
    folder = tmp_path / "rgb_anon/train/night/GOPR0356"
    folder.mkdir(parents=True)
    image = folder / "GOPR0356_000000_rgb_anon.png"
    Image.fromarray(np.zeros((54, 96, 3), np.uint8)).save(image)
    truncate(image)
    dataset = DarkZurichDataset(tmp_path, resize=(64, 36), crop=(32, 32), with_isr=False, seed=0)
    with pytest.raises(DataError) as in_process:
        dataset[0]
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=1)
    with pytest.raises(DataError) as from_worker:
        next(iter(loader))
    assert str(from_worker.value) == str(in_process.value)
    assert str(from_worker.value).startswith(f"{image}: not a readable image")
    assert "Traceback" not in str(from_worker.value) and "worker" not in str(from_worker.value)


def copy_twin(synthetic_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "twin"
    shutil.copytree(synthetic_root, root)
    return root


def test_data_check_lists_every_problem_of_a_tree(synthetic_root, tmp_path, capsys):
    assert data_main(["check", str(synthetic_root)]) == 0
    assert capsys.readouterr().out.count(": OK") == 3  # the twin's Cityscapes, DSEC-Night and Dark Zurich
    root = copy_twin(synthetic_root, tmp_path)
    cityscapes, dsec_root = root / "cityscapes", root / "DSEC_Night"
    label = next((cityscapes / "gtFine/train/aachen").glob("*_labelTrainIds.png"))
    values = np.asarray(Image.open(label)).copy()
    values[0, 0] = 25
    Image.fromarray(values).save(label)
    motion = next((cityscapes / "leftImg8bit_IC1/train/bochum").glob("*.png"))
    motion.unlink()
    test = DSECNightDataset(dsec_root, split="test")
    sequence, frame = test.samples[0]
    test_label = sequence / "labels" / f"{sequence.name}_{frame:06d}_grey_gtFine_labelTrainIds.png"
    Image.fromarray(np.full((120, 160), 19, np.uint8)).save(test_label)
    index_path = sequence / "images/images_to_events_index.txt"
    index = index_path.read_text().splitlines()
    index[frame] = str(int(index[frame]) + 3)  # stale: no longer the event at the frame's timestamp
    index_path.write_text("\n".join(index) + "\n")

    assert data_main(["check", str(root)]) == 1
    out = capsys.readouterr().out
    assert f"  {label}: label values [25] outside the trainIds" in out
    assert f"  {motion}: file not found" in out
    assert f"  {test_label}: label values [19] outside the trainIds" in out
    # the line of the file (1-based), and the frame it holds (0-based, as the list files number frames)
    assert (f"  {index_path}: line {frame + 1} (frame {frame}) has event index {int(index[frame])} but the "
            "list file says") in out
    fast = [problem for report in check_tree(root, thorough=False) for problem in report.problems]
    assert not any(str(label) in problem for problem in fast)  # fast reads label headers only...
    assert any(str(test_label) in problem for problem in fast)  # ...but decodes the evaluation labels


def test_data_check_of_a_dark_zurich_tree(tmp_path, capsys):
    for split in ("train", "val"):
        folder = tmp_path / "rgb_anon" / split / "night" / "GOPR0356"
        folder.mkdir(parents=True)
        Image.fromarray(np.zeros((54, 96, 3), np.uint8)).save(folder / f"GOPR0356_000{split}_rgb_anon.png")
    gt = tmp_path / "gt/val/night/GOPR0356"
    gt.mkdir(parents=True)
    label = gt / "GOPR0356_000val_gt_labelTrainIds.png"
    Image.fromarray(np.zeros((54, 96), np.uint8)).save(label)
    assert data_main(["check", str(tmp_path)]) == 0
    assert "dark_zurich at" in capsys.readouterr().out
    Image.fromarray(np.zeros((50, 96), np.uint8)).save(label)
    assert data_main(["check", str(tmp_path)]) == 1
    assert f"{label}: label size 96x50 (WxH) does not match the image size 96x54" in capsys.readouterr().out
    assert data_main(["check", str(tmp_path / "gt")]) == 2  # not a dataset tree at all


def test_training_checks_the_data_before_the_first_step(synthetic_root, tmp_path, tiny_config, monkeypatch):
    from cmda import train

    root = copy_dsec(synthetic_root, tmp_path)
    test = DSECNightDataset(root, split="test")
    sequence, frame = test.samples[-1]
    label = sequence / "labels" / f"{sequence.name}_{frame:06d}_grey_gtFine_labelTrainIds.png"
    Image.fromarray(np.full((120, 160), 19, np.uint8)).save(label)
    monkeypatch.setattr(
        train, "build_model", lambda config: pytest.fail("the model was built before the check")
    )
    with pytest.raises(
        DataCheckError, match=rf"1 data problem\(s\) in {root}.*\n  {label}: label values \[19\]"
    ):
        train.run(tiny_config(**{"data.target.root": str(root)}))


def test_training_surfaces_a_worker_data_error_as_its_message(synthetic_root, tmp_path, tiny_config):
    from cmda import train

    root = copy_dsec(synthetic_root, tmp_path)
    for png in root.glob("*/warp_images/*.png"):
        truncate(png)  # headers intact: the fast check passes, decoding in the worker fails
    config = tiny_config(**{"data.target.root": str(root), "data.num_workers": 1, "train.max_iters": 1})
    with pytest.raises(DataError, match=r"^\S+/warp_images/\d{6}\.png: not a readable image") as error:
        train.run(config)
    assert "Traceback" not in str(error.value)


def test_dark_zurich_labels_without_images_or_at_another_size_are_caught(synthetic_root, tmp_path, capsys,
                                                                        tiny_config):
    """A validation label whose image was removed is named by the check; a label at half size is refused by
    the check, by the loader (it would be scored upsampled) and by `cmda test`, which checks its data."""
    root = tmp_path / "dark_zurich"
    shutil.copytree(synthetic_root / "dark_zurich", root)
    images = sorted((root / "rgb_anon" / "val" / "night").glob("*/*_rgb_anon.png"))
    removed = images[0]
    removed.unlink()
    orphan = root / "gt" / "val" / "night" / removed.parent.name / removed.name.replace(
        "_rgb_anon.png", "_gt_labelTrainIds.png")
    assert data_main(["check", str(root), "--kind", "dark_zurich"]) == 1
    assert f"{orphan}: validation label without its image ({removed} not found)" in capsys.readouterr().out

    label = root / "gt" / "val" / "night" / images[1].parent.name / images[1].name.replace(
        "_rgb_anon.png", "_gt_labelTrainIds.png")
    full = Image.open(label)
    full.resize((full.width // 2, full.height // 2), Image.NEAREST).save(label)
    val = DarkZurichDataset(root, "val", resize=(64, 36))
    with pytest.raises(ValueError, match="label size .* does not match the image size"):
        val[0]
    problems = [p for report in check_tree(root, kind="dark_zurich", thorough=False) for p in report.problems]
    assert any(str(label) in p and "does not match the image size" in p for p in problems)
    with pytest.raises(DataCheckError) as refused:  # what `cmda test` runs before it scores anything
        check_test_data(tiny_config(target="dark_zurich", **{"data.target.root": str(root)}))
    assert str(label) in str(refused.value) and "does not match the image size" in str(refused.value)
