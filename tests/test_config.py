"""Config loading, overrides and the validation errors a researcher sees."""

from __future__ import annotations

from pathlib import Path

import pytest

from cmda.config import ConfigError, apply_overrides, config_from_dict, load_config, save_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", ["demo.yaml", "cmda_cs2dsec_b5.yaml", "cmda_cs2dsec_b2.yaml"])
def test_shipped_configs_load(name):
    config = load_config(CONFIGS / name)
    assert config.uda.feature_loss.variant == "none"


def test_paper_and_study_configs_differ_only_where_the_study_did():
    paper, study = (
        load_config(CONFIGS / "cmda_cs2dsec_b5.yaml"),
        load_config(CONFIGS / "cmda_cs2dsec_b2.yaml"),
    )
    assert (paper.model.backbone, paper.data.batch_size) == ("mit_b5", 2)
    assert (study.model.backbone, study.data.batch_size) == ("mit_b2", 1)
    assert paper.optim == study.optim and paper.uda == study.uda


def test_overrides_are_yaml_parsed_dotted_keys(tmp_path):
    config = load_config(
        CONFIGS / "demo.yaml",
        ["uda.feature_loss.variant=fusion_st", "uda.feature_loss.weight=0.2", "data.source.crop=[32, 32]"],
    )
    assert config.uda.feature_loss.weight == 0.2 and config.data.source.crop == [32, 32]
    assert apply_overrides({"a": {"b": 1}}, {"a.c": 2}) == {"a": {"b": 1, "c": 2}}
    save_config(config, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == config


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"modle": {}}, "unknown key 'modle'; valid keys here: name, seed, model"),
        ({"train": {"max_iter": 5}}, "unknown key 'train.max_iter'"),
        ({"train": {"max_iters": "many"}}, "'train.max_iters' must be an integer, got 'many'"),
        ({"optim": {"lr": "fast"}}, "'optim.lr' must be a number"),
        ({"uda": {"feature_loss": {"variant": "l1"}}}, "'uda.feature_loss.variant' must be one of"),
        (
            {"uda": {"feature_loss": {"variant": "fusion_st", "lambdas": {"rgb_st": 0.1}}}},
            "'uda.feature_loss.lambdas.rgb_st' is not a term of variant 'fusion_st'",
        ),
        (
            {"uda": {"feature_loss": {"variant": "fusion_st", "weight": -1}}},
            "'uda.feature_loss.weight' must be >= 0",
        ),
        ({"model": {"backbone": "mit_b9"}}, "'model.backbone' must be one of"),
        ({"train": {"amp": "fp8"}}, "'train.amp' must be one of"),
        ({"data": {"source": {"crop": [0, 5]}}}, "'data.source.crop' must be [width, height]"),
    ],
)
def test_bad_values_name_the_file_and_the_key(data, message):
    with pytest.raises(ConfigError) as error:
        config_from_dict(data, source="exp.yaml")
    assert str(error.value).startswith("exp.yaml: ") and message in str(error.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1,\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
