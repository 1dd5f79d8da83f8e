"""Captions for TR2M: where a frame's caption comes from, line choice, the synthetic scenes'
own descriptions, and `clipdepth caption` with a tiny random captioning model."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch
from PIL import Image

from clipdepth.cli.main import main
from clipdepth.config import DataConfig
from clipdepth.data.captions import caption_lines, pick_lines, read_caption_file
from clipdepth.data.sample import RGBDSample
from clipdepth.data.synthetic import SyntheticScenes, render_scene
from clipdepth.errors import DataError
from clipdepth.io.fingerprint import Made, file_digest


def sample(name: str = "frame_001", captions: list[str] | None = None) -> RGBDSample:
    return RGBDSample(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.float32), np.ones(4, np.float32), name, captions)


def one_line_error(call) -> str:
    with pytest.raises(DataError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- caption sources


def test_caption_precedence(tmp_path):
    (tmp_path / "frame_001.txt").write_text("  from the file  \n\n second line\n")
    own = sample(captions=["the dataset's own"])
    assert caption_lines(own, DataConfig()) == ["the dataset's own"]
    assert caption_lines(own, DataConfig(caption_dir=str(tmp_path))) == ["from the file", "second line"]
    assert caption_lines(own, DataConfig(caption="one for all", caption_dir=str(tmp_path))) == ["one for all"]
    assert read_caption_file(tmp_path / "frame_001.txt") == ["from the file", "second line"]


def test_caption_errors_are_one_line(tmp_path):
    missing = one_line_error(lambda: caption_lines(sample(), DataConfig(caption_dir=str(tmp_path))))
    assert str(tmp_path / "frame_001.txt") in missing and "no caption file" in missing
    assert "clipdepth caption" in missing

    (tmp_path / "frame_001.txt").write_text("\n   \n")
    empty = one_line_error(lambda: caption_lines(sample(), DataConfig(caption_dir=str(tmp_path))))
    assert empty == f"{tmp_path / 'frame_001.txt'}: caption file is empty"

    none = one_line_error(lambda: caption_lines(sample(), DataConfig()))
    assert none.startswith("frame_001: no caption") and "data.caption_dir" in none and "data.caption " in none


def test_pick_lines_line_zero_or_uniform():
    counts = torch.tensor([4] * 200 + [1] * 50)
    assert torch.equal(pick_lines(counts), torch.zeros_like(counts))  # evaluation: line 0
    generator = torch.Generator().manual_seed(0)
    drawn = pick_lines(counts, generator)
    assert set(drawn[:200].tolist()) == {0, 1, 2, 3}  # every line of a 4-line file is used
    assert set(drawn[200:].tolist()) == {0}  # never past a frame's own lines
    assert torch.equal(drawn, pick_lines(counts, torch.Generator().manual_seed(0)))


# --------------------------------------------------------------------------- synthetic scenes


@pytest.mark.parametrize("kind, depth_sum, image_sum", [("indoor", 9173.439742326736, 1086289), ("outdoor", 43308.332239151, 838877)])
def test_captions_leave_scenes_unchanged(kind, depth_sum, image_sum):
    # Checksums taken before scenes carried captions: describing a scene must not change it.
    scene = render_scene(kind, 3, 48, 64)
    assert float(scene.depth.astype(np.float64).sum()) == pytest.approx(depth_sum, rel=1e-6)
    assert int(scene.image.astype(np.int64).sum()) == image_sum


@pytest.mark.parametrize("kind", ["indoor", "outdoor"])
def test_synthetic_scenes_describe_themselves(kind):
    scenes = SyntheticScenes(kind, "train", 6, 24, 32, seed=0)
    captions = [scenes[i].captions for i in range(len(scenes))]
    for lines in captions:
        assert 3 <= len(lines) <= 5 and all(line.strip() == line and line.endswith(".") for line in lines)
        assert lines[-1].startswith("An image with ")
    # deterministic, and a function of the scene, not of the resolution
    assert captions[0] == scenes[0].captions == SyntheticScenes(kind, "train", 6, 48, 64, seed=0)[0].captions
    assert len({tuple(lines) for lines in captions}) == len(captions)
    assert caption_lines(scenes[0], DataConfig()) == captions[0]


def test_room_size_is_in_the_caption():
    sizes = {}
    for seed in range(12):
        first = render_scene("indoor", seed, 8, 8).captions[0]
        sizes.setdefault(first.split()[1], first)
    assert {"small", "large"} <= set(sizes)
    assert sizes["small"] != sizes["large"]


def test_named_dataset_samples_keep_captions():
    scene = SyntheticScenes("outdoor", "val", 1, 16, 32)[0]
    assert scene.name == "outdoor_val_00000" and scene.captions
    assert dataclasses.replace(scene, name="x").captions == scene.captions


# --------------------------------------------------------------------------- clipdepth caption


@pytest.fixture(scope="module")
def tiny_captioner(tmp_path_factory):
    """A random-weight BLIP captioner and its processor, saved as from a hub download."""
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessorPil, BlipProcessor

    folder = tmp_path_factory.mktemp("blip")
    words = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        "[DEC]",
        "a",
        "photo",
        "of",
        "room",
        "street",
        "the",
        "car",
        "wall",
        "with",
        "and",
        "blue",
        "red",
        "table",
        "floor",
        "window",
        "tree",
        "sky",
    ]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = BertTokenizer(str(folder / "vocab.txt"), bos_token="[DEC]")
    tiny = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = BlipConfig(
        vision_config={**tiny, "image_size": 32, "patch_size": 16},
        text_config={
            **tiny,
            "vocab_size": len(words),
            "encoder_hidden_size": 16,
            "max_position_embeddings": 64,
            "bos_token_id": tokenizer.bos_token_id,
            "sep_token_id": tokenizer.sep_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        projection_dim=16,
    )
    torch.manual_seed(0)
    BlipForConditionalGeneration(config).save_pretrained(folder)
    BlipProcessor(BlipImageProcessorPil(size={"height": 32, "width": 32}), tokenizer).save_pretrained(folder)
    return folder


def test_caption_cli_writes_resumable_files(tiny_captioner, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for stem in ("kitchen", "street"):
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(images / f"{stem}.png")
    out = tmp_path / "captions"
    argv = [
        "caption",
        str(images),
        "--model",
        str(tiny_captioner),
        "--out",
        str(out),
        "--lines",
        "3",
        "--max-new-tokens",
        "8",
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    written = {p.name: read_caption_file(p) for p in out.glob("*.txt")}
    assert sorted(written) == ["kitchen.txt", "street.txt"]
    assert all(len(lines) == 3 and len(set(lines)) == 3 for lines in written.values())
    assert "wrote captions for 2 image(s)" in capsys.readouterr().out

    before = {name: (out / name).stat().st_mtime_ns for name in written}
    assert main(argv) == 0
    assert "wrote captions for 0 image(s)" in capsys.readouterr().out
    assert before == {name: (out / name).stat().st_mtime_ns for name in written}

    (out / "kitchen.txt").unlink()
    assert main(argv) == 0  # the same greedy and seeded lines again
    assert read_caption_file(out / "kitchen.txt") == written["kitchen.txt"]


def test_caption_takes_a_pixel_limit_as_predict_does(tiny_captioner, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((40, 56, 3), np.uint8)).save(images / "small.png")
    Image.fromarray(np.zeros((1000, 1200, 3), np.uint8)).save(images / "large.png")  # 1.2 megapixels
    out = tmp_path / "captions"
    assert (
        main(
            [
                "caption",
                str(images),
                "--model",
                str(tiny_captioner),
                "--out",
                str(out),
                "--lines",
                "1",
                "--max-new-tokens",
                "4",
                "--device",
                "cpu",
                "--max-pixels",
                "1",
            ]
        )
        == 2
    )
    assert [line for line in capsys.readouterr().err.splitlines() if line.startswith(("clipdepth", "  "))] == [
        "clipdepth caption: 1 image(s) got no caption:",
        f"  {images / 'large.png'}: 1200x1000 is 1.2 megapixels, over the limit of 1 (downscale it, or raise the max_pixels limit)",
        "  (where an image is over the limit: --max-pixels)",
    ]
    assert [p.name for p in out.glob("*.txt")] == ["small.txt"]


def test_caption_cli_dataset_form(tiny_captioner, tmp_path, capsys):
    out = tmp_path / "captions"
    assert (
        main(
            [
                "caption",
                "--dataset",
                "synthetic_indoor",
                "--split",
                "val",
                "val_size=2",
                "height=24",
                "width=32",
                "--model",
                str(tiny_captioner),
                "--out",
                str(out),
                "--lines",
                "2",
                "--max-new-tokens",
                "6",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in out.glob("*.txt")) == ["indoor_val_00000.txt", "indoor_val_00001.txt"]
    frame = SyntheticScenes("indoor", "val", 2, 24, 32)[1]
    assert caption_lines(frame, DataConfig(caption_dir=str(out))) == read_caption_file(out / "indoor_val_00001.txt")


def test_caption_cli_bad_model_is_one_line(tmp_path, capsys):
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    assert main(["caption", str(img), "--model", "/nonexistent", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "'/nonexistent'" in err and "save_pretrained" in err
    assert not (tmp_path / "out").exists()


def test_caption_rerun_captions_a_rewritten_image_again_and_never_replaces_an_edited_file(tiny_captioner, tmp_path, capsys):
    """BMPs of one shape keep their size: with their time put back, only the content tells a rewrite."""
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for stem in ("kitchen", "street", "hall"):
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(images / f"{stem}.bmp")
    out = tmp_path / "captions"

    def caption(into, *more):
        return main(
            [
                "caption",
                str(images),
                "--model",
                str(tiny_captioner),
                "--out",
                str(into),
                "--lines",
                "2",
                "--max-new-tokens",
                "6",
                "--device",
                "cpu",
                *more,
            ]
        )

    assert caption(out) == 0
    hall = (out / "hall.txt").stat().st_mtime_ns
    for stem in ("kitchen", "street"):  # both images rewritten in place; street's captions edited by hand
        before = (images / f"{stem}.bmp").stat()
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(images / f"{stem}.bmp")
        os.utime(images / f"{stem}.bmp", ns=(before.st_atime_ns, before.st_mtime_ns))
    (out / "street.txt").write_text("a street I described myself\n")
    capsys.readouterr()
    assert caption(out) == 0
    printed = capsys.readouterr().out
    assert (
        "wrote captions for 1 image(s)" in printed
        and "1 of them replace those of an image since rewritten" in printed
        and "kept 1 existing" in printed
        and "kept 1 edited since" in printed
    )
    assert read_caption_file(out / "street.txt") == ["a street I described myself"]
    record = Made.parse((out / ".clipdepth" / "kitchen.json").read_text())
    assert record.inputs == {"image": file_digest(images / "kitchen.bmp")} and record.written == file_digest(out / "kitchen.txt")
    assert (out / "hall.txt").stat().st_mtime_ns == hall
    fresh = tmp_path / "fresh"  # the new kitchen captioned into a new folder: the same lines
    assert caption(fresh) == 0
    assert read_caption_file(out / "kitchen.txt") == read_caption_file(fresh / "kitchen.txt")
    assert caption(out, "--seed", "1") == 2  # hall, unchanged, was made with seed 0
    err = capsys.readouterr().err
    assert f"hall: {out / 'hall.txt'} holds the captions made with seed=0 (this run: seed=1); write elsewhere" in err


def test_a_captioning_model_folder_that_does_not_exist_is_named_as_such(tmp_path):
    from clipdepth.data.captioning import load_captioner
    from clipdepth.errors import EncoderLoadError

    with pytest.raises(EncoderLoadError, match="no such folder; pass a folder saved by save_pretrained") as err:
        load_captioner(str(tmp_path / "nonexistent" / "blip"))
    assert "network" not in str(err.value)  # a missing local folder is not a download problem
