"""A camera with NaN or inf in it is refused for that reason (one line saying "not finite"), not as a
camera of the wrong shape: given as numbers or K, read from an intrinsics file, or given as fx fy cx cy."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from clipdepth.cli.main import main
from clipdepth.errors import ConfigError, DataError
from clipdepth.io.intrinsics import CameraSources, read_intrinsics_file
from clipdepth.io.pointcloud import as_intrinsics
from clipdepth.models import PureCLIPDepth

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    "camera, named",
    [
        ([NAN, 50.0, 31.5, 23.5], "fx nan"),
        ([50.0, 50.0, 31.5, -INF], "cy -inf"),
        (torch.tensor([50.0, INF, 31.5, 23.5]), "fy inf"),
        ([[50, 0, NAN], [0, 50, 23.5], [0, 0, 1]], "K[0][2] nan"),
        (np.array([[50, 0, 31.5], [0, 50, 23.5], [0, 0, INF]]), "K[2][2] inf"),  # not read, still not a camera
    ],
)
def test_a_camera_that_is_not_finite_says_so(camera, named):
    with pytest.raises(ConfigError) as raised:
        as_intrinsics(camera)
    assert str(raised.value) == f"intrinsics: {named}: not finite (a camera's values must be finite numbers)"
    assert raised.value.setting == "intrinsics"
    with pytest.raises(ConfigError, match="got shape \\(3,\\)"):  # a wrong shape is still that, NaN or not
        as_intrinsics([NAN, 1.0, 2.0])


@pytest.mark.parametrize(
    "content, named",
    [
        ('{"a.jpg": [NaN, 2, 3, 4]}', "entry 'a.jpg' is not a camera: intrinsics: fx nan: not finite"),
        ('{"a.jpg": {"fx": 1, "fy": Infinity, "cx": 3, "cy": 4}}', "entry 'a.jpg' is not a camera: intrinsics: fy inf: not finite"),
        ('{"a.jpg": {"K": [[1, 0, 2], [0, 1, NaN], [0, 0, 1]]}}', "entry 'a.jpg' is not a camera: intrinsics: K[1][2] nan: not finite"),
        ("[1, 2, 3, -Infinity]", "is not a camera: intrinsics: cy -inf: not finite"),  # one camera for all
    ],
)
def test_an_intrinsics_file_with_nan_or_inf_names_the_file_and_entry(tmp_path, content, named):
    (tmp_path / "cams.json").write_text(content)  # Python's json reads NaN and Infinity
    with pytest.raises(DataError) as raised:
        read_intrinsics_file(tmp_path / "cams.json")
    assert str(raised.value).startswith(f"{tmp_path / 'cams.json'}") and named in str(raised.value)
    assert "\n" not in str(raised.value) and "shape" not in str(raised.value)


def test_given_values_that_are_not_finite_are_refused_before_any_image(tmp_path):
    image = tmp_path / "a.png"
    for given, named in [
        (SimpleNamespace(fx=NAN, fy=None, cx=None, cy=None), "fx nan"),
        (SimpleNamespace(fx=50.0, fy=None, cx=INF, cy=1.0), "cx inf"),
    ]:
        with pytest.raises(ConfigError, match=f"^intrinsics: {named}: not finite"):
            CameraSources(given, None, [image])
    given = SimpleNamespace(fx=50.0, fy=None, cx=None, cy=None)  # the rest from the image's size
    assert CameraSources(given, None, [image]).camera(image, 48, 64).intrinsics == (50.0, 50.0, 31.5, 23.5)
    assert math.isfinite(sum(CameraSources(given, None, [image]).camera(image, 48, 64).intrinsics))


def test_predict_with_a_nan_intrinsics_file_is_one_line_and_writes_nothing(tiny_cfg, tmp_path, capsys):
    torch.manual_seed(0)
    checkpoint = PureCLIPDepth.build(tiny_cfg).save_pretrained(tmp_path / "ckpt")
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "cams.json").write_text('{"a.png": [[50, 0, 31.5], [0, NaN, 23.5], [0, 0, 1]]}')
    out = tmp_path / "out"
    assert (
        main(
            [
                "predict",
                str(tmp_path / "a.png"),
                "--checkpoint",
                str(checkpoint),
                "--out",
                str(out),
                "--ply",
                "--intrinsics",
                str(tmp_path / "cams.json"),
            ]
        )
        == 2
    )
    assert capsys.readouterr().err.strip().splitlines() == [
        f"clipdepth predict: error: {tmp_path / 'cams.json'}: entry 'a.png' is not a camera: intrinsics: K[1][1] nan: "
        "not finite (a camera's values must be finite numbers)"
    ]
    assert not out.exists() or not any(out.iterdir())
