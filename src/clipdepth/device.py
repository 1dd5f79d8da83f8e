"""Where a model runs and at which precision: the config's ``device`` setting (``--device``) resolved
to a torch device, and its ``precision`` setting (``--precision``) checked against that device."""

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


def _other_accelerator() -> str | None:
    """The type of torch's current accelerator when it is neither CUDA nor MPS (``xpu``, ...), else None."""
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is None or not accelerator.is_available():
        return None
    kind = accelerator.current_accelerator().type
    return None if kind in ("cuda", "mps") else kind


def available_devices() -> list[str]:
    """The devices this torch and machine have, as ``resolve_device`` takes them: ``cpu``, then
    ``cuda:0`` .. ``cuda:N-1`` when CUDA is available, another accelerator's ``<type>:0`` ..
    (``torch.accelerator``: XPU, ...), then ``mps`` when it is available."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    other = _other_accelerator()
    if other is not None:
        found += [f"{other}:{index}" for index in range(torch.accelerator.device_count())]
    if torch.backends.mps.is_available():
        found.append("mps")
    return found


def _auto(local_rank: int) -> str:
    """The best device present for this process: its GPU (one per rank under torchrun), else another
    accelerator's device of its rank, else MPS, else the CPU."""
    if torch.cuda.is_available():
        return f"cuda:{local_rank}"
    other = _other_accelerator()
    if other is not None:
        return f"{other}:{local_rank}"
    return "mps" if torch.backends.mps.is_available() and local_rank == 0 else "cpu"


def _listed_as(device: torch.device) -> str:
    """``device`` as ``available_devices`` names it (``cuda`` is ``cuda:0``, ``mps:0`` is ``mps``)."""
    if device.type in ("cpu", "mps"):
        return device.type if not device.index else str(device)
    return f"{device.type}:{device.index or 0}"


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``"auto"``: the best device present for this process (``cuda:<local_rank>``, one per rank
    under torchrun, else another accelerator's (``torch.accelerator``), else ``mps``, else the CPU);
    any other name (``cpu``, ``cuda``, ``cuda:1``, ``mps``, ``xpu:0``) as given.

    Raises ConfigError (setting ``device``) for a name that is not a device's (``foo``, ``cuda:x``)
    and for a device this torch or machine does not have (``cuda`` in a CPU-only torch, ``cuda:3``
    with two GPUs), naming those it has (``available_devices``): before any work, rather than
    where the model is first moved there."""
    shown = repr(name)
    if name == "auto":
        name = _auto(local_rank)
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


# ``precision`` (``--precision``): "auto" leaves each part at its own setting (``clip.precision``,
# ``train.head_precision``, ...; reduced precision on CUDA only); the others run the whole model
# at that precision on any device that has it.
RUN_PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def check_precision(precision: str, device: torch.device | str) -> None:
    """ConfigError (setting ``precision``), in one line, where ``device`` cannot run ``precision``:
    bf16 on a GPU without it (before Ampere), on MPS before macOS 14; fp16/bf16 on a device type
    torch has no autocast for. "auto" and "fp32" run everywhere."""
    if precision in ("auto", "fp32"):
        return
    device = torch.device(device)
    why = None
    if not torch.amp.is_autocast_available(device.type):
        why = f"torch has no mixed precision (autocast) for {device.type}"
    elif precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        why = "this GPU has no bfloat16"
    elif precision == "bf16" and device.type == "mps" and not torch.backends.mps.is_macos_or_newer(14, 0):
        why = "MPS has bfloat16 from macOS 14"
    if why is not None:
        raise ConfigError(f"precision {precision} cannot run on {device}: {why}; use fp32 or auto", setting="precision")


def run_device(cfg, local_rank: int = 0) -> torch.device:
    """Where a config's model runs: its ``device`` resolved (``resolve_device``) with its
    ``precision`` checked there (``check_precision``); ConfigError naming the setting otherwise."""
    device = resolve_device(cfg.device, local_rank)
    check_precision(cfg.precision, device)
    return device
