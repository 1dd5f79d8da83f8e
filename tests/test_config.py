"""Recipes: defaults, layering, overrides, and one clear error for a bad key or value."""
import pytest

from clipdepth.cli.main import main
from clipdepth.config import Config, config_from_dict, config_to_dict, load_config
from clipdepth.errors import ConfigError


def test_defaults_are_the_reference_recipe():
    cfg = load_config()
    assert cfg.encoder.name == "openai/clip-vit-large-patch14-336" and not cfg.encoder.random_init
    assert (cfg.head.num_bins, cfg.head.tau, cfg.head.phrase_style) == (15, 0.07, "reference")
    t = cfg.train
    assert (t.phase_steps, t.embed_lr, t.embed_weight_decay, t.depth_lr, t.depth_weight_decay) == (100, 3e-4, 1e-2, 1e-3, 0.0)
    assert (t.batch_size, t.freeze_table_in_depth_phase, t.decay_start, t.patience) == (8, False, 10, 200)


def test_layered_recipes_and_overrides_in_order(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text("base: demo\ntrain:\n  max_epochs: 7\n")
    cfg = load_config([mine, "variants/paper"], ["train.patience=9", "head.use_cls=false"])
    assert cfg.encoder.random_init and cfg.train.max_epochs == 7  # from demo, then mine
    assert cfg.train.freeze_table_in_depth_phase and cfg.loss.patch_rule == "paper"  # from the variant
    assert cfg.train.patience == 9 and cfg.head.use_cls is False  # overrides win
    assert config_from_dict(config_to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.batchsize=4"], "batchsize"),
        (["train.batch_size=four"], "batch_size"),
        (["train.batch_size"], "not of the form"),
    ],
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
    assert main(["train", "encoder.random_init=false", f"encoder.name={missing}", f"output_dir={tmp_path}/run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(missing) in err and "Traceback" not in err
