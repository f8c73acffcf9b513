"""Writing files so that nothing is ever overwritten or half-written.

Names that are taken get a numbered variant (``0001-s42.png`` -> ``0001-s42-2.png``), and every
write goes to a temporary file in the same folder, is fsync'd, then renamed into place, so a
crash leaves either the old state or the complete new file.
"""

from __future__ import annotations

import errno
import os
import sys
import tempfile
from pathlib import Path

from . import faults
from .errors import OutputError


def user_data_dir() -> Path:
    """localflux's folder in the user's data folder (installed upscalers, the local C2PA signing key)."""
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "localflux"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "localflux"
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "localflux"


def check_output_dir(folder: str | os.PathLike) -> Path:
    """Refuse early (before minutes of model loading) a folder that can never be created."""
    path = Path(folder)
    for parent in [path, *path.parents]:
        if parent.exists() and not parent.is_dir():
            raise OutputError(f"output folder {str(path)!r} cannot be created because {str(parent)!r} is a file; choose another --out")
    return path


def ensure_output_dir(folder: str | os.PathLike) -> Path:
    """Create ``folder`` (and parents) or explain in one sentence why it cannot be used."""
    path = check_output_dir(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {str(path)!r}: {exc.strerror}; choose another --out") from exc
    return path


def unique_path(folder: Path, stem: str, suffix: str, reserved: set[Path] | None = None) -> Path:
    """First of ``stem+suffix``, ``stem-2+suffix``, ... that exists neither on disk nor in ``reserved``."""
    reserved = reserved or set()
    candidate = folder / f"{stem}{suffix}"
    n = 2
    while candidate.exists() or candidate in reserved:
        candidate = folder / f"{stem}-{n}{suffix}"
        n += 1
    return candidate


def current_umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask can only set it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def plain_mode(directory: bool = False) -> int:
    """The mode a plain ``open()`` (or ``mkdir``) gives under the current umask: 0644 / 0755 under 022."""
    return (0o777 if directory else 0o666) & ~current_umask()


def atomic_write_bytes(path: Path, data: bytes, *, overwrite: bool = False, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` via temp file + fsync + rename; refuses to replace a file unless asked.

    The file gets ``mode``, by default what a plain ``open()`` would give (the umask is honoured:
    mkstemp alone would make every output 0600, unreadable to a web server or a shared folder's users).
    """
    path = Path(path)
    folder = path.parent
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), plain_mode() if mode is None else mode)
            faults.disk_full(path)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        faults.point("after_temp_write")
        if overwrite:
            os.replace(tmp_name, path)
        else:
            # link() fails if the target exists, so a file that appeared meanwhile is never clobbered.
            os.link(tmp_name, path)
            faults.point("after_rename")
            os.unlink(tmp_name)
    except FileExistsError as exc:
        _remove_quietly(tmp_name)
        raise OutputError(f"{str(path)!r} already exists; localflux never overwrites files, choose another --out") from exc
    except OSError as exc:
        _remove_quietly(tmp_name)
        if exc.errno == errno.ENOSPC:
            raise OutputError(f"disk full while writing {str(path)!r}; free some space and run again (nothing was written)") from exc
        raise OutputError(f"cannot write {str(path)!r}: {exc.strerror}") from exc
    except BaseException:  # Ctrl-C (or any other stop) mid-write leaves no hidden temp file behind
        _remove_quietly(tmp_name)
        raise
    _fsync_dir(folder)
    return path


def temp_leftovers(folder: Path) -> list[Path]:
    """Temporary files that an interrupted ``atomic_write_bytes`` left in ``folder`` (its naming below)."""
    return sorted(p for p in Path(folder).glob(".*.tmp") if p.is_file())


def _remove_quietly(name: str) -> None:
    try:
        os.unlink(name)
    except OSError:
        pass


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
