"""sha256 of weight files, computed once per file version.

Hashing a 24 GB checkpoint takes minutes, so digests are cached by (absolute path, size,
mtime_ns); any change of size or modification time means the file is hashed again. The cache
is a SQLite database (``$LOCALFLUX_CACHE`` or ``~/.cache/localflux``): SQLite's locking makes
it safe when several localflux processes hash at once, which a JSON file would not be.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import struct
from pathlib import Path

import torch

from .progress import progress_bar

CHUNK = 8 * 1024 * 1024


def cache_dir() -> Path:
    env = os.environ.get("LOCALFLUX_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "localflux"


def _connect() -> sqlite3.Connection | None:
    try:
        folder = cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(folder / "hashes.sqlite", timeout=30)
        db.execute("CREATE TABLE IF NOT EXISTS hashes (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, sha256 TEXT)")
        return db
    except (OSError, sqlite3.Error):
        return None  # an unwritable cache only costs time, never correctness


def sha256_file(path: str | os.PathLike, *, progress: bool = True) -> str:
    """Hex sha256 of ``path``, from the cache when the file's size and mtime are unchanged."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    db = _connect()
    if db is not None:
        try:
            row = db.execute("SELECT sha256 FROM hashes WHERE path=? AND size=? AND mtime_ns=?", key).fetchone()
            if row:
                return row[0]
        except sqlite3.Error:
            pass
    digest = _hash_bytes(path, stat.st_size, progress)
    if db is not None:
        try:
            with db:
                db.execute("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?)", (*key, digest))
        except sqlite3.Error:
            pass
        db.close()
    return digest


def _hash_bytes(path: Path, size: int, progress: bool) -> str:
    h = hashlib.sha256()
    bar = None
    if progress and size > 256 * 1024 * 1024:
        bar = progress_bar(size, f"sha256 {path.name}", "B", unit_scale=True)
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            h.update(chunk)
            if bar is not None:
                bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return h.hexdigest()


def autov3(path: str | os.PathLike) -> str | None:
    """Civitai's AutoV3 hash of a ``.safetensors`` file: the first 12 hex of the sha256 of the bytes
    after the 8-byte header length and the JSON header (the tensor data only), or None when the file
    is not laid out as safetensors."""
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) != 8:
            return None
        (length,) = struct.unpack("<Q", head)
        if length > os.fstat(handle.fileno()).st_size - 8:
            return None
        handle.seek(8 + length)
        h = hashlib.sha256()
        while chunk := handle.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()[:12]


def sha256_state_dict(state_dict) -> str:
    """Fingerprint of in-memory weights (the built-in tiny model has no files)."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(str(tensor.dtype).encode())
        h.update(tensor.view(-1).view(dtype=torch.uint8).numpy().tobytes())
    return h.hexdigest()
