"""The one progress-bar factory: every localflux bar looks and behaves the same.

Bars go to stderr (stdout carries the paths a command writes), hide themselves when stderr is not
a terminal (logs, pipes, tests) or when the caller asks (``--no-progress``), and vanish when done
unless ``leave`` keeps the finished bar as a summary line.
"""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress_bar(total: int, desc: str, unit: str, *, enabled: bool = True, leave: bool = False, **options):
    """A tqdm bar over ``total`` ``unit``s; a silent one (same methods) when disabled or stderr is no terminal."""
    # disable=None: tqdm hides itself when its file is not a terminal
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=leave, disable=None if enabled else True,
                **options)
