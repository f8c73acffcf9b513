"""Where a model comes from (``Source``): a plain record that families and the loader share.

It lives below both so a family can name a source without importing the loader.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Source:
    """Where a model comes from, resolved to local paths where possible."""

    kind: str  # "tiny" (a built-in miniature) | "folder" | "hub" | "single_file"
    text: str  # what the user wrote
    path: Path | None = None  # folder or file on disk (hub: the cached snapshot)
    base: "Source | None" = None  # single_file: the source of the other components
