"""Where a model runs: the config's ``device`` setting (``caption --device``) resolved to a torch device."""

from __future__ import annotations

import os

import torch

from .errors import ConfigError


def usable_cpus() -> int:
    """The CPUs this process may use: its affinity on Linux (a batch job's share of a node, not the
    node's count), else the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def available_devices() -> list[str]:
    """The devices this torch and machine have, as ``resolve_device`` takes them: ``cpu``, then
    ``cuda:0`` .. ``cuda:N-1`` when CUDA is available, then ``mps`` when it is."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        found.append("mps")
    return found


def _listed_as(device: torch.device) -> str:
    """``device`` as ``available_devices`` names it (``cuda`` is ``cuda:0``, ``mps:0`` is ``mps``)."""
    if device.type == "cuda":
        return f"cuda:{device.index or 0}"
    return device.type if not device.index else str(device)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``"auto"``: this process's GPU (``cuda:<local_rank>``, one per rank under torchrun) when CUDA
    is available, else the CPU; any other name (``cpu``, ``cuda``, ``cuda:1``, ``mps``) as given.

    Raises ConfigError (setting ``device``) for a name that is not a device's (``foo``, ``cuda:x``)
    and for a device this torch or machine does not have (``cuda`` in a CPU-only torch, ``cuda:3``
    with two GPUs), naming those it has (``available_devices``): before any work, rather than
    where the model is first moved there."""
    shown = repr(name)
    if name == "auto":
        name = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
        shown = f"'auto' ({name} for this process)"
    there = available_devices()
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):  # torch's "Invalid device string", "Expected one of cpu, cuda, ..."
        raise ConfigError(
            f"device {shown} is not a device name; use auto, or one this machine has: {', '.join(there)}", setting="device"
        ) from None
    if _listed_as(device) not in there:
        why = " (torch finds no CUDA here)" if device.type == "cuda" and not torch.cuda.is_available() else ""
        raise ConfigError(f"device {shown} is not on this machine{why}; use auto, or one it has: {', '.join(there)}", setting="device")
    return device
