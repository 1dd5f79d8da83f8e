"""Encoder outputs on disk: computed once per (frame, preprocessing, flip), reused by every run.

A cache folder holds ``cache.json`` (the key and the shard size) and one folder per shard of
``shard_size`` frames with ``.npy`` arrays, loaded memory-mapped: the model's named arrays (e.g.
patch tokens and CLS in half precision; in the compact forms of ``io.stored``, a ragged
``<name>.bytes`` + ``<name>.offsets`` pair for compressed rows, ``<name>`` int8 +
``<name>.scale`` for quantised ones, named in ``names.json``), each frame's size, and the depth the split is encoded
for (``io.depth_store``): a training split keeps the input-size depth as 16-bit PNGs with a scale
per frame, a scored split the full-resolution GT losslessly. Each shard is
written to a temporary folder and renamed into place only when complete, so a kill never leaves
a corrupt shard (a shard folder that exists is complete); a rebuild keeps the finished shards and
computes the rest. Under torchrun each rank builds every world_size-th shard.

The key names everything that changes the content: the model type, its frozen weights
(fingerprint), input size, crop, tiles, flip, dataset settings, the frames' names and, for
models that read captions, the caption files' content. A cache built for another key is
refused, never silently reused; one written in an earlier format is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset
from tqdm.auto import tqdm

from ..config import DataConfig, first_difference
from ..data.transforms import Preprocessor
from ..errors import CheckpointError
from ..io.atomic import atomic_dir, clean_stale, write_text_atomic
from ..io.fingerprint import file_digest
from ..data.captions import CaptionLookup
from ..data.splits import listed_path
from ..io.depth_store import PackedBlobs, ScoringGT, TrainingDepth, encode_gt, encode_png16, pack
from .memory import EncodedSplit, encode_split
from ..io.stored import EncodedRows, QuantizedRows

INDEX_NAME = "cache.json"
# 2: named arrays per model (TR2M); 3: compact depth by purpose; 4: compressed and quantised
# arrays (io.stored) and the key's "storage"
FORMAT_VERSION = 4


class ShardedRows:
    """Rows of several memory-mapped shards seen as one array, never concatenated in memory:
    indexing reads just the rows asked for."""

    def __init__(self, parts: list[torch.Tensor]) -> None:
        self.parts = parts
        self.offsets = np.cumsum([0] + [len(p) for p in parts])
        self.shape = (int(self.offsets[-1]), *parts[0].shape[1:])
        self.dtype = parts[0].dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: torch.Tensor | slice) -> torch.Tensor:
        rows = np.arange(self.shape[0])[index] if isinstance(index, slice) else np.asarray(index).reshape(-1)
        shard = np.searchsorted(self.offsets, rows, side="right") - 1
        out = torch.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        for s in np.unique(shard):
            picked = np.flatnonzero(shard == s)
            out[torch.from_numpy(picked)] = self.parts[s][torch.from_numpy(rows[picked] - self.offsets[s])]
        return out

    def to(self, device: torch.device | str) -> torch.Tensor:
        """Every row read into one tensor on ``device``."""
        return self[slice(None)].to(device)


def _file_digest(path: str | Path | None) -> str | None:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16] if path and Path(path).is_file() else None


# Data fields that only choose which frames a split holds, which the frame names already key.
UNKEYED_DATA_FIELDS = ("val_source",)


def frame_names(dataset: Dataset) -> list[str]:
    """Names of a dataset's frames, from its ``names`` when it has them (no decoding)."""
    names = getattr(dataset, "names", None)
    return list(names) if names is not None else [dataset[i].name for i in range(len(dataset))]


def files_digest(dataset: Dataset, content: bool = False) -> str | None:
    """Path, size and modification time of every file the frames are read from: a file re-exported
    in place (new depth PNGs, say) is a new cache. With ``content``, path and content
    (``io.fingerprint.file_digest``) instead, which also tells a rewrite that kept the size and the
    time. None for datasets without files (synthetic)."""
    files = getattr(dataset, "files", None)
    if files is None:
        return None
    digest = hashlib.sha256()
    for index in range(len(dataset)):
        for path in files(index):
            if content:
                digest.update(f"{path}|{file_digest(path)}\n".encode())
            else:
                stat = Path(path).stat()
                digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def captions_digest(data: DataConfig, names: list[str]) -> str | None:
    """Content of the frames' caption files: an edited caption is a new cache."""
    if not data.caption_dir:
        return None
    digest = hashlib.sha256()
    for name in names:
        path = Path(data.caption_dir) / f"{name}.txt"
        digest.update(path.read_bytes() if path.is_file() else b"<missing>")
    return digest.hexdigest()[:16]


def cache_key(
    model: torch.nn.Module,
    preprocessor: Preprocessor,
    data: DataConfig,
    split: str,
    flip: bool,
    names: list[str],
    files: str | None = None,
    purpose: str = "score",
) -> dict[str, Any]:
    """Everything the cached arrays depend on; two equal keys mean interchangeable caches.

    The key is returned as it reads back from ``cache.json`` (tuples as lists), so that a fresh
    key and a stored one compare equal.
    """
    key = {
        "format": FORMAT_VERSION,
        "model": model.architecture,
        "encoder": model.encoder.description,
        "encoder_fingerprint": model.encoder.fingerprint(),
        "precision": model.frozen_run_precisions,  # what the frozen parts ran at
        "preprocessing": {
            "input_shape": preprocessor.input_shape,
            "crop": preprocessor.crop,
            "kb_crop": preprocessor.kb_crop,
            "tiles": preprocessor.tiles,
            "resize": preprocessor.resize,
            "depth_resize": preprocessor.depth_resize,
        },
        "flip": flip,
        "split": split,
        "purpose": purpose,  # "train": input-size depth; "score": full-resolution GT
        "storage": model.storage(purpose),  # compressed or quantised arrays (io.stored)
        # Split lists by content, so an edited list is a new cache even at the same path.
        # (training augmentation changes no stored array: a flip is keyed by `flip`)
        "data": {
            **{k: v for k, v in asdict(data).items() if not (k.startswith("augment") or k in UNKEYED_DATA_FIELDS)},
            "train_list_sha": _file_digest(listed_path(data, "train_list")),
            "test_list_sha": _file_digest(listed_path(data, "test_list")),
        },
        "captions": captions_digest(data, names) if model.uses_captions else None,
        "frames": hashlib.sha256("\n".join(names).encode()).hexdigest()[:16],
        "files": files,  # files_digest: sizes and times of the frames' files
        "n_frames": len(names),
    }
    return json.loads(json.dumps(key))


def _describe_difference(cached: dict, wanted: dict) -> str:
    name, was, now = first_difference(cached, wanted) or ("", cached, wanted)
    return f"{name}: cached {was!r}, wanted {now!r}"


def write_shard(folder: Path, part: EncodedSplit) -> None:
    """One shard's files into ``folder``: the arrays as ``.npy``, each frame's size, and the depth
    the split keeps (training: input-size 16-bit PNGs; scoring: the lossless GT) packed per frame."""
    arrays = {**part.arrays, **{f"flipped_{k}": v for k, v in (part.flipped_arrays or {}).items()}}
    kinds = {}
    for name, array in arrays.items():
        files, kinds[name] = _array_files(name, array)
        for stem, values in files.items():
            np.save(folder / f"{stem}.npy", values)
    np.save(folder / "shapes.npy", part.shapes)
    if part.depth is not None:
        blobs, scales = [encode_png16(units.numpy()) for units in part.depth.units], part.depth.scale.numpy()
    else:
        encoded = [encode_gt(gt) for gt in part.gt]
        blobs, scales = [b for b, _ in encoded], np.array([s for _, s in encoded], np.float32)
    data, offsets = pack(blobs)
    prefix = "depth" if part.depth is not None else "gt"
    np.save(folder / f"{prefix}_data.npy", data)
    np.save(folder / f"{prefix}_offsets.npy", offsets)
    np.save(folder / f"{prefix}_scale.npy", scales)
    purpose = "train" if part.depth is not None else "score"
    (folder / "names.json").write_text(
        json.dumps(
            {
                "frames": part.names,
                "arrays": sorted(part.arrays),
                "purpose": purpose,
                "kinds": {k: kind for k, kind in kinds.items() if kind is not None and not k.startswith("flipped_")},
            }
        )
    )


def _array_files(name: str, array) -> tuple[dict[str, np.ndarray], dict[str, Any] | None]:
    """The ``.npy`` files that hold one array of a shard (file stem -> values) and its kind for
    ``names.json`` (None for a plain array)."""
    if isinstance(array, EncodedRows):
        data, offsets = pack([array.blobs[i] for i in range(len(array))])
        return {f"{name}.bytes": data, f"{name}.offsets": offsets}, {"codec": array.codec, "row_shape": list(array.row_shape)}
    if isinstance(array, QuantizedRows):
        return {name: array.values.numpy(), f"{name}.scale": array.scale.numpy()}, {"codec": "int8"}
    return {name: array.numpy()}, None


def _array_from_files(name: str, kind: dict[str, Any] | None, load) -> torch.Tensor | EncodedRows | QuantizedRows:
    """``_array_files``' files read back (memory-mapped); DamagedShard when they do not fit together."""
    with warnings.catch_warnings():  # read-only memory maps: the cache is never written through
        warnings.simplefilter("ignore", UserWarning)
        if kind is None:
            return torch.from_numpy(load(name))
        if kind["codec"] == "int8":
            values, scale = load(name), load(f"{name}.scale")
            if scale.shape != (*values.shape[:-1], 1):
                raise DamagedShard(f"{name}.scale.npy does not fit {name}.npy")
            return QuantizedRows(torch.from_numpy(values), torch.from_numpy(scale))
        data, offsets = load(f"{name}.bytes"), load(f"{name}.offsets")
        if not len(offsets) or offsets[-1] != len(data):
            raise DamagedShard(f"{name}.offsets.npy does not fit {name}.bytes.npy")
        return EncodedRows(kind["codec"], kind["row_shape"], [(data, offsets)])


def _joined(parts: list) -> ShardedRows | EncodedRows | QuantizedRows:
    """One array's rows of several shards, seen as one array."""
    if isinstance(parts[0], EncodedRows):
        return EncodedRows.concat(parts)
    if isinstance(parts[0], QuantizedRows):
        return QuantizedRows(ShardedRows([p.values for p in parts]), ShardedRows([p.scale for p in parts]))
    return ShardedRows(parts)


class DamagedShard(Exception):
    """A finished shard folder that cannot be read (truncated, missing or unreadable files)."""


def _read_shard(folder: Path, flip: bool) -> tuple[EncodedSplit, dict[str, np.ndarray]]:
    """A shard, memory-mapped, and its packed depth (``data``, ``offsets``, ``scale``);
    DamagedShard says what is wrong with it."""

    def load(name: str) -> np.ndarray:
        path = folder / f"{name}.npy"
        if not path.is_file():
            raise DamagedShard(f"{path.name} is missing")
        try:
            return np.load(path, mmap_mode="r")  # reads the header; a truncated file fails here
        except (OSError, ValueError, EOFError) as exc:
            raise DamagedShard(f"{path.name} is unreadable ({' '.join(str(exc).split())[:120]})") from None

    try:
        index = json.loads((folder / "names.json").read_text())
        names, array_names, purpose = list(index["frames"]), list(index["arrays"]), index["purpose"]
        kinds = dict(index["kinds"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DamagedShard(f"names.json is missing or damaged ({type(exc).__name__})") from None
    arrays = {k: _array_from_files(k, kinds.get(k), load) for k in array_names}
    flipped = {k: _array_from_files(f"flipped_{k}", kinds.get(k), load) for k in array_names} if flip else None
    prefix = "depth" if purpose == "train" else "gt"
    packed = {k: load(f"{prefix}_{k}") for k in ("data", "offsets", "scale")}
    shapes = load("shapes")
    lengths = {len(a) for a in [*arrays.values(), *(flipped or {}).values()]}  # frames x tiles rows each
    offsets = packed["offsets"]
    if (
        not names
        or len(shapes) != len(names)
        or len(packed["scale"]) != len(names)
        or len(offsets) != len(names) + 1
        or len(lengths) != 1
        or lengths.pop() % len(names)
        or offsets[-1] != len(packed["data"])
    ):
        raise DamagedShard(f"its arrays do not hold the same {len(names)} frames")

    part = EncodedSplit(names=names, arrays=arrays, flipped_arrays=flipped, shapes=np.asarray(shapes))
    return part, {"purpose": purpose, **packed}


def read_index(cache_dir: str | Path) -> dict[str, Any]:
    """The cache's ``cache.json``; CheckpointError with what to do when it is missing or damaged."""
    path = Path(cache_dir) / INDEX_NAME
    if not path.is_file():
        raise CheckpointError(f"{cache_dir}: not a feature cache (no {INDEX_NAME})")
    try:
        index = json.loads(path.read_text())
        valid = (
            isinstance(index, dict)
            and isinstance(index.get("key"), dict)
            and isinstance(index.get("shard_size"), int)
            and index["shard_size"] > 0
            and isinstance(index["key"].get("n_frames"), int)
        )
    except (ValueError, UnicodeDecodeError):
        valid = False
    if not valid:
        raise CheckpointError(f"{path}: damaged cache index; delete the folder {cache_dir} and build the cache again")
    if index["key"].get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"{cache_dir}: feature cache written in format {index['key'].get('format')} by another clipdepth; this "
            f"version reads format {FORMAT_VERSION} (compressed arrays): run `clipdepth cache build` (or the training "
            "run) again: it builds the cache anew in its place"
        )
    return index


def _discard_earlier_format(cache_dir: Path) -> None:
    """Remove a cache an earlier clipdepth wrote in another format (its index and shard folders,
    nothing else), saying so, so that it is built anew rather than misread."""
    try:
        key = json.loads((cache_dir / INDEX_NAME).read_text())["key"]
        earlier = isinstance(key["format"], int) and key["format"] < FORMAT_VERSION and isinstance(key["n_frames"], int)
    except (OSError, ValueError, KeyError, TypeError):
        return  # no index, or a damaged one: read_index says what to do
    if not earlier:
        return
    print(
        f"{cache_dir}: feature cache in format {key['format']} of an earlier clipdepth; building it anew in format {FORMAT_VERSION}",
        file=sys.stderr,
    )
    for shard in cache_dir.glob("shard_[0-9][0-9][0-9][0-9][0-9]"):
        shutil.rmtree(shard)
    (cache_dir / INDEX_NAME).unlink()


def build_cache(
    cache_dir: str | Path,
    model: torch.nn.Module,
    dataset: Dataset,
    preprocessor: Preprocessor,
    key: dict[str, Any],
    shard_size: int = 256,
    batch_size: int = 8,
    rank: int = 0,
    world_size: int = 1,
    captions: CaptionLookup | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Encode the frames not cached yet, one shard at a time (this rank's share of them), the
    frames decoded by ``workers`` processes (``data.loader``).

    Under torchrun, rank 0 must have written ``cache.json`` (call with the index first, then a
    barrier) — ``start_cache`` does that part.
    """
    cache_dir = Path(cache_dir)
    index = start_cache(cache_dir, key, shard_size) if rank == 0 else read_index(cache_dir)
    size = index["shard_size"]
    mine = [s for s in range(_n_shards(key, size)) if s % world_size == rank]
    todo = [s for s in mine if _shard_state(cache_dir / _shard_name(s), key["flip"]) != "ok"]
    for shard in tqdm(todo, desc="cache build", unit="shard", disable=rank != 0 or not todo):
        frames = Subset(dataset, range(shard * size, min((shard + 1) * size, len(dataset))))
        part = encode_split(
            model,
            frames,
            preprocessor,
            batch_size,
            key["flip"],
            desc=_shard_name(shard),
            captions=captions,
            purpose=key["purpose"],
            workers=workers,
        )
        with atomic_dir(cache_dir / _shard_name(shard)) as tmp:
            write_shard(tmp, part)
    return index


def shard_problem(folder: Path, flip: bool) -> str | None:
    """Why a finished shard folder cannot be read, or None when it can."""
    try:
        _, packed = _read_shard(folder, flip)
        if len(packed["data"]):  # the last bytes of the depth: a shard cut short fails here
            int(packed["data"][-1])
    except DamagedShard as exc:
        return str(exc)
    return None


def _shard_state(folder: Path, flip: bool) -> str:
    """ "ok", "missing", or "damaged" (then removed, so that it is built again)."""
    if not folder.is_dir():
        return "missing"
    if shard_problem(folder, flip) is not None:
        shutil.rmtree(folder, ignore_errors=True)
        return "damaged"
    return "ok"


def start_cache(cache_dir: Path, key: dict[str, Any], shard_size: int) -> dict[str, Any]:
    """The cache's index: written for a new cache, checked against ``key`` for an existing one.
    Temporaries a killed build left are removed first, and a cache in an earlier format (it is
    built anew)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    clean_stale(cache_dir)
    _discard_earlier_format(cache_dir)
    if (cache_dir / INDEX_NAME).is_file():
        index = read_index(cache_dir)
        if index["key"] != key:
            raise CheckpointError(
                f"{cache_dir}: feature cache was built for another setting ({_describe_difference(index['key'], key)}); "
                "use another cache folder"
            )
        return index
    index = {"key": key, "shard_size": shard_size}
    write_text_atomic(cache_dir / INDEX_NAME, json.dumps(index, indent=2))
    return index


def _n_shards(key: dict[str, Any], shard_size: int) -> int:
    return -(-key["n_frames"] // shard_size)


def _shard_name(shard: int) -> str:
    return f"shard_{shard:05d}"


def _finished_shards(cache_dir: Path, index: dict[str, Any]) -> list[str]:
    names = [_shard_name(s) for s in range(_n_shards(index["key"], index["shard_size"]))]
    return [n for n in names if (cache_dir / n).is_dir()]


def load_cache(cache_dir: str | Path, key: dict[str, Any]) -> EncodedSplit:
    """The cached split, memory-mapped; refused unless complete and built for ``key``."""
    cache_dir = Path(cache_dir)
    index = read_index(cache_dir)
    if index["key"] != key:
        raise CheckpointError(f"{cache_dir}: feature cache was built for another setting ({_describe_difference(index['key'], key)})")
    n_shards, finished = _n_shards(key, index["shard_size"]), _finished_shards(cache_dir, index)
    if len(finished) != n_shards:
        raise CheckpointError(f"{cache_dir}: cache is incomplete ({len(finished)} of {n_shards} shards); run cache build again")
    parts = []
    for name in finished:
        try:
            parts.append(_read_shard(cache_dir / name, key["flip"]))
        except DamagedShard as exc:
            raise CheckpointError(
                f"{cache_dir / name}: damaged cache shard ({exc}); run `clipdepth cache build` (or the training run) "
                "again: it rebuilds damaged shards and keeps the others"
            ) from None

    def rows(arrays: list[dict[str, Any]]) -> dict[str, Any]:
        return {k: _joined([a[k] for a in arrays]) for k in arrays[0]}

    shards, packed = [p for p, _ in parts], [d for _, d in parts]
    blobs = PackedBlobs([(d["data"], d["offsets"]) for d in packed])
    scales = np.concatenate([d["scale"] for d in packed])
    shapes = np.concatenate([p.shapes for p in shards])
    train = key["purpose"] == "train"
    return EncodedSplit(
        names=[n for p in shards for n in p.names],
        arrays=rows([p.arrays for p in shards]),
        flipped_arrays=rows([p.flipped_arrays for p in shards]) if shards[0].flipped_arrays is not None else None,
        shapes=shapes,
        depth=TrainingDepth(torch.from_numpy(scales.copy()), packed=blobs) if train else None,
        gt=None if train else ScoringGT(blobs, scales, shapes),
        tiles=key["preprocessing"]["tiles"],
    )


def cache_info(cache_dir: str | Path) -> dict[str, Any]:
    """Frames, readable shards and their size; damaged shards by name and problem (a build rebuilds
    them); what an interrupted build left is not counted."""
    index = read_index(cache_dir)
    key = index["key"]
    finished = _finished_shards(Path(cache_dir), index)
    damaged = {name: problem for name in finished if (problem := shard_problem(Path(cache_dir) / name, key["flip"])) is not None}
    good = [name for name in finished if name not in damaged]
    files = [p for name in good for p in (Path(cache_dir) / name).glob("*.npy")]
    depth = sum(p.stat().st_size for p in files if p.name.startswith(("depth_", "gt_", "shapes")))
    size = sum(p.stat().st_size for p in files)
    done = sum(len(json.loads((Path(cache_dir) / name / "names.json").read_text())["frames"]) for name in good)
    return {
        "frames": key["n_frames"],
        "shards_done": len(good),
        "shards_damaged": damaged,
        "shards_total": _n_shards(key, index["shard_size"]),
        "bytes": size,
        "purpose": key["purpose"],
        # over the frames of readable shards: features (and flipped copies) apart from depth
        "bytes_per_frame": size / max(done, 1),
        "feature_bytes_per_frame": (size - depth) / max(done, 1),
        "depth_bytes_per_frame": depth / max(done, 1),
        "key": key,
    }


def cache_folders(folder: str | Path) -> list[Path]:
    """The split caches in ``folder``: the folder itself when it is one, else its sub-folders that
    are (``train/``, ``val_flip/``, ... under a ``train.feature_cache`` folder)."""
    folder = Path(folder)
    if (folder / INDEX_NAME).is_file() or not folder.is_dir():
        return [folder]
    found = sorted(p for p in folder.iterdir() if (p / INDEX_NAME).is_file())
    return found or [folder]
