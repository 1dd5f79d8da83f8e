"""Other models as rows scored by clipdepth's protocol: `evaluate --hf` with tiny random-weight
transformers depth models (DPT, Depth Anything, ZoeDepth) on the real NYU samples, checked against
the NYU protocol and the metrics re-derived here in numpy from each model's own post-processed
output; and `benchmark` with a transformers row, prediction-folder rows, a clipdepth checkpoint
row and the published rows in one table."""

from __future__ import annotations

import csv
import inspect
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipdepth.cli.main import main
from clipdepth.errors import ConfigError
from clipdepth.evaluation import benchmark
from clipdepth.evaluation.rows import ExternalRow
from clipdepth.models import PureCLIPDepth

transformers = pytest.importorskip("transformers")

NYU_CAP = (1e-3, 10.0)  # the NYU protocol's caps, metres
EIGEN = (45, 471, 41, 601)  # NYU Eigen crop on 480 x 640: rows 45..470, columns 41..600


# --------------------------------------------------------------------------- tiny models


# The tiny ViT every test model here is built on (DPT's own, ZoeDepth's BEiT backbone, ...).
TINY_VIT = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8)


def tiny_dpt(folder: Path) -> Path:
    """A DPT with random weights whose last layer is biased to ~2.5 so that its output lands in
    NYU's depth range (a metric-like model: scored as depth, without alignment)."""
    torch.manual_seed(0)
    config = transformers.DPTConfig(
        **TINY_VIT, backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, is_hybrid=False
    )
    model = transformers.DPTForDepthEstimation(config)
    with torch.no_grad():
        model.head.head[4].bias.fill_(2.5)
    model.save_pretrained(folder)
    transformers.DPTImageProcessor(size={"height": 32, "width": 32}, keep_aspect_ratio=False).save_pretrained(folder)
    return folder


def tiny_depth_anything(folder: Path, seed: int = 5) -> Path:
    """A Depth Anything (tiny DINOv2 backbone) with random weights: a relative head, its output a
    positive disparity-like map. Random weights fit 1/GT with a scale of either sign, frame by
    frame: with seed 5 every NYU sample's is positive, with seed 0 that of rgb_00100 is not."""
    torch.manual_seed(seed)
    backbone = transformers.Dinov2Config(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=28,
        patch_size=14,
        out_indices=[1, 2, 3, 4],
        reshape_hidden_states=False,
    )
    config = transformers.DepthAnythingConfig(
        backbone_config=backbone,
        fusion_hidden_size=16,
        neck_hidden_sizes=[8, 16, 32, 32],
        head_hidden_size=8,
        patch_size=14,
        reassemble_hidden_size=32,
    )
    model = transformers.DepthAnythingForDepthEstimation(config)
    with torch.no_grad():
        model.head.conv3.bias.fill_(1.0)
    model.save_pretrained(folder)
    processor = transformers.DPTImageProcessor(size={"height": 28, "width": 28}, keep_aspect_ratio=True, ensure_multiple_of=14)
    processor.save_pretrained(folder)
    return folder


def tiny_zoedepth(folder: Path) -> Path:
    """A ZoeDepth (tiny BEiT backbone) with random weights: a metric head."""
    torch.manual_seed(0)
    backbone = transformers.BeitConfig(**TINY_VIT, out_indices=[1, 2, 3, 4], use_relative_position_bias=True, reshape_hidden_states=False)
    config = transformers.ZoeDepthConfig(
        backbone_config=backbone,
        neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16,
        reassemble_hidden_size=32,
        bottleneck_features=16,
        num_attractors=[4, 4, 2, 2],
        bin_embedding_dim=16,
        num_relative_features=8,
        patch_size=8,
        readout_type="project",
    )
    transformers.ZoeDepthForDepthEstimation(config).save_pretrained(folder)
    processor = transformers.ZoeDepthImageProcessor(size={"height": 32, "width": 32}, keep_aspect_ratio=False, ensure_multiple_of=8)
    processor.save_pretrained(folder)
    return folder


# --------------------------------------------------------------------------- the NYU samples and numpy scoring


@pytest.fixture
def nyu(rgbd_samples, tmp_path):
    """(data root, split list, [(rgb, depth)]) of the NYU frames of the samples' manifest."""
    manifest = json.loads((rgbd_samples / "manifest.json").read_text())
    pairs = [(s["rgb"], s["depth"], s["intrinsics_fx_fy_cx_cy"][0]) for s in manifest["samples"] if s["dataset"] == "nyu"]
    listing = tmp_path / "nyu_test.txt"
    listing.write_text("".join(f"{rgb} {depth} {fx}\n" for rgb, depth, fx in pairs))
    return rgbd_samples, listing, [(rgb, depth) for rgb, depth, _ in pairs]


def frame_name(rgb: str) -> str:
    """A listed frame's name: its RGB path without suffix, "/" as "_"."""
    return str(Path(rgb).with_suffix("")).replace("/", "_")


def model_outputs(model_dir: Path, root: Path, pairs) -> list[tuple[np.ndarray, np.ndarray]]:
    """(prediction, GT) per frame: the model run on the photo as PIL reads it, the output put on the
    GT's grid by the processor's own post_process_depth_estimation; GT = uint16 / 1000 metres."""
    model = transformers.AutoModelForDepthEstimation.from_pretrained(model_dir).eval()
    processor = transformers.AutoImageProcessor.from_pretrained(model_dir)
    found = []
    for rgb, depth in pairs:
        gt = np.asarray(Image.open(root / depth), dtype=np.float64) / 1000.0
        with torch.no_grad():
            outputs = model(**processor(images=Image.open(root / rgb).convert("RGB"), return_tensors="pt"))
        sizes = [gt.shape]
        extra = {"source_sizes": sizes} if "source_sizes" in inspect.signature(processor.post_process_depth_estimation).parameters else {}
        pred = processor.post_process_depth_estimation(outputs, target_sizes=sizes, **extra)[0]["predicted_depth"]
        found.append((pred.double().numpy(), gt))
    return found


def nyu_valid(gt: np.ndarray) -> np.ndarray:
    crop = np.zeros(gt.shape, bool)
    crop[EIGEN[0] : EIGEN[1], EIGEN[2] : EIGEN[3]] = True
    return crop & (gt > NYU_CAP[0]) & (gt < NYU_CAP[1])


def numpy_metrics(pairs: list[tuple[np.ndarray, np.ndarray]], align: str = "none") -> dict[str, float]:
    """Mean over images of AbsRel, RMSE and d1 on the NYU protocol's valid pixels; ``lsq-disparity``:
    the prediction taken as disparity, scale and shift fitted to 1/GT there by least squares."""
    per_image = []
    for pred, gt in pairs:
        valid = nyu_valid(gt)
        if align == "lsq-disparity":
            design = np.stack([pred[valid], np.ones(valid.sum())], axis=1)
            (scale, shift), *_ = np.linalg.lstsq(design, 1.0 / gt[valid], rcond=None)
            assert scale > 0  # the tiny model's fit on these frames (else the CLI refuses, tested below)
            inverse = scale * pred + shift
            with np.errstate(divide="ignore"):
                pred = np.where(inverse > 0, 1.0 / inverse, np.inf)
        pred = np.clip(np.nan_to_num(pred, nan=NYU_CAP[0], posinf=NYU_CAP[1]), *NYU_CAP)
        p, g = pred[valid], gt[valid]
        per_image.append((np.mean(np.abs(p - g) / g), np.sqrt(np.mean((p - g) ** 2)), np.mean(np.maximum(p / g, g / p) < 1.25)))
    return dict(zip(("abs_rel", "rmse", "d1"), np.mean(per_image, axis=0)))


def evaluate_hf(model_dir, nyu, out, *extra):
    root, listing, _ = nyu
    command = ["evaluate", "--hf", str(model_dir), "--dataset", "nyu", "--data-root", str(root), "--split", str(listing)]
    return main([*command, "--batch-size", "3", "--workers", "0", "--out", str(out), *extra])


# --------------------------------------------------------------------------- evaluate --hf


def test_a_metric_dpt_is_scored_as_numpy_scores_its_own_post_processed_output(nyu, tmp_path, capsys):
    model = tiny_dpt(tmp_path / "dpt")
    assert evaluate_hf(model, nyu, tmp_path / "eval") == 0
    printed = capsys.readouterr().out
    assert "prediction read as depth, alignment none" in printed.splitlines()[0]
    summary = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    expected = numpy_metrics(model_outputs(model, nyu[0], nyu[2]))
    assert {k: summary[k] for k in expected} == pytest.approx(expected, rel=1e-6)
    assert 0 < summary["d1"] < 1  # the bias puts it in range: a d1 that can be wrong either way
    assert summary["n_images"] == len(nyu[2]) == 4 and summary["protocol"] == "nyu" and summary["flip_tta"] is False
    assert (summary["align"], summary["pred_kind"], summary["model_class"]) == ("none", "depth", "DPTForDepthEstimation")
    per_image = list(csv.DictReader(io.StringIO((tmp_path / "eval" / "per_image.csv").read_text())))
    assert [r["name"] for r in per_image] == [frame_name(rgb) for rgb, _ in nyu[2]]


def test_a_relative_depth_anything_is_aligned_in_inverse_depth(nyu, tmp_path, capsys):
    model = tiny_depth_anything(tmp_path / "da")
    assert evaluate_hf(model, nyu, tmp_path / "eval", "--align", "lsq-disparity", "--pred-kind", "disparity") == 0
    assert "prediction read as disparity, alignment lsq-disparity" in capsys.readouterr().out.splitlines()[0]
    summary = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    expected = numpy_metrics(model_outputs(model, nyu[0], nyu[2]), align="lsq-disparity")
    assert {k: summary[k] for k in expected} == pytest.approx(expected, rel=1e-6)
    assert (summary["align"], summary["pred_kind"]) == ("lsq-disparity", "disparity")
    assert "alignment lsq-disparity" in (tmp_path / "eval" / "results.md").read_text()


def test_a_zoedepth_is_post_processed_by_its_own_processor(nyu, tmp_path):
    # transformers' ZoeDepth processor resizes its output with torchvision (both backends).
    pytest.importorskip("torchvision", reason="ZoeDepth's post_process_depth_estimation calls torchvision, which is not installed")
    model = tiny_zoedepth(tmp_path / "zoe")
    assert evaluate_hf(model, nyu, tmp_path / "eval") == 0
    summary = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    expected = numpy_metrics(model_outputs(model, nyu[0], nyu[2]))
    assert {k: summary[k] for k in expected} == pytest.approx(expected, rel=1e-6)


def test_an_alignment_that_would_mirror_the_prediction_names_its_frame(nyu, tmp_path, capsys):
    model = tiny_depth_anything(tmp_path / "mirrored", seed=0)
    capsys.readouterr()
    assert evaluate_hf(model, nyu, tmp_path / "eval", "--align", "lsq-disparity", "--pred-kind", "disparity") == 2
    err = capsys.readouterr().err.strip()
    assert "frame nyu_rgb_00100: least-squares alignment in inverse depth gave scale -" in err and "\n" not in err
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_model_options_of_the_other_kind_are_refused_in_one_line(nyu, tmp_path, capsys, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert evaluate_hf("nobody/no-such-depth-model", nyu, tmp_path / "eval") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("clipdepth evaluate: error: nobody/no-such-depth-model: cannot load")
    assert "needs network access to the Hugging Face Hub, or a local folder" in err

    (tmp_path / "not_a_model").mkdir()
    assert evaluate_hf(tmp_path / "not_a_model", nyu, tmp_path / "eval") == 2
    assert "not_a_model: no config.json: not a folder written by save_pretrained (--hf)" in capsys.readouterr().err

    model = tiny_dpt(tmp_path / "dpt")
    capsys.readouterr()
    assert evaluate_hf(model, nyu, tmp_path / "eval", "--tta") == 2
    assert "--tta/--no-tta is only for clipdepth checkpoints (--checkpoint)" in capsys.readouterr().err
    assert evaluate_hf(model, nyu, tmp_path / "eval", "--pred-kind", "disparity") == 2
    assert "has no metres without alignment: use --align lsq-disparity" in capsys.readouterr().err
    assert main(["evaluate", "--hf", str(model), "--data-root", str(nyu[0])]) == 2
    assert "no dataset: a model that clipdepth did not train has none of its own" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:  # argparse's own refusal
        main(["evaluate", "--checkpoint", "x", "--hf", str(model), "--dataset", "nyu"])
    assert exited.value.code == 2 and "argument --hf: not allowed with argument --checkpoint" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", "x", "--align", "median"]) == 2
    assert "--align is only for transformers models (--hf)" in capsys.readouterr().err


# --------------------------------------------------------------------------- benchmark rows


@pytest.mark.parametrize(
    "text, row",
    [
        ("a=org/model", ("a", "org/model", "none", "depth")),
        ("a=org/model:lsq-disparity", ("a", "org/model", "lsq-disparity", "depth")),
        ("a=org/model:lsq-disparity:disparity", ("a", "org/model", "lsq-disparity", "disparity")),
        ("a=/x/c:d/m:median", ("a", "/x/c:d/m", "median", "depth")),  # a ":" inside the source stays
        ("a=/x/c:disparity", ("a", "/x/c:disparity", "none", "depth")),  # a kind alone is no suffix
    ],
)
def test_row_syntax(text, row):
    parsed = ExternalRow.parse(text, "transformers")
    assert (parsed.name, parsed.source, parsed.align, parsed.pred_kind) == row


def test_bad_rows_are_refused():
    with pytest.raises(ConfigError, match="expected LABEL=SOURCE"):
        ExternalRow.parse("org/model", "transformers")
    with pytest.raises(ConfigError, match="has no metres without alignment"):
        ExternalRow.parse("a=org/model:none:disparity", "transformers")
    with pytest.raises(ConfigError, match="unknown alignment 'mean'"):
        ExternalRow("a", "predictions", "/preds", align="mean")
    assert ExternalRow.parse("a=/preds:lsq-disparity:disparity", "predictions").pred_kind == "disparity"


def test_one_table_holds_a_checkpoint_a_transformers_model_prediction_folders_and_the_papers(nyu, tiny_cfg, tmp_path, capsys, monkeypatch):
    root, pairs = nyu[0], nyu[2][:2]  # two frames keep it quick: four evaluations, twice
    listing = tmp_path / "nyu_two.txt"
    listing.write_text("".join(f"{rgb} {depth}\n" for rgb, depth in pairs))
    torch.manual_seed(0)
    checkpoint = PureCLIPDepth.build(tiny_cfg).save_pretrained(tmp_path / "ckpt")
    dpt = tiny_dpt(tmp_path / "dpt")
    outputs = model_outputs(dpt, root, pairs)
    capsys.readouterr()
    # "copy": the DPT's own outputs saved as .npy, one folder per label; "scaled": the GT x 3 (any
    # positive value where the GT has none), the folder itself for a one-label suite, median-scaled.
    (tmp_path / "copy" / "nyu").mkdir(parents=True)
    (tmp_path / "scaled").mkdir()
    for (rgb, _), (pred, gt) in zip(pairs, outputs):
        np.save(tmp_path / "copy" / "nyu" / f"{frame_name(rgb)}.npy", pred.astype(np.float32))
        np.save(tmp_path / "scaled" / f"{frame_name(rgb)}.npy", np.where(gt > 0, 3 * gt, 7.0).astype(np.float32))
    suite = tmp_path / "nyu_suite.yaml"
    suite.write_text("published: pureclip-nyu\nentries:\n  - {label: nyu, dataset: nyu}\n")
    out = tmp_path / "bench"
    command = ["benchmark", "--suite", str(suite), "--checkpoint", str(checkpoint), "--name", "tiny-ckpt"]
    command += ["--data", f"nyu.root={root}", "--data", f"nyu.test_list={listing}", "--hf", f"dpt={dpt}"]
    command += ["--pred", f"copy={tmp_path / 'copy'}", "--pred", f"scaled={tmp_path / 'scaled'}:median"]
    command += ["--out", str(out), "--workers", "0", "--batch-size", "3"]
    assert main(command) == 0
    assert "4 evaluated, 0 reused" in capsys.readouterr().out

    rows = list(csv.DictReader(io.StringIO((out / "nyu_suite" / "table.csv").read_text())))
    assert [r["kind"] for r in rows] == ["published"] * 4 + ["ours", "transformers", "predictions", "predictions"]
    assert [r["method"] for r in rows][3:] == ["PureCLIP-Depth", "tiny-ckpt", "dpt", "copy", "scaled"]
    assert rows[3]["nyu.abs_rel"] == "0.201"  # the paper's row, as printed
    by_name = {r["method"]: r for r in rows}
    expected = numpy_metrics(outputs)
    assert float(by_name["dpt"]["nyu.abs_rel"]) == pytest.approx(expected["abs_rel"], rel=1e-5)
    assert float(by_name["dpt"]["nyu.rmse"]) == pytest.approx(expected["rmse"], rel=1e-5)
    assert float(by_name["dpt"]["nyu.d1"]) == pytest.approx(expected["d1"], rel=1e-5)
    columns = ["nyu.abs_rel", "nyu.rmse", "nyu.log10", "nyu.d1", "nyu.d2", "nyu.d3"]
    assert [by_name["copy"][c] for c in columns] == [by_name["dpt"][c] for c in columns]  # one output, two roads
    assert float(by_name["scaled"]["nyu.abs_rel"]) < 1e-6 and by_name["scaled"]["nyu.d1"] == "1"
    assert "RANDOM weights" in by_name["tiny-ckpt"]["source"] and "alignment median" in by_name["scaled"]["source"]
    assert "RANDOM weights (normalisation layers at their initial values)" in by_name["dpt"]["source"]
    table = (out / "nyu_suite" / "table.md").read_text()
    assert "| **ours: tiny-ckpt** |" in table and "| **dpt** (transformers) |" in table
    assert "| **scaled** (saved predictions, median alignment) |" in table
    assert f"predictions in `{tmp_path / 'scaled'}`, matched by frame name" in table
    # The suite's ground truth, written once for the prediction folders: NYU's millimetres exactly.
    (gt_folder,) = (out / "nyu_suite" / ".ground_truth").iterdir()
    for (rgb, _), (_, gt) in zip(pairs, outputs):
        written = Image.open(gt_folder / f"{frame_name(rgb)}.png")
        assert np.array_equal(np.asarray(written, np.float64) / float(written.info["depth_scale"]), gt)

    # Again: the checkpoint and the transformers model are reused, the folders scored again.
    def refuse(*args, **kwargs):
        raise AssertionError("a finished evaluation was run again")

    monkeypatch.setattr(benchmark, "evaluate_hf", refuse)
    monkeypatch.setattr(benchmark, "evaluate_checkpoint", refuse)
    assert main(command) == 0
    assert "2 evaluated, 2 reused" in capsys.readouterr().out
    assert list(csv.DictReader(io.StringIO((out / "nyu_suite" / "table.csv").read_text()))) == rows

    # Another alignment for the same row is another evaluation: refused, not reused.
    assert main([*command[: command.index("--hf") + 1], f"dpt={dpt}:median", *command[command.index("--hf") + 2 :]]) == 2
    err = capsys.readouterr().err.strip()
    assert "dpt/nyu/metrics.json: an earlier evaluation with transformers model" in err and "alignment none" in err and "\n" not in err
    # A prediction folder under the transformers row's name (no checkpoint row this time) would
    # write over that row's results: refused, not overwritten.
    data = command[command.index("--data") : command.index("--hf")]
    assert main(["benchmark", "--suite", str(suite), *data, "--pred", f"dpt={tmp_path / 'copy'}", "--out", str(out)]) == 2
    assert "dpt/nyu/metrics.json: the results of another evaluation than a prediction folder's" in capsys.readouterr().err
    assert json.loads((out / "nyu_suite" / "dpt" / "nyu" / "metrics.json").read_text())["model"] == str(dpt)


def test_rows_need_their_own_names_and_a_folder_for_some_label(nyu, tmp_path, capsys):
    root, listing, _ = nyu
    dpt = tiny_dpt(tmp_path / "dpt")
    (tmp_path / "empty").mkdir()
    capsys.readouterr()
    base = ["benchmark", "--suite", "tr2m-indomain", "--data", f"nyu.root={root}", "--data", f"nyu.test_list={listing}"]
    assert main([*base, "--hf", f"a={dpt}", "--hf", f"a={dpt}:median", "--out", str(tmp_path / "b")]) == 2
    assert "row 'a' is given twice" in capsys.readouterr().err
    assert main([*base, "--pred", f"p={tmp_path / 'empty'}", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "holds no folder of a dataset label of suite tr2m-indomain (nyu, kitti, void, c3vd)" in err and "(--hf/--pred)" in err
    assert not (tmp_path / "b").exists()
