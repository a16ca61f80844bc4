"""The one place a device name is read: ``auto``, ``cpu``, ``mps``, ``cuda`` or ``cuda:N``.

The config checks names with :func:`device_problem`, worker planning asks :func:`may_use_cuda`,
and the trainer turns a name into a ``torch.device`` with :func:`resolve_device`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from archsearch.errors import ArchsearchError

if TYPE_CHECKING:
    import torch

DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def device_problem(name: str) -> str | None:
    """What is wrong with a configured device name, or None when it is one archsearch reads."""
    if DEVICE_PATTERN.fullmatch(name):
        return None
    return f"expected auto, cpu, cuda, cuda:N or mps, got {name!r}"


def may_use_cuda(name: str) -> bool:
    """Whether a run on ``name`` may put trials on CUDA devices (``auto`` or ``cuda[:N]``)."""
    return name == "auto" or name.startswith("cuda")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA, then MPS, then the CPU; otherwise the named device, which must be available."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ArchsearchError(
            f"device {name!r} is not a device name (use auto, cpu, cuda, cuda:1 or mps)."
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ArchsearchError(f"device {name!r} was asked for, but this torch build sees no CUDA device.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ArchsearchError(f"device {name!r} was asked for, but MPS is not available here.")
    return device
