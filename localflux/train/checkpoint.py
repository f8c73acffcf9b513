"""Training checkpoints: complete or absent, the last K kept.

A checkpoint is a folder ``checkpoints/step-000040/`` holding everything the next step depends on:
the LoRA parameters (``lora.safetensors``, float32, training names), the optimizer and LR
scheduler states (``optimizer.pt``, ``scheduler.pt``, read back with ``weights_only=True``) and
``state.json`` (step, data-order position, the training generator's state, the losses so far,
the config and the hashes it belongs to).

It is written into a hidden temporary folder, every file fsync'd, then renamed into place: a
rename is atomic, so a run killed at any moment leaves either the complete checkpoint or a
``.step-*`` leftover that ``remove_incomplete`` deletes and ``latest_checkpoint`` never picks.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load

from ..errors import TrainingError
from ..output import _fsync_dir, ensure_output_dir, plain_mode
from ..weightfile import safetensors_bytes

FOLDER = "checkpoints"
_NAME = re.compile(r"^step-(\d{6,})$")


@dataclass
class Checkpoint:
    path: Path
    step: int
    lora: dict  # name -> float32 tensor
    optimizer: dict
    scheduler: dict
    state: dict


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / FOLDER


def save_checkpoint(run_dir: Path, step: int, *, lora: dict, optimizer: dict, scheduler: dict, state: dict,
                    keep: int) -> Path:
    """Write checkpoint ``step`` atomically, then delete all but the newest ``keep``."""


    root = ensure_output_dir(checkpoint_dir(run_dir))
    final = root / f"step-{step:06d}"
    if final.exists():
        raise TrainingError(f"checkpoint {str(final)!r} already exists; this run folder holds another run, "
                            "choose another output.dir")
    tmp = Path(tempfile.mkdtemp(prefix=f".step-{step:06d}.", dir=root))
    try:
        os.chmod(tmp, plain_mode(directory=True))  # mkdtemp makes 0700; a checkpoint folder is an ordinary one
        _write(tmp / "lora.safetensors",
               safetensors_bytes({k: v.detach().cpu().contiguous() for k, v in lora.items()}))
        for name, obj in (("optimizer.pt", optimizer), ("scheduler.pt", scheduler)):
            buffer = io.BytesIO()
            torch.save(obj, buffer)
            _write(tmp / name, buffer.getvalue())
        _write(tmp / "state.json", (json.dumps(state, sort_keys=True, indent=1) + "\n").encode())
        _fsync_dir(tmp)
        os.rename(tmp, final)
        _fsync_dir(root)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise TrainingError(f"cannot write checkpoint {str(final)!r}: {exc.strerror}; free disk space") from exc
    for old in complete_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoint folders, oldest first."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name)) and (p / "state.json").is_file()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = complete_checkpoints(run_dir)
    return found[-1] if found else None


def remove_incomplete(run_dir: Path) -> None:
    """Delete leftovers of a checkpoint write that was killed before its rename."""
    root = checkpoint_dir(run_dir)
    if root.is_dir():
        for path in root.iterdir():
            if path.name.startswith(".step-") and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)


def load_checkpoint(path: Path) -> Checkpoint:

    try:
        state = json.loads((path / "state.json").read_text())
        lora = load((path / "lora.safetensors").read_bytes())
        optimizer = torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu")
        scheduler = torch.load(path / "scheduler.pt", weights_only=True, map_location="cpu")
    except Exception as exc:  # json, safetensors and torch raise many types for damaged files
        raise TrainingError(f"checkpoint {str(path)!r} is damaged ({exc.__class__.__name__}); "
                            "delete that folder to resume from the one before it") from None
    return Checkpoint(path, int(state["step"]), lora, optimizer, scheduler, state)


def encode_rng(state) -> str:
    return base64.b64encode(state.numpy().tobytes()).decode("ascii")


def decode_rng(text: str):

    return torch.from_numpy(np.frombuffer(base64.b64decode(text), dtype=np.uint8).copy())


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
