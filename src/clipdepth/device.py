"""Where a model runs: the config's ``device`` setting resolved to a torch device."""
from __future__ import annotations

import torch


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``"auto"``: this process's GPU (``cuda:<local_rank>``, one per rank under torchrun) when CUDA
    is available, else the CPU; any other name (``cpu``, ``cuda:1``) as given."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
