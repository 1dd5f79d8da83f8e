"""`clipdepth benchmark`: the tr2m-zeroshot suite on tiny datasets written here in each zero-shot
set's real format, with a random-weight TR2M (never a trained one, and the table says so); the
published rows beside ours; resuming; the average rank on hand-made examples; bad inputs."""

from __future__ import annotations

import csv
import io
import json

import h5py
import numpy as np
import pytest
from PIL import Image

from clipdepth.cli.main import main
from clipdepth.config import DataConfig, config_to_dict, load_config_dict
from clipdepth.data import get_dataset
from clipdepth.errors import ConfigError
from clipdepth.evaluation import benchmark
from clipdepth.evaluation.benchmark import weights_summary
from clipdepth.evaluation.published import average_ranks, parse_published, published_tables
from clipdepth.models import build_model

from .conftest import TINY_DEPTH_ANYTHING

SHAPE = (24, 32)


def rgb(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*SHAPE, 3), dtype=np.uint8)).save(path)


def png16(path, units):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(units, np.uint16)).save(path)


def metres(seed, low=1.0, high=6.0):
    return np.random.default_rng(100 + seed).uniform(low, high, SHAPE)


def sun_rgbd(root):
    """Bit-rotated millimetre PNGs (the raw release's), listed BTS style."""
    lines = []
    for i in range(2):
        mm = np.round(metres(i) * 1000).astype(np.uint32)
        png16(root / "depth" / f"{i:06d}.png", ((mm << 3) | (mm >> 13)) & 0xFFFF)
        rgb(root / "image" / f"{i:06d}.jpg", i)
        lines.append(f"image/{i:06d}.jpg depth/{i:06d}.png 518.8579")
    (root / "test.txt").write_text("\n".join(lines) + "\n")


def ibims(root):
    """uint16 x 50 / 65535 m, with its invalid and transparent masks beside depth/."""
    lines = []
    for i, scene in enumerate(("corridor_01", "office_02")):
        png16(root / "depth" / f"{scene}.png", np.round(metres(i) * 65535 / 50))
        for mask in ("mask_invalid", "mask_transp"):
            (root / mask).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full(SHAPE, 255, np.uint8)).save(root / mask / f"{scene}.png")
        rgb(root / "rgb" / f"{scene}.png", 10 + i)
        lines.append(f"rgb/{scene}.png depth/{scene}.png")
    (root / "test.txt").write_text("\n".join(lines) + "\n")


def hypersim(root):
    """Ray distances in metres in HDF5 (key dataset), beside the tonemapped JPEG."""
    lines = []
    for i in range(2):
        image = f"ai_001_001/images/scene_cam_00_final_preview/frame.{i:04d}.tonemap.jpg"
        depth = f"ai_001_001/images/scene_cam_00_geometry_hdf5/frame.{i:04d}.depth_meters.hdf5"
        rgb(root / image, 20 + i)
        (root / depth).parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(root / depth, "w") as handle:
            handle["dataset"] = metres(20 + i)
        lines.append(f"{image} {depth}")
    (root / "test.txt").write_text("\n".join(lines) + "\n")


def diode(root):
    """(H, W, 1) metres in .npy with its validity mask."""
    lines = []
    for i in range(2):
        stem = f"scene_00022/scan_00183/00022_00183_outdoor_000_{i:03d}"
        rgb(root / f"{stem}.png", 30 + i)
        np.save(root / f"{stem}_depth.npy", metres(30 + i, 2.0, 40.0)[..., None].astype(np.float32))
        np.save(root / f"{stem}_depth_mask.npy", np.ones(SHAPE, np.float32))
        lines.append(f"{stem}.png {stem}_depth.npy")
    (root / "test.txt").write_text("\n".join(lines) + "\n")


def simcol(root):
    """PNG x 200 / (255 x 256) mm, folders listed in misc/test_file.txt."""
    (root / "misc").mkdir(parents=True)
    (root / "misc" / "test_file.txt").write_text("SyntheticColon_I/Frames_S1/\n")
    folder = root / "SyntheticColon_I" / "Frames_S1"
    for i in range(2):
        rgb(folder / f"FrameBuffer_{i:04d}.png", 40 + i)
        png16(folder / f"Depth_{i:04d}.png", np.round(metres(40 + i, 0.01, 0.09) * 1000 * 255 * 256 / 200))


@pytest.fixture
def zeroshot_data(tmp_path):
    """The five zero-shot sets as --data settings: roots and lists on the command line, captions
    from a YAML file (a caption folder for SUN RGB-D, one caption for the others; SimCol has its own)."""
    writers = {"sun_rgbd": sun_rgbd, "ibims": ibims, "hypersim": hypersim, "diode": diode, "simcol": simcol}
    args = []
    for label, write in writers.items():
        root = tmp_path / "data" / label
        root.mkdir(parents=True)
        write(root)
        args += ["--data", f"{label}.root={root}"]
        if label != "simcol":
            args += ["--data", f"{label}.test_list={root / 'test.txt'}"]
    captions = tmp_path / "captions" / "sun_rgbd"
    captions.mkdir(parents=True)
    sun = DataConfig(
        dataset="sun_rgbd", root=str(tmp_path / "data" / "sun_rgbd"), test_list=str(tmp_path / "data" / "sun_rgbd" / "test.txt")
    )
    for name in get_dataset(sun, "test").names:
        (captions / f"{name}.txt").write_text("An image of a bedroom with a bed and a lamp.\nAn image with one bed.\n")
    settings = tmp_path / "datasets.yaml"
    settings.write_text(
        f"sun_rgbd: {{caption_dir: {captions}}}\n"
        + "".join(f"{label}: {{caption: An image of a room.}}\n" for label in ("ibims", "hypersim", "diode"))
    )
    return [*args, "--data", str(settings)]


@pytest.fixture
def random_tr2m(tiny_tr2m_cfg, tmp_path):
    """A TR2M checkpoint with RANDOM weights everywhere (text encoder, DINOv2, Depth Anything, head)."""
    import torch

    cfg = load_config_dict(config_to_dict(tiny_tr2m_cfg), TINY_DEPTH_ANYTHING)
    torch.manual_seed(0)
    return build_model(cfg).save_pretrained(tmp_path / "random_tr2m")


def read_csv(path):
    return list(csv.DictReader(io.StringIO(path.read_text())))


def test_the_zeroshot_suite_tabulates_a_random_tr2m_beside_the_published_rows(random_tr2m, zeroshot_data, tmp_path, capsys, monkeypatch):
    out = tmp_path / "bench"
    command = [
        "benchmark",
        "--suite",
        "tr2m-zeroshot",
        "--checkpoint",
        str(random_tr2m),
        "--name",
        "tiny",
        *zeroshot_data,
        "--out",
        str(out),
        "--workers",
        "0",
        "--batch-size",
        "2",
    ]
    assert main(command) == 0
    assert "5 evaluated, 0 reused" in capsys.readouterr().out

    labels = ["sun_rgbd", "ibims", "hypersim", "diode", "simcol"]
    summaries = {}
    for label in labels:
        folder = out / "tr2m-zeroshot" / "tiny" / label
        assert {p.name for p in folder.iterdir()} == {"metrics.json", "per_image.csv", "results.md"}
        summaries[label] = json.loads((folder / "metrics.json").read_text())
        assert summaries[label]["n_images"] == 2 and summaries[label]["flip_tta"] is False
    assert summaries["simcol"]["protocol"] == "simcol" and summaries["sun_rgbd"]["protocol"] == "synthetic_indoor"

    table = (out / "tr2m-zeroshot" / "table.md").read_text()
    rows = read_csv(out / "tr2m-zeroshot" / "table.csv")
    columns = [f"{label}.d1" for label in labels]
    # The published rows, as printed, with their source; then ours in the same columns.
    assert [r["method"] for r in rows] == ["ZoeDepth", "DA Single", "UniDepth", "RSA", "TR2M", "tiny"]
    assert [r["kind"] for r in rows] == ["published"] * 5 + ["ours"]
    tr2m = rows[4]
    assert [tr2m[c] for c in columns] == ["0.591", "0.736", "0.361", "0.274", "0.445"] and tr2m["avg_rank_paper"] == "2.40"
    assert tr2m["backbone"] == "ViT-S" and "arXiv 2506.13387" in tr2m["source"] and "Table 3" in tr2m["source"]
    assert rows[2]["simcol.d1"] == ""  # UniDepth: not reported
    ours = rows[5]
    assert [float(ours[c]) for c in columns] == pytest.approx([summaries[label]["d1"] for label in labels], abs=1e-5)
    assert "RANDOM weights" in ours["source"] and "flip TTA off" in ours["source"]
    # Avg rank (here) ranks all six rows on the printed d1 values.
    values = [{c: (float(r[c]) if r[c] else None) for c in columns} for r in rows]
    expected = average_ranks(values, columns)
    assert [float(r["avg_rank_here"]) for r in rows] == pytest.approx(expected, abs=1e-3)
    assert "| ZoeDepth | BeiT384-L | - | 0.545 | 0.656 | 0.302 | 0.237 | 0.438 | 4.70 |" in table
    assert "| **ours: tiny** |" in table and "SUN RGB-D d1 ↑" in table
    assert "RANDOM weights (random frozen parts: clip, tr2m.image_encoder, tr2m.relative; head untrained" in table
    assert "flip TTA off" in table and "SimCol ground truth is read in metres" in table

    # A second run reuses every finished evaluation: nothing is scored again.
    def refuse(*args, **kwargs):
        raise AssertionError("a finished evaluation was run again")

    monkeypatch.setattr(benchmark, "evaluate_checkpoint", refuse)
    before = {label: (out / "tr2m-zeroshot" / "tiny" / label / "metrics.json").stat().st_mtime_ns for label in labels}
    assert main(command) == 0
    assert "0 evaluated, 5 reused" in capsys.readouterr().out
    assert before == {label: (out / "tr2m-zeroshot" / "tiny" / label / "metrics.json").stat().st_mtime_ns for label in labels}
    assert read_csv(out / "tr2m-zeroshot" / "table.csv") == rows

    # An evaluation cut short (results.md missing) is done again; one of another setting is refused.
    (out / "tr2m-zeroshot" / "tiny" / "ibims" / "results.md").unlink()
    suite, plan, _ = benchmark.plan_benchmark("tr2m-zeroshot", random_tr2m, name="tiny", data=_fields(zeroshot_data), out=out)
    assert [e.status for e in plan] == ["reused", "pending", "reused", "reused", "reused"]
    assert main([*command, "--tta"]) == 2
    err = capsys.readouterr().err.strip()
    assert "sun_rgbd/metrics.json: an earlier evaluation with" in err and "flip TTA off" in err and "\n" not in err

    # Other data settings, or a checkpoint trained again into the same folder: refused, not reused.
    assert main([*command, "--data", "sun_rgbd.caption=Another caption."]) == 2
    err = capsys.readouterr().err.strip()
    assert "sun_rgbd/metrics.json: data.caption changed (None then, 'Another caption.' now) since that evaluation" in err
    with (random_tr2m / "config.json").open("a") as f:
        f.write("\n")
    assert main(command) == 2
    assert f"sun_rgbd/metrics.json: the checkpoint {random_tr2m} changed (its files differ)" in capsys.readouterr().err


def _fields(args):
    """The --data settings of the command line as run_benchmark's ``data`` (files included)."""
    from clipdepth.cli.benchmark import _data_settings

    return _data_settings([args[i + 1] for i, a in enumerate(args) if a == "--data"])


def test_average_rank_on_a_hand_made_example():
    # Column x.d1 (higher is better): A 0.900 -> 1; B 0.800 and C 0.8004 (printed 0.800) tie for
    # ranks 2 and 3 -> 2.5 each; D 0.600 -> 4.
    # Column y.d1: C 0.700 -> 1; A and B 0.500 tie for 2 and 3 -> 2.5 each; D not reported.
    # Column z.abs_rel (lower is better): A 0.100 -> 1, D 0.200 -> 2, C 0.300 -> 3; B not reported.
    # Averages over the columns each row has: A (1 + 2.5 + 1) / 3 = 1.5; B (2.5 + 2.5) / 2 = 2.5;
    # C (2.5 + 1 + 3) / 3 = 6.5 / 3; D (4 + 2) / 2 = 3.0; E has no value: None.
    rows = [
        {"x.d1": 0.900, "y.d1": 0.500, "z.abs_rel": 0.100},
        {"x.d1": 0.800, "y.d1": 0.500, "z.abs_rel": None},
        {"x.d1": 0.8004, "y.d1": 0.700, "z.abs_rel": 0.300},
        {"x.d1": 0.600, "z.abs_rel": 0.200},
        {"x.d1": None},
    ]
    columns = ["x.d1", "y.d1", "z.abs_rel"]
    assert average_ranks(rows, columns) == pytest.approx([1.5, 2.5, 6.5 / 3, 3.0, None])
    # Unrounded, C's 0.8004 beats B: x ranks A 1, C 2, B 3, D 4 -> B (3 + 2.5) / 2, C (2 + 1 + 3) / 3.
    assert average_ranks(rows, columns, decimals=None) == pytest.approx([1.5, 2.75, 2.0, 3.0, None])


def test_average_rank_of_the_published_zeroshot_rows_by_hand():
    # d1 ranks per column (SUN, iBims, HyperSim, DIODE, SimCol):
    # ZoeDepth 3, 3, 4, 5, 3 -> 3.6; DA Single 1, 2, 2.5, 2, 1 -> 1.7; UniDepth 5, 5, 1, 1, - -> 3.0;
    # RSA 4, 4, 5, 4, 4 -> 4.2; TR2M 2, 1, 2.5, 3, 2 -> 2.1 (DA and TR2M tie at 0.361 on HyperSim).
    # The paper prints 4.70, 2.80, 4.00, 5.80, 2.40: ranked over more than these five d1 columns and
    # rows (RSA's 5.80 is more than five rows allow), hence both columns in the table.
    table = published_tables()["tr2m-zeroshot"]
    assert average_ranks([r.values for r in table.rows], table.columns) == pytest.approx([3.6, 1.7, 3.0, 4.2, 2.1])
    assert [r.avg_rank for r in table.rows] == [4.70, 2.80, 4.00, 5.80, 2.40]


def test_published_millimetres_are_converted_to_metres():
    data = {
        "paper": "P: a paper",
        "arxiv": "0000.00000",
        "tables": [
            {
                "id": "colon",
                "table": "Table 9",
                "units": "mm",
                "columns": ["c3vd.rmse", "c3vd.abs_rel", "c3vd.d1"],
                "rows": [{"method": "M", "values": {"c3vd.rmse": 4.5, "c3vd.abs_rel": 0.12, "c3vd.d1": 0.8}}],
            }
        ],
    }
    (table,) = parse_published(data, "test")
    assert table.rows[0].values == pytest.approx({"c3vd.rmse": 0.0045, "c3vd.abs_rel": 0.12, "c3vd.d1": 0.8})
    with pytest.raises(ConfigError, match="units 'cm'"):
        parse_published({**data, "tables": [{**data["tables"][0], "units": "cm"}]}, "test")


def test_bad_inputs_are_one_line_before_any_evaluation(random_tr2m, zeroshot_data, tmp_path, capsys):
    assert main(["benchmark", "--suite", "tr2m-fewshot", "--checkpoint", str(random_tr2m), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "clipdepth benchmark: error: unknown suite 'tr2m-fewshot': choose one of tr2m-indomain, tr2m-zeroshot, "
        "pureclip-nyu, pureclip-kitti, or give a suite YAML file (--suite)"
    )
    # Every data setting but HyperSim's root: refused before the first evaluation runs.
    pairs = [zeroshot_data[i : i + 2] for i in range(0, len(zeroshot_data), 2)]
    args = [a for pair in pairs if not pair[1].startswith("hypersim.root=") for a in pair]
    assert main(["benchmark", "--suite", "tr2m-zeroshot", "--checkpoint", str(random_tr2m), *args, "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "tr2m-zeroshot/" in err
    assert "/hypersim: no data root for dataset 'hypersim'; set hypersim.root=<folder>" in err
    assert not (tmp_path / "b" / "tr2m-zeroshot").exists()
    assert main(["benchmark", "--suite", "tr2m-zeroshot", "--checkpoint", str(random_tr2m), "--data", "sun_rgbd=/x"]) == 2
    assert "expected LABEL.FIELD=VALUE" in capsys.readouterr().err


def test_a_suite_file_lists_checkpoint_by_dataset_pairs(random_tr2m, tmp_path):
    root = tmp_path / "simcol"
    root.mkdir()
    simcol(root)
    suite = tmp_path / "mine.yaml"
    suite.write_text(
        "published: tr2m-zeroshot\n"
        "entries:\n"
        f"  - {{label: simcol, recipe: zeroshot/simcol, checkpoint: {random_tr2m}, name: first, data: {{root: {root}}}}}\n"
        f"  - {{label: simcol, recipe: zeroshot/simcol, checkpoint: {random_tr2m}, name: second, data: {{root: {root}}}}}\n"
    )
    result = benchmark.run_benchmark(suite, out=tmp_path / "out", workers=0)
    assert [r.name for r in result.rows] == ["first", "second"] and result.suite.name == "mine"
    assert (tmp_path / "out" / "mine" / "first" / "simcol" / "metrics.json").is_file()
    rows = read_csv(tmp_path / "out" / "mine" / "table.csv")
    assert [r["method"] for r in rows][-2:] == ["first", "second"] and rows[-1]["simcol.d1"] == rows[-2]["simcol.d1"]
    assert rows[-1]["sun_rgbd.d1"] == ""  # this suite scored SimCol only
    suite.write_text("entries:\n  - {label: simcol, checkpiont: x}\n")
    with pytest.raises(ConfigError, match=r"mine.yaml: entry 1: unknown key 'checkpiont'"):
        benchmark.load_suite(suite)


def test_the_indomain_table_puts_nyu_beside_table_1_and_the_other_sets_alone():
    from pathlib import Path

    from clipdepth.evaluation.benchmark import SUITES, Evaluation, OurRow, benchmark_table

    suite = SUITES["tr2m-indomain"]
    scored = {
        "nyu": (0.9, 0.1, 0.35, "nyu"),
        "kitti": (0.8, 0.12, 4.1, "kitti"),
        "void": (0.5, 0.3, 0.8, "void"),
        "c3vd": (0.7, 0.2, 0.00412, "c3vd"),
    }
    evaluations = []
    for entry in suite.entries:
        d1, abs_rel, rmse, protocol = scored[entry.label]
        summary = {"d1": d1, "abs_rel": abs_rel, "rmse": rmse, "flip_tta": False, "n_images": 3}
        evaluations.append(
            Evaluation(entry, "run", "ckpt", Path("x"), DataConfig(dataset=entry.label), [], protocol, False, "ran", summary)
        )
    row = OurRow("run", "ckpt", True, "real weights (pretrained frozen parts; head trained (saved at epoch 20))", evaluations)
    markdown, text = benchmark_table(suite, [row])
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["method"] for r in rows][-2:] == ["TR2M", "run"] and rows[-2]["nyu.d1"] == "0.954" and rows[-2]["kitti.d1"] == ""
    assert rows[-1]["c3vd.rmse"] == "0.00412" and "avg_rank_here" not in rows[-1]  # Table 1 ranks nothing
    assert (
        "| **ours: run** |  |  | 0.900 | 0.100 | 0.350 | 0.800 | 0.120 | 4.100 | 0.500 | 0.300 | 0.800 | 0.700 | 0.200 | 0.00412 |"
    ) in markdown
    assert "No published numbers are shipped for KITTI, VOID, C3VD" in markdown and "real weights" in markdown
    assert "C3VD and SimCol ground truth is read in metres" in markdown


# --------------------------------------------------------------------------- what the weights are


def clip_folder(folder, clip_cfg, trained):
    """A CLIP saved by save_pretrained (weights and tokenizer), of random weights; ``trained``: its
    normalisation layers moved off their initial values, a stand-in for trained weights."""
    import torch

    from clipdepth.encoders.clip import CLIPEncoder

    encoder = CLIPEncoder.from_config(clip_cfg)
    if trained:
        with torch.no_grad():
            for module in encoder.model.modules():
                if isinstance(module, torch.nn.LayerNorm):
                    module.weight.mul_(1.01)
                    module.bias.add_(0.01)
    encoder.model.save_pretrained(folder)
    encoder.tokenizer.save_pretrained(folder)
    return folder


def test_random_weights_named_by_path_are_labelled_random_from_the_weights_themselves(tiny_cfg, tmp_path):
    """Item 5: the label comes from what the weights are (normalisation layers at their initial
    values), not from where they were loaded: a folder of random CLIP weights named by path is
    RANDOM; the same folder with its normalisation layers perturbed is real."""
    import torch

    checkpoints = {}
    for kind in ("random", "trained"):
        folder = clip_folder(tmp_path / f"clip_{kind}", tiny_cfg.clip, trained=kind == "trained")
        cfg = load_config_dict(config_to_dict(tiny_cfg), ["clip.random_init=false", f"clip.name={folder}"])
        torch.manual_seed(0)
        checkpoints[kind] = build_model(cfg).save_pretrained(tmp_path / f"ckpt_{kind}", extra={"epoch": 3})
    suite = tmp_path / "weights.yaml"
    suite.write_text(
        "entries:\n"
        + "".join(
            f"  - {{label: synthetic, dataset: synthetic_indoor, checkpoint: {path}, name: {kind}}}\n" for kind, path in checkpoints.items()
        )
    )
    out = tmp_path / "out"
    result = benchmark.run_benchmark(suite, out=out, workers=0)
    random_row, trained_row = result.rows
    assert not random_row.real_weights and random_row.weights.startswith("RANDOM weights (random frozen parts: clip)")
    assert trained_row.real_weights and trained_row.weights == "real weights (pretrained frozen parts; head trained (saved at epoch 3))"
    table = (out / "weights" / "table.md").read_text()
    assert f"**ours: random**: checkpoint `{checkpoints['random']}`; RANDOM weights" in table
    # The records it was decided from: the checkpoint's config.json (at save) and each metrics.json.
    for kind, parts in (("random", ["clip"]), ("trained", [])):
        assert json.loads((checkpoints[kind] / "config.json").read_text())["untrained_frozen_parts"] == parts
        assert json.loads((out / "weights" / kind / "synthetic" / "metrics.json").read_text())["untrained_frozen_parts"] == parts
    # A checkpoint saved before config.json had the record: its evaluation's metrics.json still tells.
    meta, cfg = benchmark._checkpoint_meta(str(checkpoints["random"]))
    del meta["untrained_frozen_parts"]
    summary = json.loads((out / "weights" / "random" / "synthetic" / "metrics.json").read_text())
    assert weights_summary(meta, cfg, [summary])[0] is False
    # Reused on a second run: the same labels, from the records.
    again = benchmark.run_benchmark(suite, out=out, workers=0)
    assert [e.status for e in again.evaluations] == ["reused", "reused"]
    assert [(r.real_weights, r.weights) for r in again.rows] == [(r.real_weights, r.weights) for r in result.rows]


# --------------------------------------------------------------------------- reuse and folders


def ibims_suite(tiny_tr2m_cfg, tmp_path):
    """A one-entry suite of a random TR2M on two hand-made iBims-1 frames with captions; (suite,
    data root, caption folder)."""
    import torch

    root = tmp_path / "ibims"
    root.mkdir()
    ibims(root)
    captions = tmp_path / "captions"
    captions.mkdir()
    for name in ("rgb_corridor_01", "rgb_office_02"):
        (captions / f"{name}.txt").write_text("An image of a corridor.\n")
    torch.manual_seed(0)
    checkpoint = build_model(tiny_tr2m_cfg).save_pretrained(tmp_path / "tr2m")
    suite = tmp_path / "frames.yaml"
    suite.write_text(
        f"entries:\n  - {{label: ibims, recipe: zeroshot/ibims, checkpoint: {checkpoint}, name: run, "
        f"data: {{root: {root}, test_list: {root / 'test.txt'}, caption_dir: {captions}}}}}\n"
    )
    return suite, root, captions


def test_a_finished_evaluation_is_not_reused_once_its_frames_changed(tiny_tr2m_cfg, tmp_path, capsys):
    """Kind C: "already done" compares the frames' files, not the settings' names. A frame added
    to the list, a depth map or mask re-exported in place, or an edited caption file stops the reuse
    (one line naming --overwrite, as for changed data settings); the very same files are reused."""
    import os

    from clipdepth.errors import DataError

    suite, root, captions = ibims_suite(tiny_tr2m_cfg, tmp_path)
    out = tmp_path / "out"
    benchmark.run_benchmark(suite, out=out, workers=0)

    def status():
        return [e.status for e in benchmark.plan_benchmark(suite, out=out)[1]]

    changed = r"frames/run/ibims: .*ibims/metrics.json: the test frames' files changed"
    assert status() == ["reused"]
    listing = root / "test.txt"
    listed = listing.read_text()
    listing.write_text(listed + "rgb/corridor_01.png depth/corridor_01.png\n")  # one more frame, same settings
    with pytest.raises(DataError, match=changed + r" \(a frame added to or removed from the list"):
        status()
    listing.write_text(listed)
    assert status() == ["reused"]  # the same frames again (the list file's own time does not count)

    # Each file a frame is read from: rewritten in place, then put back as it was (content and time).
    for path in (root / "depth" / "office_02.png", root / "mask_invalid" / "corridor_01.png", captions / "rgb_office_02.txt"):
        content, stat = path.read_bytes(), path.stat()
        if path.suffix == ".txt":
            path.write_text("An image of an office.\n")
        else:
            png16(path, np.asarray(Image.open(path)) // 2)
        with pytest.raises(DataError, match=changed):
            status()
        path.write_bytes(content)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert status() == ["reused"], path

    png16(root / "depth" / "office_02.png", np.round(metres(1, 2.0, 7.0) * 65535 / 50))
    capsys.readouterr()
    assert main(["benchmark", "--suite", str(suite), "--out", str(out), "--workers", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "the test frames' files changed" in err
    assert err.endswith("since that evaluation; write elsewhere, or allow overwriting it (--overwrite)")
    assert main(["benchmark", "--suite", str(suite), "--out", str(out), "--workers", "0", "--overwrite"]) == 0
    assert "1 evaluated, 0 reused" in capsys.readouterr().out


def test_a_frame_rewritten_in_place_with_its_size_and_time_kept_is_not_reused(tiny_tr2m_cfg, tmp_path):
    """Kind C: the reuse check hashes the frames' content. An image rewritten with other pixels in
    a file of the same size, its modification time put back (as `cp -p` or `touch -r` leave it),
    is noticed; its original bytes back, the evaluation is reused again."""
    import os

    from clipdepth.errors import DataError

    suite, root, _ = ibims_suite(tiny_tr2m_cfg, tmp_path)
    image = root / "rgb" / "office_02.png"
    pixels = np.random.default_rng(3).integers(0, 256, (*SHAPE, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(image, compress_level=0)  # stored: its size depends on the shape only
    out = tmp_path / "out"
    benchmark.run_benchmark(suite, out=out, workers=0)
    content, stat = image.read_bytes(), image.stat()
    Image.fromarray(255 - pixels).save(image, compress_level=0)
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert image.read_bytes() != content and image.stat().st_size == stat.st_size
    assert image.stat().st_mtime_ns == stat.st_mtime_ns
    with pytest.raises(DataError, match=r"ibims/metrics.json: the test frames' files changed"):
        benchmark.plan_benchmark(suite, out=out)
    image.write_bytes(content)
    assert [e.status for e in benchmark.plan_benchmark(suite, out=out)[1]] == ["reused"]


def test_distinct_row_names_never_share_a_folder(tiny_cfg, tmp_path):
    """Kind G: "ours (A)" and "ours [A]" (one slug, ours_A) get a folder each, so neither evaluation
    overwrites the other's and each is reused as its own; a plain name keeps its folder."""
    import torch

    checkpoints = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        checkpoints.append(build_model(tiny_cfg).save_pretrained(tmp_path / f"ckpt{seed}"))
    names = [("ours (A)", checkpoints[0]), ("ours [A]", checkpoints[1])]
    suite = tmp_path / "names.yaml"
    suite.write_text(
        "entries:\n" + "".join(f"  - {{label: synthetic, dataset: synthetic_indoor, checkpoint: {c}, name: '{n}'}}\n" for n, c in names)
    )
    out = tmp_path / "out"
    result = benchmark.run_benchmark(suite, out=out, workers=0)
    folders = [e.folder for e in result.evaluations]
    assert folders[0] != folders[1] and all(f.parent.name.startswith("ours_A+") for f in folders)
    for folder, (_, checkpoint) in zip(folders, names):
        assert json.loads((folder / "metrics.json").read_text())["checkpoint"] == str(checkpoint)
    again = benchmark.run_benchmark(suite, out=out, workers=0)
    assert [e.status for e in again.evaluations] == ["reused", "reused"]
    assert [e.summary["abs_rel"] for e in again.evaluations] == [e.summary["abs_rel"] for e in result.evaluations]
    assert again.evaluations[0].summary["abs_rel"] != again.evaluations[1].summary["abs_rel"]
    # A plain name is its own folder, where earlier runs wrote it (the zero-shot test's "tiny").
    assert benchmark._folder_name("plain-name_1.0") == "plain-name_1.0"


def test_unnamed_rows_of_paths_with_one_slug_get_a_folder_each_and_a_clash_is_refused_first(tiny_cfg, tmp_path):
    """Kind G: /x/a_b/model and /x/a/b/model (one slug, x_a_b_model) with no row name are two rows
    in two folders, each scoring its own checkpoint; one row name for two checkpoints is refused
    before anything is evaluated or written."""
    import torch

    from clipdepth.errors import ConfigError

    checkpoints = []
    for seed, path in enumerate(("x/a_b/model", "x/a/b/model")):
        torch.manual_seed(seed)
        checkpoints.append(build_model(tiny_cfg).save_pretrained(tmp_path / path))
    suite = tmp_path / "paths.yaml"
    suite.write_text("entries:\n" + "".join(f"  - {{label: synthetic, dataset: synthetic_indoor, checkpoint: {c}}}\n" for c in checkpoints))
    out = tmp_path / "out"
    result = benchmark.run_benchmark(suite, out=out, workers=0)
    assert [row.name for row in result.rows] == [str(c) for c in checkpoints]
    folders = [e.folder for e in result.evaluations]
    assert folders[0] != folders[1]
    for folder, checkpoint in zip(folders, checkpoints):
        assert json.loads((folder / "metrics.json").read_text())["checkpoint"] == str(checkpoint)
    assert result.evaluations[0].summary["abs_rel"] != result.evaluations[1].summary["abs_rel"]

    clash = tmp_path / "clash.yaml"
    clash.write_text(
        "entries:\n"
        + "".join(
            f"  - {{label: {label}, dataset: synthetic_indoor, checkpoint: {c}, name: ours}}\n"
            for label, c in zip(("first", "second"), checkpoints)
        )
    )
    refused = rf"^clash: row 'ours' has two checkpoints \({checkpoints[0]}, {checkpoints[1]}\)"
    with pytest.raises(ConfigError, match=refused):
        benchmark.run_benchmark(clash, out=tmp_path / "clash_out", workers=0)
    assert not (tmp_path / "clash_out").exists()


def test_the_checkpoint_digest_is_of_its_config_and_weights_only(tiny_cfg, tmp_path):
    from clipdepth.evaluation.checkpoint import checkpoint_digest
    from clipdepth.models import PureCLIPDepth

    folder = PureCLIPDepth.build(tiny_cfg).save_pretrained(tmp_path / "head")
    before = checkpoint_digest(folder)
    (folder / "notes.txt").write_text("trained on the lab's frames\n")  # the user's own file beside it
    assert checkpoint_digest(folder) == before
    PureCLIPDepth.build(tiny_cfg).save_pretrained(folder)  # trained again into the same folder
    assert checkpoint_digest(folder) != before
