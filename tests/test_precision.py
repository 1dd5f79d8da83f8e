"""bf16 by default on accelerators: what "auto" resolves to on each device, what a checkpoint records,
and how far bf16 autocast moves a head's forward pass and training step from fp32."""

import contextlib
import copy
import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from clipdepth.config import Config
from clipdepth.errors import ConfigError
from clipdepth.models import TR2M, PureCLIPDepth
from clipdepth.models.base import head_autocast, head_precision
from clipdepth.models.depthclip import DepthCLIP
from clipdepth.models.learned_prompts import LearnedPrompts
from clipdepth.training.run import Experiment
from clipdepth.training.trainer import Trainer

CPU, CUDA = torch.device("cpu"), torch.device("cuda")  # a device name: no GPU is needed to resolve for it


def test_auto_is_bf16_on_cuda_and_fp32_on_a_cpu():
    assert Config().train.head_precision == "auto"
    assert head_precision("auto", CUDA) == "bf16" and head_precision("auto", "cuda:1") == "bf16"
    assert head_precision("auto", CPU) == "fp32"
    assert head_precision("bf16", CPU) == "bf16" and head_precision("fp32", CUDA) == "fp32"  # as set
    assert not head_autocast("auto", CPU)._enabled and head_autocast("bf16", CPU)._enabled
    for model in (PureCLIPDepth, TR2M):  # their frozen encoders: autocast applies on CUDA only
        assert model.device_precision("auto", CUDA) == "bf16" and model.device_precision("auto", CPU) == "fp32"
    # "released": PureCLIP-Depth's clip.load gives fp16 weights; TR2M's release runs fp32
    assert PureCLIPDepth.device_precision("released", CUDA) == "fp16" and TR2M.device_precision("released", CUDA) == "fp32"
    assert PureCLIPDepth.device_precision("released", CPU) == "fp32"
    # the baselines reproduce their releases: "auto" stays the released precision
    assert DepthCLIP.device_precision("auto", CUDA) == "fp16" and LearnedPrompts.device_precision("auto", CUDA) == "fp32"
    with pytest.raises(ConfigError, match="fp8"):
        PureCLIPDepth.device_precision("fp8", CPU)


def outputs(model, features, precision: str | None) -> dict[str, torch.Tensor]:
    """The depth (metres), and TR2M's per-pixel scale and shift (its depth clamps at this size);
    ``precision`` None: no autocast at all."""
    with torch.no_grad(), head_autocast(precision, CPU) if precision else contextlib.nullcontext():
        depth, out = model.predict_from_features(features)
    if isinstance(model, TR2M):
        return {"scale": out.scale.float(), "shift": out.shift.float()}
    return {"depth": depth.float()}


@pytest.mark.parametrize("name", ["pureclip", "tr2m"])
def test_a_bf16_forward_stays_within_2_percent_of_fp32(name, tiny_cfg, tiny_tr2m_cfg):
    """bf16 keeps 8 bits of mantissa (a relative step of 2^-8 = 0.4 %) through a few layers: every
    output within 2 % of the largest of the fp32 forward's, computed here with no autocast at all."""
    cfg = tiny_cfg if name == "pureclip" else tiny_tr2m_cfg
    exp = Experiment.create(cfg)
    features = exp.encode("val", flip=False).features(slice(0, 3))
    model = exp.model.eval()
    reference, bf16, auto = (outputs(model, features, p) for p in (None, "bf16", "auto"))
    for key, ref in reference.items():
        assert not torch.equal(bf16[key], ref)  # the autocast did run in bf16
        assert (bf16[key] - ref).abs().max() < 2e-2 * ref.abs().max()
        assert torch.equal(auto[key], ref)  # "auto" on a CPU is fp32 exactly


def step_losses(cfg, exp, split, tmp_path, head_setting: str) -> list[float]:
    run_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, head_precision=head_setting))
    model = copy.deepcopy(exp.model)
    trainer = Trainer.single_dataset(model, run_cfg, split, split, exp.preprocessor, exp.protocol, tmp_path / head_setting)
    torch.manual_seed(7)
    return [float(r["loss"]) for _, r in trainer.steps([torch.tensor([0, 1, 2, 3]), torch.tensor([4, 5, 0, 1])])]


@pytest.mark.parametrize("name", ["pureclip", "tr2m"])
def test_bf16_training_steps_stay_within_3_percent_of_fp32(name, tiny_cfg, tiny_tr2m_cfg, tmp_path):
    """Two optimisation steps (the second on weights the first updated): each loss within 3 % of
    fp32's; "auto" on a CPU trains in fp32, bit for bit."""
    cfg = tiny_cfg if name == "pureclip" else tiny_tr2m_cfg
    cfg.pureclip.phase_steps, cfg.pureclip.dropout = 1, 0.0  # both PureCLIP phases; no dropout masks
    exp = Experiment.create(cfg)
    split = exp.encode("train", flip=False)
    reference = step_losses(cfg, exp, split, tmp_path, "fp32")
    bf16 = step_losses(cfg, exp, split, tmp_path, "bf16")
    assert bf16 != reference
    np.testing.assert_allclose(bf16, reference, rtol=3e-2)
    assert step_losses(cfg, exp, split, tmp_path, "auto") == reference


def test_a_checkpoint_records_the_precision_each_part_ran_at(tiny_cfg):
    result, _ = Experiment.create(tiny_cfg).train(tiny_cfg.output_dir)
    meta = json.loads((result.model_dir / "config.json").read_text())
    assert meta["config"]["train"]["head_precision"] == "auto" and meta["config"]["clip"]["precision"] == "auto"
    assert meta["precision"] == {"clip": "fp32", "head": "fp32"}  # what "auto" was on this CPU


def test_the_gpu_check_refuses_in_one_line_without_a_gpu():
    if shutil.which("nvidia-smi") or torch.cuda.is_available():
        pytest.skip("this machine has a GPU: gpu_check.sh runs there")
    done = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh"],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and "run it on a machine with one" in done.stderr
