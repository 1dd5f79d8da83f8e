"""train.log_to: one tiny run logs to every tracker installed here (TensorBoard, W&B offline, an
MLflow file store); each test reads its tracker's files back and finds the step losses, learning
rates and epoch metrics of the run's own CSV records, and one validation panel per epoch. A tracker
that is not installed skips its test (saying which extra installs it)."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipdepth.config import load_config
from clipdepth.errors import ConfigError
from clipdepth.training.tracking import check_trackers

from .conftest import TINY_ENCODER

TRACKERS = [name for name in ("tensorboard", "wandb", "mlflow") if importlib.util.find_spec(name) is not None]
EPOCHS = 2


def needs(name: str) -> None:
    if name not in TRACKERS:
        pytest.skip(f"{name} is not installed (pip install 'clipdepth[{name}]'); the run's other trackers are tested")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, object, list[dict], list[dict]]:
    """(output folder, config, train_epochs.csv rows, train_steps.jsonl records) of a 2-epoch run
    logging every step to every tracker installed (about 20 s with all three)."""
    if not TRACKERS:
        pytest.skip("no tracker installed (pip install 'clipdepth[tracking]')")
    from clipdepth.training.run import Experiment

    out = tmp_path_factory.mktemp("tracked") / "run"
    overrides = [f"clip.{k}={v}" for k, v in TINY_ENCODER.items()] + [
        "data.train_size=6",
        "data.val_size=3",
        "data.height=48",
        "data.width=64",
        "train.batch_size=4",
        f"train.max_epochs={EPOCHS}",
        "eval.batch_size=4",
        "train.log_every=1",
        f"train.log_to=[csv,{','.join(TRACKERS)}]",
        "train.wandb_mode=offline",
        f"output_dir={out}",
    ]
    cfg = load_config("demo", overrides)
    Experiment.create(cfg).train(out)
    with (out / "train_epochs.csv").open() as f:
        epochs = list(csv.DictReader(f))
    steps = [json.loads(line) for line in (out / "train_steps.jsonl").read_text().splitlines()]
    assert len(epochs) == EPOCHS and steps
    return out, cfg, epochs, steps


def expected(cfg, epochs: list[dict], steps: list[dict]) -> tuple[dict, dict]:
    """What every tracker must hold: {tag: {step: value}} at the global step (losses, learning
    rates) and at the epoch (validation metrics), from the run's own CSV records and its recipe."""
    at_step = {"train/loss": {s["step"]: s["loss"] for s in steps}}
    # PureCLIP-Depth's two optimisers at their recipe's rates (the decay starts after these epochs)
    at_step["lr/embedding"] = {s["step"]: cfg.pureclip.embed_lr for s in steps}
    at_step["lr/depth"] = {s["step"]: cfg.pureclip.depth_lr for s in steps}
    at_epoch = {f"val/{m}": {int(r["epoch"]): float(r[f"val_{m}"]) for r in epochs} for m in ("abs_rel", "rmse", "d1")}
    return at_step, at_epoch


def check_panel(png: bytes) -> None:
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert image.shape[0] > 50 and image.shape[1] > 4 * image.shape[0] // 2  # four panes side by side
    assert image.std() > 0  # not a blank canvas


def test_tensorboard_holds_the_scalars_and_a_panel_per_epoch(run):
    needs("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, cfg, epochs, steps = run
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    at_step, at_epoch = expected(cfg, epochs, steps)
    for tag, values in {**at_step, **at_epoch}.items():
        logged = {e.step: e.value for e in events.Scalars(tag)}
        assert logged == pytest.approx(values, rel=1e-6), tag  # TensorBoard keeps float32
    panels = events.Images("val/panel")
    assert [p.step for p in panels] == list(range(1, EPOCHS + 1))
    for panel in panels:
        check_panel(panel.encoded_image_string)


def wandb_history(path: Path) -> list[dict]:
    """The history rows of an offline W&B run file, read without wandb's reader: the file is a
    LevelDB-style log (a 7-byte header, 32 KiB blocks of records with a 7-byte header: CRC32,
    length, type 1 full / 2 first / 3 middle / 4 last) of protobuf ``Record`` messages."""
    from wandb.proto import wandb_internal_pb2

    data, block, pos = path.read_bytes(), 32768, 7
    assert data[:4] == b":W&B"
    records, pending = [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            pos += left
            continue
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            records.append(pending)
            pending = b""
    rows = []
    for raw in records:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            rows.append({"/".join(i.nested_key) if i.nested_key else i.key: json.loads(i.value_json) for i in record.history.item})
    return rows


def test_wandb_offline_holds_the_scalars_and_a_panel_per_epoch(run):
    needs("wandb")
    out, cfg, epochs, steps = run
    (folder,) = (out / "wandb").glob("offline-run-*")
    (log,) = folder.glob("run-*.wandb")
    rows = wandb_history(log)
    at_step, at_epoch = expected(cfg, epochs, steps)
    for tag, values in at_step.items():
        assert {r["_step"]: r[tag] for r in rows if tag in r} == pytest.approx(values, rel=1e-12), tag
    for tag, values in at_epoch.items():
        assert {r["epoch"]: r[tag] for r in rows if tag in r} == pytest.approx(values, rel=1e-12), tag
    panels = [r for r in rows if "val/panel/path" in r]
    assert [r["epoch"] for r in panels] == list(range(1, EPOCHS + 1))
    for row in panels:
        check_panel((folder / "files" / row["val/panel/path"]).read_bytes())


def test_mlflow_file_store_holds_the_scalars_and_a_panel_per_epoch(run, monkeypatch):
    needs("mlflow")
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses a file store without it
    out, cfg, epochs, steps = run
    client = MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name(cfg.train.mlflow_experiment)
    (found,) = client.search_runs([experiment.experiment_id])
    run_id = found.info.run_id
    assert found.info.run_name == out.name and found.info.status == "FINISHED"
    at_step, at_epoch = expected(cfg, epochs, steps)
    for tag, values in {**at_step, **at_epoch}.items():
        assert {m.step: m.value for m in client.get_metric_history(run_id, tag)} == pytest.approx(values, rel=1e-12), tag
    panels = sorted(a.path for a in client.list_artifacts(run_id, "panels"))
    assert panels == [f"panels/epoch_{e:03d}.png" for e in range(1, EPOCHS + 1)]
    for path in panels:
        check_panel(Path(client.download_artifacts(run_id, path, str(out / "downloaded"))).read_bytes())


@pytest.mark.parametrize("name", ["tensorboard", "wandb", "mlflow"])
def test_a_tracker_that_is_not_installed_is_one_line_with_the_pip_command(name, monkeypatch):
    cfg = load_config("demo", [f"train.log_to=[csv,{name}]"])
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda module, *a: None if module == name else real(module, *a))
    with pytest.raises(ConfigError, match=rf"^train.log_to: {name} is not installed; pip install 'clipdepth\[{name}\]'"):
        check_trackers(cfg)
    check_trackers(load_config("demo"))  # csv alone needs nothing


def test_an_unknown_tracker_is_refused_by_the_config():
    with pytest.raises(ConfigError, match="train.log_to"):
        load_config("demo", ["train.log_to=[csv,neptune]"])
