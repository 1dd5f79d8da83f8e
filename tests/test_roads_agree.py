"""One frame, one number, whichever road: `evaluate`, `predict --crop trained` + `score`, `benchmark`,
``infer`` and the transformers pipeline agree on real NYU frames; the settings evaluate and benchmark
use come from one rule; every road converts an image the same way."""

import json
import struct
import zlib

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

import clipdepth.hf  # noqa: F401  (the pipeline and Auto classes)
from clipdepth.cli.main import main
from clipdepth.config import config_to_dict, load_config, load_config_dict
from clipdepth.errors import ConfigError, DataError
from clipdepth.evaluation.checkpoint import evaluation_settings
from clipdepth.evaluation.metrics import METRIC_NAMES
from clipdepth.io.depth_io import read_rgb
from clipdepth.models import PureCLIPDepth, load_model

from .conftest import TINY_ENCODER

NYU_STEMS = ("00000", "00050", "00100", "u0001")
TINY_CLIP = [f"clip.{k}={v}" for k, v in TINY_ENCODER.items()]


@pytest.fixture
def nyu_head(tmp_path):
    """A random-weight PureCLIP-Depth head of the pureclip_nyu recipe (NYU's input crop), at toy size."""
    torch.manual_seed(0)
    return PureCLIPDepth.build(load_config("pureclip_nyu", TINY_CLIP)).save_pretrained(tmp_path / "nyu_head")


@pytest.fixture
def nyu_list(rgbd_samples, tmp_path):
    listing = tmp_path / "nyu_test.txt"
    listing.write_text("".join(f"nyu/rgb_{s}.{'png' if s.startswith('u') else 'jpg'} nyu/sync_depth_{s}.png 518.8579\n" for s in NYU_STEMS))
    return listing


def _images(rgbd_samples):
    return sorted(p for p in (rgbd_samples / "nyu").iterdir() if p.name.startswith("rgb_"))


@pytest.mark.parametrize("tta", [False, True], ids=["no_tta", "tta"])
def test_predict_with_the_trained_crop_then_score_equals_evaluate(rgbd_samples, nyu_head, nyu_list, tmp_path, tta, capsys):
    flag = ["--tta"] if tta else ["--no-tta"]
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(nyu_head),
                "--data-root",
                str(rgbd_samples),
                "--split",
                str(nyu_list),
                "--out",
                str(tmp_path / "eval"),
                *flag,
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    # the table names the protocol, the input crop and TTA
    assert "protocol nyu" in printed and "input crop [40, 470, 38, 603]" in printed
    assert f"flip TTA {'on' if tta else 'off'}" in printed
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())

    images = [str(p) for p in _images(rgbd_samples)]
    assert (
        main(
            [
                "predict",
                *images,
                "--checkpoint",
                str(nyu_head),
                "--crop",
                "trained",
                "--npy",
                "--out",
                str(tmp_path / "pred"),
                *(["--tta"] if tta else []),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "score",
                "--pred",
                str(tmp_path / "pred"),
                "--gt",
                str(rgbd_samples / "nyu"),
                "--protocol",
                "nyu",
                "--json",
                str(tmp_path / "score.json"),
            ]
        )
        == 0
    )
    scored = json.loads((tmp_path / "score.json").read_text())
    assert scored["n_images"] == evaluated["n_images"] == 4
    for metric in METRIC_NAMES:
        assert scored[metric] == pytest.approx(evaluated[metric], abs=1e-6), metric

    from clipdepth.evaluation.benchmark import run_benchmark

    benchmarked = (
        run_benchmark(
            "pureclip-nyu", nyu_head, data=[f"nyu.root={rgbd_samples}", f"nyu.test_list={nyu_list}"], tta=tta, out=tmp_path / "bench"
        )
        .evaluations[0]
        .summary
    )
    for metric in METRIC_NAMES:
        assert benchmarked[metric] == evaluated[metric], metric

    # Python, the pipeline and the web demo's service: the same maps as predict wrote
    from clipdepth.serve import DepthService, find_checkpoints

    model = load_model(nyu_head)
    pipe = transformers.pipeline("depth-estimation", model=str(nyu_head))
    service = DepthService(find_checkpoints([str(nyu_head)])[0], tmp_path / "serve", tta=tta, crop="trained")
    for image in images[:2]:
        written = np.load(tmp_path / "pred" / f"{image.rsplit('/', 1)[1].rsplit('.', 1)[0]}.npy")
        inferred = model.infer(image, crop="trained", tta=tta)["depth"][0].numpy()
        np.testing.assert_allclose(inferred, written, atol=1e-6, rtol=0)
        piped = pipe(image, crop="trained", tta=tta)["predicted_depth"].numpy()
        np.testing.assert_allclose(piped, written, atol=1e-6, rtol=0)
        served = service.predict(image, str(nyu_head)).depth
        np.testing.assert_allclose(served, written, atol=1e-6, rtol=0)


def test_the_whole_frame_differs_from_the_trained_crop_and_predict_says_so(rgbd_samples, nyu_head, tmp_path, capsys):
    image = _images(rgbd_samples)[0]
    model = load_model(nyu_head)
    whole, cropped = (model.infer(image, crop=c)["depth"][0] for c in ("none", "trained"))
    assert (whole - cropped).abs().max() > 1e-3  # the crop changes the depth: the roads must pick the same one
    assert main(["predict", str(image), "--checkpoint", str(nyu_head), "--out", str(tmp_path / "p")]) == 0
    assert "--crop trained gives evaluate's numbers" in capsys.readouterr().out


def test_the_trained_crop_of_a_smaller_image_is_one_line_and_the_others_go_on(rgbd_samples, nyu_head, tmp_path, capsys):
    small = tmp_path / "in" / "small.png"
    small.parent.mkdir()
    Image.fromarray(read_rgb(_images(rgbd_samples)[0])[:300, :400]).save(small)
    good = tmp_path / "in" / "good.jpg"
    good.write_bytes(_images(rgbd_samples)[0].read_bytes())
    assert main(["predict", str(small.parent), "--checkpoint", str(nyu_head), "--crop", "trained", "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert "small.png: a 400x300 image is smaller than the trained input crop" in err
    assert (tmp_path / "p" / "good.png").is_file() and not (tmp_path / "p" / "small.png").exists()
    with pytest.raises(ConfigError, match="crop must be one of none, trained"):
        load_model(nyu_head).infer(good, crop="eigen")
    with pytest.raises(ConfigError, match="unknown dataset 'nyu2'"):
        load_model(nyu_head).infer(good, crop="trained", dataset="nyu2")
    with pytest.raises(ConfigError, match="it goes with crop trained"):
        load_model(nyu_head).infer(good, dataset="kitti")


def test_a_trained_crop_that_would_cut_most_of_an_image_away_is_refused(nyu_head):
    """NYU's [40, 470, 38, 603] keeps 79 % of its 480 x 640 frames but 2 % of a 12 MP photo: refused, not applied."""
    model = load_model(nyu_head)
    model.processor_for(480, 640, "trained")  # its own frames: 430 x 565 of 480 x 640 kept
    model.processor_for(600, 800, "trained")  # 430 x 565 of 600 x 800: just over half kept
    with pytest.raises(DataError, match=r"keeps 2% of a 4032x3024 image: it was made for the frames of a dataset"):
        model.processor_for(3024, 4032, "trained")


def test_evaluate_benchmark_and_predict_take_one_rule_on_a_dataset_the_head_did_not_train_on(
    rgbd_samples, nyu_list, tiny_cfg, tmp_path, capsys
):
    """A head trained on synthetic scenes, scored on NYU: evaluate, benchmark and predict --crop
    trained --dataset nyu + score agree, with the model's NYU crop."""
    torch.manual_seed(0)
    head = PureCLIPDepth.build(tiny_cfg).save_pretrained(tmp_path / "synthetic_head")
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(head),
                "--dataset",
                "nyu",
                "--data-root",
                str(rgbd_samples),
                "--split",
                str(nyu_list),
                "--out",
                str(tmp_path / "eval"),
            ]
        )
        == 0
    )
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert evaluated["data"]["input_crop"] == [40, 470, 38, 603] and evaluated["protocol"] == "nyu"
    assert "recipe pureclip_nyu" in evaluated["settings"]

    capsys.readouterr()
    images = [str(p) for p in _images(rgbd_samples)]
    assert (
        main(
            [
                "predict",
                *images,
                "--checkpoint",
                str(head),
                "--crop",
                "trained",
                "--dataset",
                "nyu",
                "--npy",
                "--out",
                str(tmp_path / "pred"),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert (
        "input: crop [40, 470, 38, 603] (rows 40:470, columns 38:603) resized to 56x56 (linear), as evaluate feeds "
        "nyu's frames (--crop trained); flip TTA off" in printed
    )
    assert "note: evaluate uses flip TTA on (the checkpoint's eval.tta): add --tta here" in printed
    assert (
        main(
            [
                "predict",
                *images,
                "--checkpoint",
                str(head),
                "--crop",
                "trained",
                "--dataset",
                "nyu",
                "--npy",
                "--tta",
                "--out",
                str(tmp_path / "pred_tta"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "score",
                "--pred",
                str(tmp_path / "pred_tta"),
                "--gt",
                str(rgbd_samples / "nyu"),
                "--protocol",
                "nyu",
                "--json",
                str(tmp_path / "score.json"),
            ]
        )
        == 0
    )
    scored = json.loads((tmp_path / "score.json").read_text())
    for metric in METRIC_NAMES:
        assert scored[metric] == pytest.approx(evaluated[metric], abs=1e-6), metric

    from clipdepth.evaluation.benchmark import run_benchmark

    result = run_benchmark("pureclip-nyu", head, data=[f"nyu.root={rgbd_samples}", f"nyu.test_list={nyu_list}"], out=tmp_path / "bench")
    benchmarked = result.evaluations[0].summary
    for metric in METRIC_NAMES:
        assert benchmarked[metric] == evaluated[metric], metric
    assert benchmarked["settings"] == evaluated["settings"]


def test_the_settings_rule(tiny_cfg):
    """Recipe given > the checkpoint's training of the dataset (its protocol) > the model's recipe > defaults."""
    folder_head = load_config_dict(config_to_dict(tiny_cfg), ["data.dataset=folder", "eval.protocol=nyu", "data.input_crop=[1,40,2,60]"])
    own = evaluation_settings(folder_head)
    assert (own.data.dataset, own.protocol, own.data.input_crop) == ("folder", "nyu", [1, 40, 2, 60])
    nyu = evaluation_settings(folder_head, dataset="nyu")
    assert (nyu.protocol, nyu.data.input_crop, nyu.data.tiles) == ("nyu", [40, 470, 38, 603], 1)
    kitti = evaluation_settings(folder_head, dataset="kitti")
    assert (kitti.protocol, kitti.data.input_crop, kitti.data.tiles) == ("kitti", None, 4)
    sun = evaluation_settings(folder_head, dataset="sun_rgbd")
    assert (sun.protocol, sun.data.input_crop, sun.data.tiles) == ("synthetic_indoor", None, 1)
    asked = evaluation_settings(folder_head, dataset="nyu", recipe="zeroshot/sun_rgbd", protocol="kitti", data_overrides=["tiles=2"])
    assert (asked.data.dataset, asked.protocol, asked.data.input_crop, asked.data.tiles) == ("nyu", "kitti", None, 2)
    tr2m = load_config_dict(config_to_dict(tiny_cfg), ["model=tr2m"])
    assert evaluation_settings(tr2m, dataset="kitti").data.kb_crop  # TR2M's own KITTI recipe: the KB crop
    mixture = load_config("tr2m_mixture", ["mixture.2.protocol=nyu"])
    void = evaluation_settings(mixture, dataset="void")
    assert (void.protocol, void.input_size) == ("nyu", (434, 560))


def _png_16_bit(path, pixels, colour_type):
    """A PNG of 16 bits per sample written by hand (Pillow writes no 48-bit RGB): (H, W, C) uint16,
    colour type 2 (RGB) or 4 (grey and alpha)."""
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)  # filter 0 per row

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", pixels.shape[1], pixels.shape[0], 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_a_16_bit_photo_is_one_input_on_every_road(nyu_head, tmp_path):
    """A 16-bit grey PNG is scaled to 8 bits by its high byte (value >> 8, as Pillow decodes 48-bit
    RGB and 16-bit grey-alpha PNGs), never clipped, by infer(path), infer(PIL), infer(uint16 array)
    and the pipeline alike; a 48-bit RGB PNG and a 16-bit grey-alpha one give what the same pixels
    as a uint16 array give."""
    ramp = np.tile(np.linspace(0, 65535, 64).round().astype(np.uint16), (48, 1))
    path = tmp_path / "ramp16.png"
    Image.fromarray(ramp).save(path)
    model = load_model(nyu_head)
    expected = np.repeat((ramp >> 8).astype(np.uint8)[..., None], 3, -1)
    assert read_rgb(path, photo=True).tolist() == expected.tolist()
    reference = model.infer(expected)["depth"][0]
    clipped = model.infer(np.repeat(np.minimum(ramp, 255).astype(np.uint8)[..., None], 3, -1))["depth"][0]
    assert (reference - clipped).abs().max() > 1e-3  # what a clipping decoder would give instead
    with Image.open(path) as image:
        pil = model.infer(image)["depth"][0]
    roads = {
        "path": model.infer(path)["depth"][0],
        "PIL": pil,
        "uint16 array": model.infer(np.repeat(ramp[..., None], 3, -1))["depth"][0],
        "pipeline": transformers.pipeline("depth-estimation", model=str(nyu_head))(str(path))["predicted_depth"],
    }
    for road, depth in roads.items():
        torch.testing.assert_close(depth, reference, atol=1e-6, rtol=0, msg=road)

    colour = np.random.default_rng(0).integers(0, 65536, (48, 64, 3)).astype(np.uint16)
    assert np.count_nonzero((colour >> 8) != (colour / 257.0).round()) > 0.2 * colour.size  # where the rules differ
    _png_16_bit(tmp_path / "rgb48.png", colour, 2)
    _png_16_bit(tmp_path / "la16.png", np.stack([colour[..., 0], colour[..., 1]], -1), 4)
    assert read_rgb(tmp_path / "rgb48.png", photo=True).tolist() == (colour >> 8).astype(np.uint8).tolist()
    assert read_rgb(tmp_path / "la16.png", photo=True).tolist() == np.repeat((colour[..., :1] >> 8).astype(np.uint8), 3, -1).tolist()
    torch.testing.assert_close(model.infer(tmp_path / "rgb48.png")["depth"][0], model.infer(colour)["depth"][0], atol=1e-6, rtol=0)
    grey = np.repeat(colour[..., :1], 3, -1)
    torch.testing.assert_close(model.infer(tmp_path / "la16.png")["depth"][0], model.infer(grey)["depth"][0], atol=1e-6, rtol=0)


def test_the_pipeline_refuses_an_option_it_would_ignore(nyu_head, rgbd_samples):
    pipe = transformers.pipeline("depth-estimation", model=str(nyu_head))
    with pytest.raises(ConfigError, match="unknown option bogus= for a clipdepth model's pipeline"):
        pipe(str(_images(rgbd_samples)[0]), bogus=3)


def test_the_pipeline_batches_images_of_several_sizes(nyu_head, tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(48, 64), (40, 80), (48, 64)]):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(paths[-1])
    model = load_model(nyu_head)
    results = transformers.pipeline("depth-estimation", model=str(nyu_head))(paths, batch_size=2)
    for path, result in zip(paths, results):
        torch.testing.assert_close(result["predicted_depth"], model.infer(path)["depth"][0], atol=1e-6, rtol=0)


def test_max_pixels_is_the_only_pixel_limit(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow refuses beyond twice this: 4096 > 2000
    assert read_rgb(path, photo=True, max_pixels=10_000).shape == (64, 64, 3)
    assert Image.MAX_IMAGE_PIXELS == 1000  # Pillow's own setting is left as it was
    with pytest.raises(DataError, match=r"big.png: 64x64 is 0.0 megapixels, over the limit of 0.001"):
        read_rgb(path, photo=True, max_pixels=1000)


def test_predict_names_a_mixtures_datasets_and_feeds_the_one_asked(tiny_tr2m_cfg):
    from clipdepth.inference import PredictOptions, input_lines
    from clipdepth.models import build_model

    cfg = load_config_dict(
        config_to_dict(tiny_tr2m_cfg), ["mixture=[{data: {dataset: nyu}}, {data: {dataset: kitti, kb_crop: true}, input_size: [28, 98]}]"]
    )
    model = build_model(cfg)
    own = input_lines(model, PredictOptions(crop="trained"))
    assert own[0].startswith("input: whole frame resized to 28x42") and "as evaluate feeds synthetic_indoor's frames" in own[0]
    assert "the checkpoint trained on nyu, kitti, each fed its own way: --dataset NAME" in own[1]
    kitti = input_lines(model, PredictOptions(crop="trained", dataset="kitti"))
    assert kitti[0].startswith("input: KB crop (bottom 352 rows, central 1216 columns) resized to 28x98")
    assert model.processor_for(375, 1242, "trained", dataset="kitti").kb_crop
