"""`clipdepth predict --captions DIR` reads each image's (and video's) caption from the file
`clipdepth caption` writes for it, `DIR/<output name>.txt`: sub-folders kept, extensions where
stems meet; a folder of captions written by hand by stem still works where the name is a stem."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from clipdepth.cli.main import main
from clipdepth.config import config_to_dict, load_config_dict
from clipdepth.data.captioning import images_to_caption
from clipdepth.data.synthetic import render_scene
from clipdepth.models import TR2M, load_model

from .conftest import TINY_DEPTH_ANYTHING

# image -> the caption file `clipdepth caption` writes for it (written out by hand: a.jpg and a.png
# meet, so do d.png and d_color.png, e.png and e.PNG; the two b.png keep their folders)
CAPTION_FILES = {
    "a.jpg": "a.jpg.txt",
    "a.png": "a.png.txt",
    "c.png": "c.txt",
    "d.png": "d.png.txt",
    "d_color.png": "d_color.png.txt",
    "e.png": "e.png.txt",
    "e.PNG": "e.PNG.txt",
    "sub1/b.png": "sub1/b.txt",
    "sub2/b.png": "sub2/b.txt",
}


@pytest.fixture
def tr2m(tiny_tr2m_cfg, tmp_path):
    """A random-weight TR2M whose relative depth comes from the image (a tiny Depth Anything), with a
    range its depth (66 to 69 m at this init) is not clamped to, so that the caption shows in it."""
    torch.manual_seed(0)
    cfg = load_config_dict(config_to_dict(tiny_tr2m_cfg), [*TINY_DEPTH_ANYTHING, "tr2m.max_depth=100"])
    return TR2M.build(cfg).save_pretrained(tmp_path / "ckpt")


def _photos(folder, names, same=("sub1/b.png", "sub2/b.png")):
    """Each name a photo of its own scene, but the two of ``same`` show one scene."""
    for seed, name in enumerate(names):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        image = render_scene("indoor", 0 if name in same else seed + 1, 48, 64).image
        Image.fromarray(image).save(folder / name, format="JPEG" if name.endswith(".jpg") else "PNG")


def test_each_image_reads_the_caption_file_caption_writes_for_it(tr2m, tmp_path, capsys):
    photos, captions, out = tmp_path / "photos", tmp_path / "captions", tmp_path / "out"
    _photos(photos, CAPTION_FILES)
    assert sorted(f"{job.name}.txt" for job in images_to_caption([str(photos)])) == sorted(CAPTION_FILES.values())
    texts = {image: f"caption {i}: a room seen from place {i}" for i, image in enumerate(CAPTION_FILES)}
    for image, file in CAPTION_FILES.items():
        (captions / file).parent.mkdir(parents=True, exist_ok=True)
        (captions / file).write_text(f"{texts[image]}\nanother line\n")
    assert main(["predict", str(photos), "--checkpoint", str(tr2m), "--out", str(out), "--npy", "--captions", str(captions)]) == 0, (
        capsys.readouterr().err
    )
    model = load_model(tr2m)
    for image, file in CAPTION_FILES.items():
        expected = model.infer(photos / image, captions=[texts[image]])["depth"][0].numpy()
        np.testing.assert_allclose(np.load(out / f"{file.removesuffix('.txt')}.npy"), expected, rtol=1e-5, err_msg=image)
    # one scene, two captions: the depth is each caption's
    assert np.abs(np.load(out / "sub1" / "b.npy") - np.load(out / "sub2" / "b.npy")).max() > 1e-2


def test_captions_written_by_hand_by_stem_are_read_where_the_name_is_a_stem(tr2m, tmp_path, capsys):
    """a.jpg and a.png (named a.jpg, a.png) read a.txt; sub1/b.png (named sub1/b) has no stem fallback:
    it is skipped, naming the file `clipdepth caption` would write."""
    photos, captions, out = tmp_path / "photos", tmp_path / "captions", tmp_path / "out"
    _photos(photos, ["a.jpg", "a.png", "sub1/b.png", "sub2/b.png"])
    captions.mkdir()
    (captions / "a.txt").write_text("a kitchen\n")
    (captions / "b.txt").write_text("a corridor\n")
    assert main(["predict", str(photos), "--checkpoint", str(tr2m), "--out", str(out), "--npy", "--captions", str(captions)]) == 2
    err = capsys.readouterr().err
    for folder in ("sub1", "sub2"):
        assert f"{captions / folder / 'b.txt'}: no caption file" in err
    model = load_model(tr2m)
    for image in ("a.jpg", "a.png"):
        expected = model.infer(photos / image, captions=["a kitchen"])["depth"][0].numpy()
        np.testing.assert_allclose(np.load(out / f"{image}.npy"), expected, rtol=1e-5, err_msg=image)
    assert not (out / "sub1").exists() and not (out / "sub2").exists()


def test_videos_of_one_stem_read_their_own_caption_files(tr2m, tmp_path, capsys):
    av = pytest.importorskip("av")
    from clipdepth.io.fingerprint import text_digest
    from clipdepth.io.video import video_made

    frames = [render_scene("indoor", seed, 30, 40).image for seed in range(2)]
    for folder in ("x", "y"):  # x/walk.mov and y/walk.mov: named x/walk and y/walk
        (tmp_path / folder).mkdir()
        with av.open(str(tmp_path / folder / "walk.mov"), "w") as container:
            stream = container.add_stream("png", rate=5)
            stream.width, stream.height, stream.pix_fmt = 40, 30, "rgb24"
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
    captions, out = tmp_path / "captions", tmp_path / "out"
    for folder, text in (("x", "a corridor"), ("y", "a beach")):
        (captions / folder).mkdir(parents=True)
        (captions / folder / "walk.txt").write_text(f"{text}\n")
    videos = [str(tmp_path / folder / "walk.mov") for folder in ("x", "y")]
    assert main(["predict", *videos, "--checkpoint", str(tr2m), "--out", str(out), "--captions", str(captions)]) == 0, (
        capsys.readouterr().err
    )
    for folder, text in (("x", "a corridor"), ("y", "a beach")):
        assert video_made(out / folder / "walk_depth.mp4").inputs["caption"] == text_digest(text)
