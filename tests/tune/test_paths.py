"""tune.paths: data and weight paths settled on the driver so that they mean the same on every node."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cmda.config import config_from_dict
from cmda.overrides import apply_overrides
from tune.paths import (
    FILE,
    FOLDER,
    PATH_KEYS,
    PathError,
    TrialPath,
    map_path,
    missing_paths,
    parse_path_map,
    parse_path_map_options,
    resolve_sweep_paths,
    sweep_paths,
)
from tune.sweep import SweepError, parse_sweep


def test_every_path_key_is_a_trainer_config_key() -> None:
    """If the trainer renames a path field, this registry must follow (or trials read relative paths):
    the trainer's own config validation, which rejects unknown keys, must accept every key."""
    for key in PATH_KEYS:
        config_from_dict(apply_overrides({}, {key: "/mnt/shared/x"}))
    with pytest.raises(ValueError, match="unknown key"):
        config_from_dict(apply_overrides({}, {"data.source.rooot": "/x"}))  # ...and would reject a stale one


@pytest.fixture()
def base(tmp_path: Path) -> Path:
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump({
        "model": {"pretrained": "pretrained/mit_b2.pth", "cyclegan": "none"},
        "data": {"source": {"root": "data/cityscapes"}, "target": {"root": "/mnt/shared/data/DSEC_Night"}},
    }))
    return path


def test_relative_paths_become_absolute_against_the_driver_cwd(base: Path, tmp_path: Path) -> None:
    settled = resolve_sweep_paths(base, {"data.source.root": "../other/cityscapes"}, tmp_path / "s.yaml",
                                  cwd="/home/me/cmda-tune")
    assert settled == {
        "data.source.root": "/home/me/other/cityscapes",  # the sweep's override wins over the base config
        "model.pretrained": "/home/me/cmda-tune/pretrained/mit_b2.pth",
    }  # absolute paths stay, `none` weights stay unset


def test_path_map_rewrites_the_longest_leading_folder(base: Path, tmp_path: Path) -> None:
    path_map = parse_path_map({"/home/me/cmda-tune": "/opt/cmda-tune",
                               "/home/me/cmda-tune/data": "/mnt/shared/data",
                               "/mnt/shared": "/shared"}, "s.yaml")
    settled = resolve_sweep_paths(base, {}, tmp_path / "s.yaml", cwd="/home/me/cmda-tune", path_map=path_map)
    assert settled == {
        "data.source.root": "/mnt/shared/data/cityscapes",
        "model.pretrained": "/opt/cmda-tune/pretrained/mit_b2.pth",
        "data.target.root": "/shared/data/DSEC_Night",
    }
    assert map_path("/home/me/cmda-tune-old/x", path_map) == ("/home/me/cmda-tune-old/x", False)  # components
    assert map_path("/mnt/shared", path_map) == ("/shared", True)


def test_relative_path_on_a_ray_client_cluster_is_refused_with_the_reason(base: Path, tmp_path: Path) -> None:
    with pytest.raises(PathError) as error:
        resolve_sweep_paths(base, {}, tmp_path / "s.yaml", cwd="/home/me/cmda-tune", client=True)
    message = str(error.value)
    assert f"{base}: field 'data.source.root'" in message
    assert "'data/cityscapes' is a relative path" in message
    assert "Ray Client" in message and "--path-map /home/me/cmda-tune/data=" in message
    mapped = resolve_sweep_paths(base, {}, tmp_path / "s.yaml", cwd="/home/me/cmda-tune", client=True,
                                 path_map={"/home/me/cmda-tune": "/opt/cmda-tune"})
    assert mapped["data.source.root"] == "/opt/cmda-tune/data/cityscapes"  # an explicit map is accepted


def test_bad_path_maps_name_the_field() -> None:
    with pytest.raises(PathError, match=r"s.yaml: field 'path_map.data': the cluster side must be absolute"):
        parse_path_map({"data": "relative/elsewhere"}, "s.yaml")
    with pytest.raises(PathError, match="field 'path_map': expected a mapping"):
        parse_path_map(["/a", "/b"], "s.yaml")
    with pytest.raises(PathError, match="--path-map: expected LOCAL=CLUSTER"):
        parse_path_map_options(["/only/one/side"])
    assert parse_path_map_options(["/a/b/=/c/"]) == {"/a/b": "/c"}


def test_sweep_file_path_map_is_validated_with_the_sweep(tmp_path: Path, base: Path) -> None:
    raw = {"base_config": str(base), "search": {"grid": {"variants": ["none"]}}, "path_map": {"/x": "y"}}
    with pytest.raises(SweepError, match=r"field 'path_map./x'"):
        parse_sweep(raw, tmp_path / "s.yaml")
    raw["path_map"] = {"/x": "/y"}
    assert parse_sweep(raw, tmp_path / "s.yaml").path_map == {"/x": "/y"}


def test_missing_paths_name_origin_path_and_kind(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "w.pth").write_text("x")
    paths = [TrialPath("data.source.root", str(tmp_path / "data"), FOLDER, "a.yaml: field 'data.root'"),
             TrialPath("model.pretrained", str(tmp_path / "w.pth"), FILE, "b"),
             TrialPath("data.target.root", str(tmp_path / "w.pth"), FOLDER, "c"),
             TrialPath("model.cyclegan", str(tmp_path / "gone.pth"), FILE, "d")]
    assert missing_paths(paths) == [f"c: {tmp_path / 'w.pth'} is not a folder",
                                    f"d: {tmp_path / 'gone.pth'} does not exist"]


def test_sweep_paths_skip_unset_weights_and_name_where_each_was_set(tmp_path: Path) -> None:
    base = tmp_path / "only_source.yaml"
    base.write_text(yaml.safe_dump({"data": {"source": {"root": "/d"}}, "model": {"cyclegan": "c.pth"}}))
    found = sweep_paths(base, {"model.cyclegan": "none", "data.target.root": "s3://b/x"}, "s.yaml")
    assert [(p.key, p.path, p.kind, p.origin) for p in found] == [
        ("data.source.root", "/d", FOLDER, f"{base}: field 'data.source.root'")]  # URIs are not paths here
    found = sweep_paths(base, {"data.target.root": "t"}, "s.yaml")
    assert found[1].origin == "s.yaml: field 'overrides.data.target.root'"
