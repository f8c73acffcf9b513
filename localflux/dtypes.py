"""The dtype names every command accepts, without torch (the argument parsers use them for ``--help``).

``auto``, ``bfloat16``, ``float32``, ``float16``; ``bf16``, ``fp32`` and ``fp16`` are read as the same.
What each name means on a device is :mod:`localflux.device`'s policy.
"""

from __future__ import annotations

from .errors import DeviceError

DTYPES = ("auto", "bfloat16", "float32", "float16")
_ALIASES = {"bf16": "bfloat16", "fp32": "float32", "fp16": "float16"}


def dtype_option(text: str) -> str:
    """argparse ``type`` of every ``--dtype``: the short names read as the house names (then ``choices=DTYPES``)."""
    return _ALIASES.get(text, text)


def dtype_name(text: str | None) -> str:
    """The house name of a dtype (``fp16`` -> ``float16``; None -> ``auto``); an unknown name is a ``DeviceError``."""
    name = _ALIASES.get(text, text) if text is not None else "auto"
    if name not in DTYPES:
        raise DeviceError(f"unknown dtype {text!r}; use {', '.join(DTYPES)}")
    return name
