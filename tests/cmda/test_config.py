"""Config loading, overrides and the validation errors a researcher sees."""

from __future__ import annotations

from pathlib import Path

import pytest

from cmda.config import ConfigError, config_from_dict, load_config, save_config
from cmda.data.targets import TARGETS
from cmda.overrides import apply_overrides
from cmda.uda.feature_losses import VARIANTS

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_shipped_configs_load(name):
    config = load_config(CONFIGS / name)
    assert config.uda.feature_loss.variant == "none" and config.train.amp == "off"


def test_dark_zurich_configs_follow_the_original_and_the_fork():
    b5, b2 = load_config(CONFIGS / "cmda_cs2dz_b5.yaml"), load_config(CONFIGS / "cmda_cs2dz_b2.yaml")
    assert (b5.model.backbone, b2.model.backbone) == ("mit_b5", "mit_b2")
    assert b5.target.name == "dark_zurich" and b5.model.fusion == "attention"
    assert b5.uda.loss_weights.as_dict() == {"image": 0.7, "second": 0.7, "fusion": 0.7, "isr": 0.25}
    assert (b5.uda.pseudo_weight_ignore_top, b5.uda.pseudo_weight_ignore_bottom) == (15, 120)
    assert (b5.data.target.resize, b5.data.target.crop, b5.data.batch_size) == ([960, 540], [512, 512], 2)
    assert b5.uda == b2.uda and b5.optim == b2.optim and b5.data == b2.data


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
        [
            "uda.feature_loss.variant=fusion_st",
            "uda.feature_loss.lambda_scale=2",
            "data.source.crop=[32, 32]",
            "optim.lr=6e-5",
        ],
    )
    assert config.uda.feature_loss.lambda_scale == 2 and config.data.source.crop == [32, 32]
    assert config.optim.lr == 6e-5  # YAML 1.1 would read 6e-5 as a string
    assert config.uda.feature_loss.resolved_lambdas() == {"fusion_st": pytest.approx(0.1)}
    assert apply_overrides({"a": {"b": 1}}, {"a.c": 2}) == {"a": {"b": 1, "c": 2}}
    save_config(config, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == config


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"modle": {}}, "field 'modle': unknown key"),
        ({"train": {"max_iter": 5}}, "field 'train.max_iter': unknown key"),
        ({"train": {"max_iters": "many"}}, "field 'train.max_iters': input should be a valid integer"),
        ({"optim": {"lr": "fast"}}, "field 'optim.lr': input should be a valid number"),
        ({"optim": {"lr": -1e-4}}, "field 'optim.lr': input should be greater than 0, got -0.0001"),
        ({"optim": {"lr": float("nan")}}, "field 'optim.lr': input should be a finite number, got nan"),
        ({"optim": {"power": -1.0}}, "field 'optim.power': input should be greater than or equal to 0"),
        ({"train": {"eval_interval": 0}}, "field 'train.eval_interval': input should be greater than 0"),
        (
            {"uda": {"feature_loss": {"variant": "l1"}}},
            "field 'uda.feature_loss.variant': input should be 'none'",
        ),
        (
            {"uda": {"feature_loss": {"variant": "fusion_st", "lambdas": {"rgb_st": 0.1}}}},
            "field 'uda.feature_loss.lambdas': ['rgb_st'] not terms of variant 'fusion_st'",
        ),
        (
            {"uda": {"feature_loss": {"variant": "fusion_st", "lambda_scale": -1}}},
            "field 'uda.feature_loss.lambda_scale': input should be greater than or equal to 0",
        ),
        (
            {"uda": {"color_jitter_p": 1.5}},
            "field 'uda.color_jitter_p': input should be less than or equal to 1",
        ),
        ({"model": {"backbone": "mit_b9"}}, "field 'model.backbone': input should be 'mit_b0'"),
        ({"model": {"fusion": "concat"}}, "field 'model.fusion': input should be 'attention_avg'"),
        ({"train": {"amp": "fp8"}}, "field 'train.amp': input should be 'off' or 'bf16'"),
        ({"train": {"device": "gpu"}}, "field 'train.device': string should match pattern"),
        (
            {"data": {"source": {"crop": [0, 5]}}},
            "field 'data.source.crop[0]': input should be greater than 0",
        ),
        (
            {"data": {"source": {"resize": [64, 32], "crop": [64, 64]}}},
            "field 'data.source.crop': must fit in data.source.resize [64, 32]",
        ),
        ({"data": {"target": {"name": "kitti"}}}, "field 'data.target': input tag 'kitti'"),
        (
            {"data": {"target": {"name": "dark_zurich", "events_bins": 3}}},
            "field 'data.target.events_bins': unknown key",
        ),
        ({"model": {"num_classes": 20}}, "field 'model.num_classes': target 'dsec_night' (data.target.name)"),
        (
            {"uda": {"feature_loss": {"weight": 0.1}}},
            "field 'uda.feature_loss.weight': unknown key",
        ),
    ],
)
def test_bad_values_name_the_file_and_the_key(data, message):
    with pytest.raises(ConfigError) as error:
        config_from_dict(data, source="exp.yaml")
    assert str(error.value).startswith("exp.yaml: ") and message in str(error.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1,\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)


def test_every_error_of_one_file_is_reported_at_once():
    with pytest.raises(ConfigError) as error:
        config_from_dict({"optim": {"lr": -1, "power": -1}, "train": {"amp": "auto"}}, source="exp.yaml")
    lines = str(error.value).splitlines()
    assert len(lines) == 3 and all(line.startswith("exp.yaml: field '") for line in lines)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_every_target_validates_with_its_defaults_and_recipe(name):
    """Each registered target: its default section validates, the null recipe fields take the entry's
    values, the section of another target's keys is refused, and the saved config loads back equal."""
    config = config_from_dict({"data": {"target": {"name": name}}}, source="t.yaml")
    spec = TARGETS[name]
    assert config.target is spec and config.model.fusion == spec.recipe.fusion
    assert config.uda.loss_weights.as_dict() == spec.recipe.loss_weights
    assert (config.uda.pseudo_weight_ignore_top, config.uda.pseudo_weight_ignore_bottom) == (
        spec.recipe.pseudo_weight_ignore_top,
        spec.recipe.pseudo_weight_ignore_bottom,
    )
    assert config.data.target.second_channels >= 1
    assert config_from_dict(config.to_dict()) == config
    foreign = {k for other in TARGETS.values() for k in other.config_model.model_fields} - set(
        spec.config_model.model_fields
    )
    for key in sorted(foreign):
        with pytest.raises(ConfigError, match=f"field 'data.target.{key}': unknown key"):
            config_from_dict({"data": {"target": {"name": name, key: 1}}})


@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_on_every_target_is_accepted_exactly_when_the_target_provides_its_needs(
    target, variant
):
    spec, needs = TARGETS[target], set().union(*VARIANTS[variant].requires.values())
    data = {"data": {"target": {"name": target}}, "uda": {"feature_loss": {"variant": variant}}}
    if needs <= spec.modalities:
        assert config_from_dict(data).uda.feature_loss.variant == variant
        return
    with pytest.raises(ConfigError) as error:
        config_from_dict(data, source="sweep.yaml")
    message = str(error.value)
    assert (
        "field 'uda.feature_loss.variant'" in message and repr(variant) in message and repr(target) in message
    )


def test_a_whole_float_is_an_integer_and_a_set_key_is_blamed_on_the_option(tmp_path: Path) -> None:
    """`--set train.max_iters=1e3` is 1000 (YAML reads 1e3 as a float); 2.5 is still no integer; a problem
    with a value given by `--set` names the option, not the file that does not contain it."""
    config = load_config(CONFIGS / "cmda_cs2dsec_b2.yaml", ["train.max_iters=1e3"])
    assert config.train.max_iters == 1000 and isinstance(config.train.max_iters, int)
    with pytest.raises(ConfigError, match=r"--set train.max_iters=2.5: field 'train.max_iters'"):
        load_config(CONFIGS / "cmda_cs2dsec_b2.yaml", ["train.max_iters=2.5"])
    with pytest.raises(ConfigError) as info:
        load_config(CONFIGS / "cmda_cs2dsec_b2.yaml", ["train.max_iter=10"])
    assert str(info.value).startswith("--set train.max_iter=10: field 'train.max_iter'"), str(info.value)
