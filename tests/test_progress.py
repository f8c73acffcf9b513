"""One progress-bar factory (localflux/progress.py) with the house's conventions."""

import io
import re
from pathlib import Path

import localflux
from localflux.progress import progress_bar


def test_only_the_factory_makes_bars():
    root = Path(localflux.__file__).parent
    makers = sorted(str(p.relative_to(root)) for p in root.rglob("*.py") if re.search(r"\btqdm\(", p.read_text()))
    assert makers == ["progress.py"]


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_stderr_leave_and_disable(monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    with progress_bar(3, "images", "img") as bar:
        assert not bar.disable and not bar.leave
        bar.update(3)
    assert "images" in terminal.getvalue()
    assert progress_bar(3, "images", "img", leave=True).leave
    assert progress_bar(3, "images", "img", enabled=False).disable  # --no-progress
    monkeypatch.setattr("sys.stderr", io.StringIO())  # a pipe or a log file: no bar
    with progress_bar(3, "images", "img") as bar:
        assert bar.disable
        bar.update(1)
