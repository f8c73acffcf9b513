"""Fault injection for the crash-safety and bad-input tests, driven by environment variables.

All of these are unset in normal use, and then every function here does nothing. They exist
because the failures they stand for (a power cut between two syscalls, a GPU running out of
memory at image 137, a full disk) cannot be produced on demand any other way, and the code
paths that survive them must run in tests, not only in production.

- ``LOCALFLUX_TEST_KILL_AT="point:n[,point:n...]"``: the process SIGKILLs itself the n-th time
  it reaches ``point`` (``after_temp_write``, ``after_rename``, ``before_manifest_append``,
  ``after_manifest_append``).
- ``LOCALFLUX_TEST_OOM_AT="3,7"``: the first render attempt of batch items 3 and 7 raises
  ``torch.OutOfMemoryError``; ``"3:always"`` makes the low-memory retry fail too.
- ``LOCALFLUX_TEST_NAN_AT="5"``: the VAE output of batch item 5 is replaced by NaN.
- ``LOCALFLUX_TEST_DISK_FULL=1``: every atomic write and manifest append fails with ENOSPC.
"""

from __future__ import annotations

import errno
import os
import signal

KILL_ENV = "LOCALFLUX_TEST_KILL_AT"
OOM_ENV = "LOCALFLUX_TEST_OOM_AT"
NAN_ENV = "LOCALFLUX_TEST_NAN_AT"
DISK_FULL_ENV = "LOCALFLUX_TEST_DISK_FULL"

KILL_POINTS = ("after_temp_write", "after_rename", "before_manifest_append", "after_manifest_append")

_hits: dict[str, int] = {}


def point(name: str) -> None:
    """A named instant where a crash must be survivable; dies here when the test asks for it."""
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return
    _hits[name] = _hits.get(name, 0) + 1
    for entry in spec.split(","):
        wanted, _, count = entry.strip().partition(":")
        if wanted == name and _hits[name] == int(count or 1):
            os.kill(os.getpid(), signal.SIGKILL)


def disk_full(path) -> None:
    """Raise the OSError a full disk gives, when the test asks for it."""
    if os.environ.get(DISK_FULL_ENV):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def _indexes(env: str) -> dict[int, bool]:
    """{item index: applies to retries too} from "3,7:always"."""
    result = {}
    for entry in (os.environ.get(env) or "").split(","):
        if entry.strip():
            index, _, mode = entry.strip().partition(":")
            result[int(index)] = mode == "always"
    return result


def out_of_memory(index: int, attempt: int) -> None:
    """Raise ``torch.OutOfMemoryError`` for batch item ``index`` when the test asks for it."""
    wanted = _indexes(OOM_ENV)
    if index in wanted and (attempt == 0 or wanted[index]):
        import torch  # --help path: commands/doctor -> families -> weightfile -> output -> faults must not load torch

        raise torch.OutOfMemoryError(f"injected out of memory at batch item {index}")


def nan_output(index: int) -> bool:
    return index in _indexes(NAN_ENV)
