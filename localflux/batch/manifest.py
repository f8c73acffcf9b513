"""The job manifest: what happened to each item, as append-only, fsync'd JSON lines.

Why JSON lines and not SQLite: under ``accelerate launch`` every process appends to its own
shard (``manifest-rank<N>.jsonl``), so each file has exactly one writer and no update can be
lost without any cross-process locking; committing a record is one ``write`` of one line plus
``fsync``; a ``kill -9`` can at worst leave a torn last line, which is recognisable (no newline)
and dropped. SQLite would add a second locking protocol beside the folder lock, and its locking
is unreliable on the network filesystems that render folders often live on. The files can be
read with any text tool.

Records are ``{"item", "index", "state": "done"|"failed", "file", "sha256", "reason",
"low_memory", "time"}``; the latest record of an item (by ``time``) is its state.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .. import faults
from ..errors import OutputError

log = logging.getLogger(__name__)

SHARD_GLOB = "manifest-rank*.jsonl"


@dataclass(frozen=True)
class Record:
    item: str
    index: int
    state: str  # "done" | "failed"
    time: float
    file: str | None = None  # name inside the job folder
    sha256: str | None = None
    reason: str | None = None
    low_memory: str | None = None  # why a lower-memory plan was used, when it was


def shard_path(folder: Path, rank: int) -> Path:
    return folder / f"manifest-rank{rank}.jsonl"


def read_states(folder: Path) -> dict[str, Record]:
    """The latest record of every item, over all shards."""
    latest: dict[str, Record] = {}
    for path in sorted(folder.glob(SHARD_GLOB)):
        for record in _read_shard(path):
            current = latest.get(record.item)
            if current is None or record.time >= current.time:
                latest[record.item] = record
    return latest


def _read_shard(path: Path) -> list[Record]:
    records = []
    with open(path, "rb") as handle:
        lines = handle.read().split(b"\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            records.append(Record(**data))
        except (ValueError, TypeError):
            # A torn last line (killed mid-append) or a hand-edited one: the item is then found again
            # through its file's recipe, or rendered again; nothing finished is lost.
            if number < len(lines):
                log.warning("%s line %d is not a manifest record; ignored", path, number)
    return records


class ManifestWriter:
    """Appends records to this process's shard; each append is durable when it returns."""

    def __init__(self, folder: Path, rank: int) -> None:
        self.path = shard_path(folder, rank)
        try:
            _drop_torn_tail(self.path)
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)  # the umask applies
        except OSError as exc:
            raise OutputError(f"cannot write the manifest {str(self.path)!r}: {exc.strerror}") from None

    def append(self, record: Record) -> None:
        data = {k: v for k, v in record.__dict__.items() if v is not None}
        line = (json.dumps(data, sort_keys=True, ensure_ascii=True) + "\n").encode()
        faults.point("before_manifest_append")
        try:
            faults.disk_full(self.path)
            written = os.write(self.fd, line)  # O_APPEND: one write, one whole line
            if written != len(line):
                raise OSError(errno.ENOSPC, "short write")
            os.fsync(self.fd)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise OutputError(f"disk full while writing the manifest {str(self.path)!r}; free some space "
                                  "and run the batch again (finished images are kept)") from None
            raise OutputError(f"cannot write the manifest {str(self.path)!r}: {exc.strerror}") from None
        faults.point("after_manifest_append")

    def close(self) -> None:
        os.close(self.fd)


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line that a kill left without its newline (only this process writes this shard)."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)
            handle.flush()
            os.fsync(handle.fileno())


def record(item, state: str, **fields) -> Record:
    return Record(item=item.item_id, index=item.index, state=state, time=time.time(), **fields)
