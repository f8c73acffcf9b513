"""The one reader of weight-file headers and the one writer of ``.safetensors`` files.

Model detection, single-file shapes, LoRA inspection and upscaler loading all start from a file's
header; reading it in one place gives one error for a truncated or foreign file.

Every ``.safetensors`` file localflux writes goes through ``safetensors_bytes`` / ``save_safetensors``:
safetensors keeps the metadata in a Rust HashMap, so its own ``save`` writes the metadata keys in a
different order each time (same tensors, other bytes, other sha256). Recipes record the sha256 of
upscalers and LoRAs, so equal inputs must give byte-identical files.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from safetensors import safe_open

from . import optional
from .errors import ModelSourceError
from .output import atomic_write_bytes


def safetensors_keys(path: Path) -> list[str]:
    """The tensor names of a ``.safetensors`` file (header only)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return list(handle.keys())
    except Exception as exc:  # safetensors raises several types for truncated/corrupt headers
        raise ModelSourceError(f"{str(path)!r} is not a readable .safetensors file ({exc}); re-download it") from None


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape (rows first, as in PyTorch), from a .safetensors or .gguf file's header only."""
    if Path(path).suffix.lower() == ".gguf":
        optional.require("gguf", f"reading the GGUF file {str(path)!r}", ModelSourceError)
        from gguf import GGUFReader  # optional package, after optional.require

        # GGUF lists dimensions innermost first
        return {t.name: tuple(int(d) for d in reversed(list(t.shape))) for t in GGUFReader(str(path)).tensors}
    with safe_open(str(path), framework="pt") as handle:
        return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}


def safetensors_bytes(tensors: dict, metadata: dict[str, str] | None = None) -> bytes:
    """The ``.safetensors`` bytes of ``tensors`` (all torch tensors or all numpy arrays), the same for equal inputs.

    safetensors' own layout (tensors ordered by dtype alignment then name), with the ``__metadata__`` keys sorted.
    """
    # --help path (commands/doctor -> families -> weightfile): numpy and torch load only when a file is written
    if tensors and all(type(v).__module__ == "numpy" for v in tensors.values()):
        from safetensors.numpy import save
    else:
        from safetensors.torch import save
    return _sorted_metadata(save(tensors, metadata=dict(metadata) if metadata else None))


def save_safetensors(tensors: dict, path: Path, metadata: dict[str, str] | None = None, *,
                     overwrite: bool = False) -> Path:
    """Write ``safetensors_bytes(tensors, metadata)`` to ``path`` atomically; never replaces a file unless asked."""
    return atomic_write_bytes(Path(path), safetensors_bytes(tensors, metadata), overwrite=overwrite)


def _sorted_metadata(data: bytes) -> bytes:
    """Rewrite a safetensors header with its ``__metadata__`` keys sorted (tensor entries and data untouched)."""
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    metadata = header.pop("__metadata__", None)
    if not metadata:
        return data
    ordered = {"__metadata__": dict(sorted(metadata.items())), **header}
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # safetensors pads the header to 8 bytes with spaces
    return struct.pack("<Q", len(text)) + text + data[8 + length:]
