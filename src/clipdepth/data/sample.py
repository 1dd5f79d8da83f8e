"""One RGB-D frame: what every dataset yields and every model, cache and evaluation reads."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class RGBDSample:
    image: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray  # (H, W) float32 metres, 0 = invalid/no measurement
    intrinsics: np.ndarray  # (4,) float32 fx, fy, cx, cy at this resolution
    name: str  # unique stem, e.g. "indoor_train_00012"
    # Descriptions of the frame, one per entry, as a VLM would write them (TR2M's text input);
    # None: the dataset has none (captions then come from data.caption or data.caption_dir).
    captions: list[str] | None = None
