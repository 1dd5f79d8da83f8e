"""`clipdepth evaluate` and `data show` on the real NYU and KITTI samples (skipped without them)."""

import json

import pytest
import torch

from clipdepth.cli.main import main
from clipdepth.models import PureCLIPDepth

from .conftest import TINY_ENCODER

NYU = [
    "nyu/rgb_00000.jpg nyu/sync_depth_00000.png 518.8579",
    "nyu/rgb_00050.jpg nyu/sync_depth_00050.png 518.8579",
    "nyu/rgb_00100.jpg nyu/sync_depth_00100.png 518.8579",
]
KITTI = [
    "kitti/rgb/0000000005.png kitti/depth/0000000005.png 707.0493",
    "kitti/rgb/0000000050.png None 707.0493",  # a frame without ground truth, as in the Eigen list
    "kitti/rgb/0000000100.png kitti/depth/0000000100.png 707.0493",
]


@pytest.fixture
def checkpoint(tiny_cfg, tmp_path):
    torch.manual_seed(0)
    return PureCLIPDepth.build(tiny_cfg).save_pretrained(tmp_path / "ckpt")


@pytest.fixture
def perfect(monkeypatch):
    oracle = lambda *args, **kwargs: lambda frames: [(f.sample.depth, f.sample.depth) for f in frames]  # noqa: E731
    monkeypatch.setattr("clipdepth.evaluation.checkpoint.model_predictor", oracle)


@pytest.mark.parametrize("dataset, lines, scored, protocol", [("nyu", NYU, 3, "nyu"), ("kitti", KITTI, 2, "kitti")])
def test_perfect_predictor_on_real_samples(rgbd_samples, checkpoint, perfect, tmp_path, dataset, lines, scored, protocol):
    listing = tmp_path / f"{dataset}.txt"
    listing.write_text("\n".join(lines) + "\n")
    out = tmp_path / "eval"
    args = [
        "evaluate",
        "--checkpoint",
        str(checkpoint),
        "--dataset",
        dataset,
        "--data-root",
        str(rgbd_samples),
        "--split",
        str(listing),
        "--batch-size",
        "2",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["abs_rel"] == 0.0 and summary["d1"] == 1.0
    assert summary["n_images"] == scored and summary["n_listed"] == len(lines) and summary["protocol"] == protocol
    assert summary["n_without_gt"] == len(lines) - scored


def test_model_evaluation_on_real_nyu_runs_with_the_reference_crop(rgbd_samples, checkpoint, tmp_path):
    listing = tmp_path / "nyu.txt"
    listing.write_text("\n".join(NYU) + "\n")
    out = tmp_path / "eval"
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(checkpoint),
                "--dataset",
                "nyu",
                "--data-root",
                str(rgbd_samples),
                "--split",
                str(listing),
                "--out",
                str(out),
                "data.input_crop=[40,470,38,603]",
            ]
        )
        == 0
    )
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["n_images"] == 3 and 0 < summary["abs_rel"] < 10


def test_wrong_root_is_one_line_naming_the_first_missing_file(rgbd_samples, checkpoint, tmp_path, capsys):
    listing = tmp_path / "nyu.txt"
    listing.write_text("\n".join(NYU) + "\n")
    assert (
        main(["evaluate", "--checkpoint", str(checkpoint), "--dataset", "nyu", "--data-root", str(tmp_path), "--split", str(listing)]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "6 listed file(s) missing" in err and "rgb_00000.jpg" in err


def test_data_show_draws_a_contact_sheet(rgbd_samples, tmp_path):
    listing = tmp_path / "kitti.txt"
    listing.write_text("\n".join(KITTI) + "\n")
    out = tmp_path / "sheet.png"
    assert (
        main(
            ["data", "show", "--dataset", "kitti", "--data-root", str(rgbd_samples), "--split", str(listing), "-n", "2", "--out", str(out)]
        )
        == 0
    )
    from PIL import Image

    assert Image.open(out).size[0] > 500


@pytest.mark.parametrize("name, said", [("sheet", "has no file type"), ("sheet.txt", "type .txt is not an image type")])
def test_data_show_refuses_an_out_of_no_image_type_before_reading_frames(tmp_path, monkeypatch, capsys, name, said):
    def no_frames(*args, **kwargs):
        raise AssertionError("frames were read before --out was checked")

    monkeypatch.setattr("clipdepth.data.get_dataset", no_frames)
    out = tmp_path / name
    assert main(["data", "show", "--dataset", "synthetic_indoor", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"clipdepth data: error: {out}: {said}; end the name in one of ")
    assert ".jpg" in err and ".png" in err and ".svg" in err and err.endswith("(--out)")
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoint_given_as_a_file_is_named_a_file_and_its_folder_suggested(checkpoint, tmp_path, capsys):
    def evaluate(path):
        return main(["evaluate", "--checkpoint", str(path), "--dataset", "synthetic_indoor", "--out", str(tmp_path / "e")])

    weights = checkpoint / "model.safetensors"
    assert evaluate(weights) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{weights}: is a file, not a checkpoint folder; " in err
    assert err.endswith(f"(the checkpoint is likely its folder {checkpoint})")
    notes = tmp_path / "notes.txt"
    notes.write_text("not a checkpoint")
    assert evaluate(notes) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.endswith(
        f"{notes}: is a file, not a checkpoint folder; give the folder holding model.safetensors and config.json"
    )


def test_training_on_real_nyu_samples_end_to_end(rgbd_samples, tiny_cfg, tmp_path):
    """The pureclip_nyu recipe's path (split list, 9:1-style split, reference input crop) on real frames."""
    from clipdepth.config import load_config
    from clipdepth.training.run import Experiment

    listing = tmp_path / "train.txt"
    listing.write_text("\n".join(NYU + ["nyu/rgb_u0001.png nyu/sync_depth_u0001.png 518.8579"]) + "\n")
    cfg = load_config(
        "pureclip_nyu",
        [f"clip.{k}={v}" for k, v in TINY_ENCODER.items()]
        + [
            f"data.root={rgbd_samples}",
            f"data.train_list={listing}",
            "data.val_fraction=0.5",
            f"data.val_split_dir={tmp_path}",
            "train.max_epochs=1",
            "train.batch_size=2",
            f"output_dir={tmp_path / 'run'}",
        ],
    )
    result, train = Experiment.create(cfg).train(cfg.output_dir)
    assert len(train) == 2 and (result.model_dir / "model.safetensors").is_file()
    assert 0 < result.history[0]["val_abs_rel"] < 10
