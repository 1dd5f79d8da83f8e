"""Recipes: defaults, layering, overrides, and one clear error for a bad key or value."""

import dataclasses
import warnings

import pytest

from clipdepth.cli.main import main
from clipdepth.config import Config, config_from_dict, config_to_dict, load_config, load_config_dict
from clipdepth.errors import ConfigError


def test_defaults_are_the_reference_recipe():
    cfg = load_config()
    assert cfg.clip.name == "openai/clip-vit-large-patch14-336" and not cfg.clip.random_init
    assert (cfg.pureclip.num_bins, cfg.pureclip.tau, cfg.pureclip.phrase_style) == (15, 0.07, "released")
    p, t = cfg.pureclip, cfg.train
    assert (p.phase_steps, p.embed_lr, p.embed_weight_decay, p.depth_lr, p.depth_weight_decay) == (100, 3e-4, 1e-2, 1e-3, 0.0)
    assert (t.batch_size, p.freeze_table_in_depth_phase, p.decay_start, t.patience) == (8, False, 10, 200)


def test_layered_recipes_and_overrides_in_order(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text("base: demo\ntrain:\n  max_epochs: 7\n")
    cfg = load_config([mine, "variants/paper"], ["train.patience=9", "pureclip.use_cls=false"])
    assert cfg.clip.random_init and cfg.train.max_epochs == 7  # from demo, then mine
    assert cfg.pureclip.freeze_table_in_depth_phase and cfg.pureclip.patch_rule == "paper"  # from the variant
    assert cfg.train.patience == 9 and cfg.pureclip.use_cls is False  # overrides win
    assert config_from_dict(config_to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    "overrides, message",
    [(["train.batchsize=4"], "batchsize"), (["train.batch_size=four"], "batch_size"), (["train.batch_size"], "not of the form")],
)
def test_bad_overrides_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("demo", overrides)


def test_unknown_recipe_lists_the_builtin_ones():
    with pytest.raises(ConfigError, match=r"no recipe 'nope'.*variants/paper"):
        load_config("nope")


def test_cli_reports_config_errors_in_one_line(capsys):
    assert main(["train", "--config", "demo", "train.select_metric=accuracy"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "select_metric" in err and "Traceback" not in err
    assert isinstance(load_config("demo"), Config)


def test_missing_encoder_folder_is_one_line_naming_it(tmp_path, capsys):
    missing = tmp_path / "no-such-clip"
    assert main(["train", "clip.random_init=false", f"clip.name={missing}", f"output_dir={tmp_path}/run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(missing) in err and "Traceback" not in err


FIRST_LAYOUT = {  # a recipe / saved config as clipdepth wrote them before the per-model sections
    "encoder": {"name": "openai/clip-vit-base-patch16", "image_size": 224},
    "head": {"num_bins": 7, "fusion": "film"},
    "loss": {"patch_rule": "paper"},
    "train": {"phase_steps": 5, "decay_start": 3, "max_epochs": 4, "batch_size": 2},
    "data": {"dataset": "kitti"},
}


def test_the_first_config_layout_still_loads(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a saved config of the first layout is read silently
        cfg = config_from_dict(FIRST_LAYOUT)
    assert (cfg.clip.name, cfg.clip.image_size) == ("openai/clip-vit-base-patch16", 224)
    assert (cfg.pureclip.num_bins, cfg.pureclip.fusion, cfg.pureclip.patch_rule) == (7, "film", "paper")
    assert (cfg.pureclip.phase_steps, cfg.pureclip.decay_start) == (5, 3)
    assert (cfg.train.max_epochs, cfg.train.batch_size, cfg.data.dataset) == (4, 2, "kitti")
    # the same from a recipe file, and old override names land on the new fields
    import yaml

    recipe = tmp_path / "old.yaml"
    recipe.write_text(yaml.safe_dump(FIRST_LAYOUT))
    with pytest.warns(FutureWarning) as said:  # a recipe and overrides the user wrote: each earlier name warns once
        old = load_config(recipe, ["head.use_cls=false", "train.embed_lr=0.5", "encoder.precision=fp32"])
    olds = [str(w.message).split("'")[1] for w in said]
    assert olds == [
        "encoder",
        "head",
        "loss",
        "train.phase_steps",
        "train.decay_start",
        "head.use_cls=false",
        "train.embed_lr=0.5",
        "encoder.precision=fp32",
    ]
    assert old.pureclip.use_cls is False and old.pureclip.embed_lr == 0.5 and old.clip.precision == "fp32"
    assert (
        dataclasses.replace(
            old,
            pureclip=dataclasses.replace(old.pureclip, use_cls=True, embed_lr=3e-4),
            clip=dataclasses.replace(old.clip, precision="auto"),
        )
        == cfg
    )


def test_new_names_win_over_old_ones_in_one_mapping():
    cfg = config_from_dict(
        {"head": {"num_bins": 7}, "pureclip": {"num_bins": 9}, "train": {"phase_steps": 5}, "encoder": {"image_size": 224}}
    )
    assert cfg.pureclip.num_bins == 9 and cfg.pureclip.phase_steps == 5 and cfg.clip.image_size == 224


def test_first_difference_names_the_field_and_both_values():
    from clipdepth.config import ABSENT, first_difference

    saved = {"train": {"max_epochs": 5, "lr": 1.0}, "data": {"tiles": 1}}
    assert first_difference(saved, saved) is None
    assert first_difference(saved, {"train": {"max_epochs": 5, "lr": 2.0}, "data": {"tiles": 1}}) == ("train.lr", 1.0, 2.0)
    assert first_difference(saved, {"train": {"max_epochs": 9, "lr": 2.0}, "data": {"tiles": 1}}, ignore=("train.max_epochs",)) == (
        "train.lr",
        1.0,
        2.0,
    )
    assert first_difference(saved, {"train": {"max_epochs": 5, "lr": 1.0}}) == ("data", {"tiles": 1}, ABSENT)


def test_a_library_error_names_the_setting_and_the_cli_its_flag(tmp_path, capsys):
    from clipdepth.errors import DataError
    from clipdepth.io.atomic import refuse_existing

    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(DataError) as info:
        refuse_existing([tmp_path / "metrics.json"], overwrite=False)
    assert info.value.setting == "overwrite" and "--" not in str(info.value)  # the library's terms
    (tmp_path / "pred").mkdir()
    assert main(["score", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path), "--protocol", "nyu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("(--pred)") and "predictions folder" in err  # score's flag for the setting


PRECISION_FIELDS = (
    "clip.precision",
    "tr2m.image_encoder.precision",
    "tr2m.relative.precision",
    "depthclip.precision",
    "train.head_precision",
)


@pytest.mark.parametrize("recipe", ["pureclip_nyu", "tr2m_mixture"])
def test_the_released_precision_variant_changes_the_precisions_and_nothing_else(recipe):
    from clipdepth.config import first_difference
    from clipdepth.models import TR2M, PureCLIPDepth

    default, released = load_config(recipe), load_config([recipe, "variants/released_precision"])
    assert (default.train.head_precision, default.clip.precision) == ("auto", "auto")
    assert first_difference(config_to_dict(default), config_to_dict(released), ignore=PRECISION_FIELDS) is None
    t, cuda = released.tr2m, "cuda"
    assert released.train.head_precision == "fp32"
    # each release's own: PureCLIP-Depth's CLIP fp16 (clip.load on CUDA), TR2M's three encoders fp32
    assert PureCLIPDepth.device_precision(released.clip.precision, cuda) == "fp16"
    assert {TR2M.device_precision(p, cuda) for p in (released.clip.precision, t.image_encoder.precision, t.relative.precision)} == {"fp32"}
    assert {
        TR2M.device_precision(p, cuda)
        for p in (default.clip.precision, default.tr2m.image_encoder.precision, default.tr2m.relative.precision)
    } == {"bf16"}


def test_the_old_word_for_the_released_code_is_still_read():
    # "reference" was the word before "released": recipes, overrides, saved configs and `convert` take it still
    from clipdepth.cli.main import parse

    from clipdepth.cli.convert import _converter
    from clipdepth.registry import converter

    with pytest.warns(FutureWarning) as said:  # each earlier name once, naming today's and when it goes
        cfg = load_config("demo", ["pureclip.patch_rule=reference", "head.phrase_style=reference"])
    assert (cfg.pureclip.patch_rule, cfg.pureclip.phrase_style) == ("released", "released")
    assert [str(w.message).split(";")[0] for w in said] == [
        "override: 'pureclip.patch_rule=reference' is a deprecated clipdepth name, read as 'pureclip.patch_rule=released'",
        "override: 'head.phrase_style=reference' is a deprecated clipdepth name, read as 'pureclip.phrase_style=released'",
    ]
    assert all("stops working in clipdepth 0.4.0" in str(w.message) for w in said)
    saved = config_to_dict(cfg)
    saved["pureclip"]["patch_rule"] = "reference"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a saved config is read silently: the user did not write it
        assert load_config_dict(saved).pureclip.patch_rule == "released"
    args = parse(["convert", "tr2m-reference", "a.pth", "--out", "o"])
    renamed = "'clipdepth convert tr2m-reference' is a deprecated .* 'clipdepth convert tr2m-released'"
    with pytest.warns(FutureWarning, match=renamed) as said:
        assert _converter(args) is converter("tr2m-released") and args.kind == "tr2m-released"
    assert len(said) == 1
    with pytest.warns(FutureWarning, match="convert_pureclip_released") as said:
        from clipdepth.models.released import convert_pureclip_reference, convert_pureclip_released
    assert convert_pureclip_reference is convert_pureclip_released and len(said) == 1
