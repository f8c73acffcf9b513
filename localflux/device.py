"""Device and precision policy for every command: CUDA > MPS > CPU; float32 on the CPU.

One set of dtype names everywhere (:mod:`localflux.dtypes`: ``auto``, ``bfloat16``, ``float32``, ``float16``; ``bf16``,
``fp32`` and ``fp16`` are read as the same). What ``auto`` picks on a GPU depends on the work:
- generation: bf16, never float16 (FLUX's T5 encoder overflows in fp16: inf/NaN activations),
  so GPUs without bf16 fall back to float32;
- upscaling: float16 (Real-ESRGAN is made for it, and every GPU runs it); on the CPU an upscaler
  runs in float32 only (half precision there is slow and inexact).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass

import torch

from .dtypes import DTYPES, dtype_name, dtype_option
from .errors import DeviceError

__all__ = ["DTYPES", "GENERATION", "UPSCALING", "Placement", "available_ram", "bf16_supported", "dtype_name",
           "dtype_option", "memory_summary", "pick_device", "pick_dtype", "resolve_placement"]

log = logging.getLogger(__name__)

GENERATION, UPSCALING = "generation", "upscaling"
_AUTO_ON_GPU = {GENERATION: "bfloat16", UPSCALING: "float16"}


@dataclass(frozen=True)
class Placement:
    device: str  # "cpu", "cuda", "cuda:1", "mps"
    dtype: str  # "bfloat16" | "float32" | "float16"

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)


def pick_device(requested: str = "auto") -> str:
    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if _mps_available():
            return "mps"
        return "cpu"
    if requested == "cpu":
        return "cpu"
    if re.fullmatch(r"cuda(:\d+)?", requested):
        if not torch.cuda.is_available():
            raise DeviceError(f"device {requested!r} was asked for but no CUDA GPU is visible to PyTorch; use --device cpu or auto")
        index = int(requested.split(":")[1]) if ":" in requested else 0
        if index >= torch.cuda.device_count():
            raise DeviceError(f"device {requested!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return requested
    if requested == "mps":
        if not _mps_available():
            raise DeviceError("device 'mps' was asked for but Apple Metal (MPS) is not available; use --device cpu or auto")
        return "mps"
    raise DeviceError(f"device {requested!r} is not known; use auto, cpu, cuda, cuda:N or mps")


def bf16_supported(device: str) -> bool:
    if device.startswith("cuda"):
        return torch.cuda.is_bf16_supported()
    if device == "mps":
        try:  # bf16 on MPS needs macOS 14+; probing is the reliable test
            (torch.ones(2, device="mps", dtype=torch.bfloat16) * 2).cpu()
            return True
        except (RuntimeError, TypeError):
            return False
    return True


def pick_dtype(device: str, requested: str | None = "auto", *, work: str = GENERATION) -> str:
    """The dtype to run ``work`` (``GENERATION`` or ``UPSCALING``) in on ``device`` (the module docstring's rules)."""
    requested = dtype_name(requested)
    cpu = device == "cpu"
    if requested == "auto":
        if cpu:
            return "float32"
        auto = _AUTO_ON_GPU[work]
        return auto if auto != "bfloat16" or bf16_supported(device) else "float32"
    if work == UPSCALING and cpu and requested != "float32":
        raise DeviceError(f"dtype {requested} is not supported on CPU for upscaling; use float32")
    if requested == "bfloat16" and not cpu and not bf16_supported(device):
        hint = "--set model.dtype=float32" if work == GENERATION else "--dtype float16 or float32"
        raise DeviceError(f"dtype bfloat16 is not supported on {device}; use {hint}")
    if requested == "float16" and work == GENERATION:
        log.warning("float16 can overflow in FLUX's T5 text encoder (black or noisy images); bfloat16 is safer")
    return requested


def resolve_placement(device: str = "auto", dtype: str = "auto") -> Placement:
    chosen = pick_device(device)
    return Placement(chosen, pick_dtype(chosen, dtype))


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def available_ram() -> int | None:
    """Bytes of RAM available to a new allocation: MemAvailable (Linux), else free pages; None if unknown."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not on every platform
        return None


def memory_summary() -> list[tuple[str, str]]:
    """Human-readable facts for ``localflux doctor``."""
    rows = [("torch", torch.__version__), ("cuda available", str(torch.cuda.is_available()))]
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            free, total = torch.cuda.mem_get_info(index)
            rows.append((f"cuda:{index}", f"{props.name}, {free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB, "
                         f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}"))
    rows.append(("mps available", str(_mps_available())))
    free = available_ram()
    if free is not None:
        rows.append(("system memory", f"{free / 2**30:.1f} GiB available"))
    return rows
