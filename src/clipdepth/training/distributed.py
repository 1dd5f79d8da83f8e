"""Running under `torchrun`: one process per GPU (or per CPU worker with gloo); rank 0 writes.

Outside torchrun everything here is a no-op, so the same commands run on one device.
"""
from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (e.g. validation metrics computed once)."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def from_environment() -> Distributed:
    """The process group torchrun describes in the environment, initialised once."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Distributed()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        # A process group left to the interpreter's exit can abort it ("terminate called without an
        # active exception" from gloo's threads): every rank takes it down in order instead.
        atexit.register(_shut_down)
    return Distributed(dist.get_rank(), dist.get_world_size(), local_rank)


def _shut_down() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
