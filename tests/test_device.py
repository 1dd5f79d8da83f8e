"""The ``device`` setting (config, ``predict --set``, ``caption --device``): a name torch does not know,
or a device this torch or machine does not have, is one ConfigError line naming the setting and the
devices there are (``device.resolve_device``), with torch's availability queries replaced."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from clipdepth.cli.main import main
from clipdepth.device import resolve_device
from clipdepth.errors import ConfigError
from clipdepth.models import PureCLIPDepth


@pytest.fixture
def machine(monkeypatch):
    """``machine(gpus, mps)``: torch sees that many CUDA devices (none: no CUDA) and MPS or not."""

    def have(gpus: int = 0, mps: bool = False) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    return have


def refusal(name: str, local_rank: int = 0) -> str:
    with pytest.raises(ConfigError) as info:
        resolve_device(name, local_rank)
    assert info.value.setting == "device"
    return str(info.value)


def test_a_device_this_machine_does_not_have_names_those_it_has(machine):
    machine(gpus=2, mps=True)
    for name in ("cpu", "cuda", "cuda:0", "cuda:1", "mps"):  # those there are taken as given
        assert resolve_device(name) == torch.device(name)
    assert resolve_device("auto", local_rank=1) == torch.device("cuda:1")
    machine(gpus=0)
    assert resolve_device("auto") == torch.device("cpu")
    assert refusal("cuda") == "device 'cuda' is not on this machine (torch finds no CUDA here); use auto, or one it has: cpu"
    assert refusal("mps") == "device 'mps' is not on this machine; use auto, or one it has: cpu"
    machine(gpus=2, mps=True)
    assert refusal("cuda:2") == "device 'cuda:2' is not on this machine; use auto, or one it has: cpu, cuda:0, cuda:1, mps"
    assert refusal("auto", local_rank=2) == (
        "device 'auto' (cuda:2 for this process) is not on this machine; use auto, or one it has: cpu, cuda:0, cuda:1, mps"
    )
    assert refusal("xpu") == "device 'xpu' is not on this machine; use auto, or one it has: cpu, cuda:0, cuda:1, mps"


@pytest.mark.parametrize("name", ["foo", "cuda:x", "", "CUDA"])
def test_a_name_that_is_no_device_is_one_line(machine, name):
    machine(gpus=1)
    assert refusal(name) == f"device {name!r} is not a device name; use auto, or one this machine has: cpu, cuda:0"


def test_predict_and_caption_name_the_device_setting(machine, tiny_cfg, tmp_path, capsys, monkeypatch):
    machine(gpus=0)
    monkeypatch.setenv("CLIPDEPTH_TRACEBACK_DIR", str(tmp_path / "tb"))  # where an unexpected error's would go
    image = tmp_path / "a.png"
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(image)
    checkpoint = PureCLIPDepth.build(tiny_cfg).save_pretrained(tmp_path / "ckpt")
    cuda = "device 'cuda' is not on this machine (torch finds no CUDA here); use auto, or one it has: cpu"
    for flag in (["--set", "device=cuda"], ["--device", "cuda"]):  # the setting's flag is named either way
        assert main(["predict", str(image), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o"), *flag]) == 2
        assert capsys.readouterr().err == f"clipdepth predict: error: {cuda} (--device)\n"
    for device, said in (("cuda", cuda), ("foo", "device 'foo' is not a device name; use auto, or one this machine has: cpu")):
        # refused before the captioning model loads (there is none called "m")
        assert main(["caption", str(image), "--model", "m", "--out", str(tmp_path / "c"), "--device", device]) == 2
        assert capsys.readouterr().err == f"clipdepth caption: error: {said} (--device)\n"
    assert not (tmp_path / "o").exists() and not (tmp_path / "c").exists()
