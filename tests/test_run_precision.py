"""Every device and precision: ``--device auto`` picks the best device present (accelerator queries
replaced here), ``precision``/``--precision`` runs the whole model at fp16 or bf16 on any device that
has it (checked on the CPU against fp32), and a precision a device cannot run is one line."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from clipdepth.cli.main import main
from clipdepth.device import available_devices, check_precision, resolve_device, run_device
from clipdepth.errors import ConfigError
from clipdepth.models import PureCLIPDepth, load_model


class FakeAccelerator:
    """torch.accelerator as a machine with ``count`` devices of ``kind`` would answer."""

    def __init__(self, kind: str | None, count: int = 1):
        self.kind, self.count = kind, count

    def is_available(self):
        return self.kind is not None

    def current_accelerator(self, check_available=False):
        return torch.device(self.kind) if self.kind else None

    def device_count(self):
        return self.count


@pytest.fixture
def machine(monkeypatch):
    def have(gpus=0, mps=False, accelerator=None, count=1):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
        kind = accelerator or ("cuda" if gpus else "mps" if mps else None)
        monkeypatch.setattr(torch, "accelerator", FakeAccelerator(kind, count or gpus))

    return have


def test_auto_picks_the_best_device_present(machine):
    machine(gpus=2, mps=True)
    assert resolve_device("auto", local_rank=1) == torch.device("cuda:1")
    machine(accelerator="xpu", count=2)
    assert available_devices() == ["cpu", "xpu:0", "xpu:1"]
    assert resolve_device("auto") == torch.device("xpu:0") and resolve_device("auto", 1) == torch.device("xpu:1")
    assert resolve_device("xpu") == torch.device("xpu")  # no index: the accelerator's current device
    machine(mps=True)
    assert resolve_device("auto") == torch.device("mps")  # before: the CPU
    machine()
    assert resolve_device("auto") == torch.device("cpu") and available_devices() == ["cpu"]


def test_a_precision_a_device_cannot_run_is_one_line(machine, monkeypatch):
    for precision in ("auto", "fp32", "fp16", "bf16"):
        check_precision(precision, "cpu")  # CPU autocast has both
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.raises(ConfigError, match=r"^precision bf16 cannot run on cuda:0: this GPU has no bfloat16; use fp32 or auto$") as info:
        check_precision("bf16", "cuda:0")
    assert info.value.setting == "precision"
    check_precision("fp16", "cuda:0")
    monkeypatch.setattr(torch.backends.mps, "is_macos_or_newer", lambda major, minor: False)
    with pytest.raises(ConfigError, match="MPS has bfloat16 from macOS 14"):
        check_precision("bf16", "mps")
    monkeypatch.setattr(torch.amp, "is_autocast_available", lambda kind: kind != "xpu")
    with pytest.raises(ConfigError, match="torch has no mixed precision .autocast. for xpu"):
        check_precision("fp16", "xpu:0")
    machine()
    cfg = type("Cfg", (), {"device": "cpu", "precision": "bf16"})()
    assert run_device(cfg) == torch.device("cpu")


@pytest.mark.parametrize("precision, tolerance", [("bf16", 0.03), ("fp16", 0.01)])
def test_reduced_precision_on_the_cpu_is_close_to_fp32(tiny_cfg, tmp_path, precision, tolerance):
    folder = PureCLIPDepth.build(tiny_cfg).save_pretrained(tmp_path / "ckpt")
    images = torch.rand(2, 3, 40, 56, generator=torch.Generator().manual_seed(0))
    fp32 = load_model(folder).infer(images)["depth"]
    model = load_model(folder, [f"precision={precision}"])
    assert model.cfg.precision == precision and model.run_precisions("auto") == {"clip": precision, "head": precision}
    reduced = model.infer(images)["depth"]
    assert not torch.equal(reduced, fp32)  # autocast did run: rounding shows
    assert (reduced - fp32).abs().max() / fp32.abs().max() < tolerance


def test_the_flags_set_the_runs_device_and_precision(tiny_cfg, tmp_path, capsys, monkeypatch, machine):
    machine()
    image = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(image)
    folder = PureCLIPDepth.build(tiny_cfg).save_pretrained(tmp_path / "ckpt")
    out = tmp_path / "out"
    flags = ["--npy", "--precision", "bf16", "--device", "cpu"]
    assert main(["predict", str(image), "--checkpoint", str(folder), "--out", str(out), *flags]) == 0
    expected = load_model(folder, ["precision=bf16"]).infer(str(image))["depth"][0].numpy()
    np.testing.assert_allclose(np.load(out / "a.npy"), expected, rtol=1e-6)
    capsys.readouterr()
    assert main(["predict", str(image), "--checkpoint", str(folder), "--out", str(tmp_path / "o2"), "--device", "cuda"]) == 2
    assert capsys.readouterr().err.endswith("use auto, or one it has: cpu (--device)\n")
    cfg = dataclasses.replace(tiny_cfg, precision="fp16")
    from clipdepth.training import train

    with pytest.raises(ConfigError, match="precision=fp16 would train the head in fp16 without loss scaling"):
        train(cfg)


def test_transformers_dtype_is_the_models_precision(tiny_cfg, tmp_path):
    from transformers import AutoModelForDepthEstimation

    import clipdepth.hf  # noqa: F401  (registers the Auto classes)

    folder = PureCLIPDepth.build(tiny_cfg).save_pretrained(tmp_path / "ckpt")
    for dtype, precision in ((torch.bfloat16, "bf16"), ("float16", "fp16"), (None, "auto"), ("auto", "auto")):
        loaded = AutoModelForDepthEstimation.from_pretrained(folder, dtype=dtype)
        assert loaded.model.cfg.precision == precision
    assert AutoModelForDepthEstimation.from_pretrained(folder, torch_dtype=torch.float16).model.cfg.precision == "fp16"
    with pytest.raises(ConfigError, match="dtype torch.int8"):
        AutoModelForDepthEstimation.from_pretrained(folder, dtype=torch.int8)
