"""The files a `serve` request writes, read back independently: the RGB PNG writer (which also
writes `predict`'s colour images) checked byte by byte against the PNG specification."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from clipdepth.errors import DataError
from clipdepth.io.predictions import rgb_png, write_rgb


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of every chunk after the signature, each chunk's CRC checked (PNG section 5.3)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        assert struct.unpack(">I", data[at + 8 + length : at + 12 + length])[0] == zlib.crc32(kind + body)
        chunks.append((kind, body))
        at += 12 + length
    return chunks


def test_rgb_png_rows_are_unfiltered_pixels_that_pillow_reads_back(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    data = rgb_png(rgb)
    chunks = _chunks(data)
    assert [kind for kind, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    # width 7, height 5, 8 bits, colour type 2 (truecolour), deflate, filter method 0, not interlaced
    assert chunks[0][1] == struct.pack(">IIBBBBB", 7, 5, 8, 2, 0, 0, 0)
    rows = np.frombuffer(zlib.decompress(chunks[1][1]), np.uint8).reshape(5, 1 + 7 * 3)
    assert (rows[:, 0] == 0).all()  # filter type None on every row
    assert np.array_equal(rows[:, 1:].reshape(5, 7, 3), rgb)
    write_rgb(tmp_path / "c.png", rgb[:, ::-1])  # a strided view is written as its pixels
    with Image.open(tmp_path / "c.png") as im:
        assert im.mode == "RGB" and np.array_equal(np.asarray(im), rgb[:, ::-1])


def test_the_page_shows_the_depth_as_a_stored_png_with_the_same_pixels():
    # serve's shown image: zlib level 0, the rows stored as they are (RFC 1951 section 3.2.4: stored blocks)
    from clipdepth.serve.service import SHOWN_PNG_LEVEL

    rgb = np.tile(np.arange(64, dtype=np.uint8)[None, :, None], (32, 1, 3))  # smooth: level 1 would shrink it
    idat = dict(_chunks(rgb_png(rgb, SHOWN_PNG_LEVEL)))[b"IDAT"]
    assert SHOWN_PNG_LEVEL == 0 and idat[0] & 0x0F == 8 and idat[1] >> 6 == 0  # deflate, "fastest" (level 0-1)
    assert idat[2] & 0b110 == 0 and len(idat) > 32 * (1 + 64 * 3)  # the first block stored, nothing squeezed
    assert np.array_equal(np.frombuffer(zlib.decompress(idat), np.uint8).reshape(32, -1)[:, 1:].reshape(32, 64, 3), rgb)
    assert len(dict(_chunks(rgb_png(rgb)))[b"IDAT"]) < 32 * 64  # the default level deflates


def test_rgb_png_refuses_what_is_not_rgb_bytes():
    with pytest.raises(DataError, match=r"an RGB PNG needs \(H, W, 3\) uint8, got \(2, 2, 4\) uint8"):
        rgb_png(np.zeros((2, 2, 4), np.uint8))
    with pytest.raises(DataError, match="got \\(2, 2, 3\\) float32"):
        rgb_png(np.zeros((2, 2, 3), np.float32))


@pytest.mark.parametrize(
    ("cuda", "threads", "cpus", "expected"),
    [
        (False, 2, 2, 1),  # torch's threads on every core: a second request's files would only slow the model
        (False, 1, 2, 2),  # a core left free: one request's PNG is written while the next model runs
        (False, 8, 4, 1),
        (True, 2, 2, 2),  # the model on the GPU leaves the host's cores to the files
    ],
)
def test_the_page_takes_two_requests_at_once_only_where_the_model_leaves_cores_free(monkeypatch, cuda, threads, cpus, expected):
    from clipdepth import device
    from clipdepth.serve.service import concurrent_requests

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    monkeypatch.setattr(device, "usable_cpus", lambda: cpus)
    assert concurrent_requests() == expected
