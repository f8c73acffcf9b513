"""Structured prompt templates: named parts joined in a fixed order, with a small phrase library.

A portrait prompt is easier to vary one element at a time when its parts are separate keys:
``subject``, ``styling``, ``lens``, ``lighting``, ``composition``, ``background``, ``quality``.
Each part is a string or a list of strings; a value that names a library phrase (case-insensitive,
e.g. ``lighting = "rembrandt"``) is expanded, anything else is used literally. Parts are joined
with ", " in that order; empty parts are skipped.
"""

from __future__ import annotations

from collections.abc import Iterable

PART_ORDER = ("subject", "styling", "lens", "lighting", "composition", "background", "quality")

PHRASES: dict[str, dict[str, str]] = {
    "styling": {
        "portra-400": "shot on Kodak Portra 400 film, warm natural skin tones, fine grain",
        "tri-x": "shot on Kodak Tri-X 400, black and white film, rich contrast, visible grain",
        "ektar-100": "shot on Kodak Ektar 100 film, saturated colours, very fine grain",
        "cinestill-800t": "shot on CineStill 800T, tungsten-balanced film, halation around highlights",
        "editorial": "editorial fashion photography, styled wardrobe",
    },
    "lens": {
        "35mm": "35mm lens, environmental perspective",
        "50mm": "50mm lens, natural perspective",
        "85mm": "85mm portrait lens at f/1.8, shallow depth of field, creamy bokeh",
        "135mm": "135mm telephoto lens, compressed background, shallow depth of field",
        "macro": "100mm macro lens, extreme close-up detail",
    },
    "lighting": {
        "rembrandt": "Rembrandt lighting, a triangle of light on the shadowed cheek",
        "window": "soft window light from the side",
        "golden-hour": "warm golden-hour sunlight, long soft shadows",
        "softbox": "large softbox key light, even soft shadows",
        "butterfly": "butterfly lighting from above, soft shadow under the nose",
        "rim": "rim light outlining the subject against a dark background",
    },
    "composition": {
        "headshot": "tight headshot, eyes on the upper third",
        "half-body": "half-body portrait, centered composition",
        "full-body": "full-body shot, subject centered with headroom",
    },
    "background": {
        "studio-grey": "plain mottled grey studio backdrop",
        "bokeh": "blurred city lights in the background",
    },
    "quality": {
        "photo": "high-resolution photograph, sharp focus on the eyes, natural skin texture",
    },
}


def expand_part(part: str, value: str | Iterable[str] | None) -> str:
    """Text of one template part: library phrases expanded, list items joined with ", "."""
    if value is None:
        return ""
    items = [value] if isinstance(value, str) else list(value)
    library = PHRASES.get(part, {})
    texts = []
    for item in items:
        item = item.strip()
        if item:
            texts.append(library.get(item.lower(), item))
    return ", ".join(texts)


def join_prompt(parts: dict[str, str | list[str] | None]) -> str:
    """The final prompt text: the expanded parts in ``PART_ORDER``, joined with ", "."""
    texts = [expand_part(name, parts.get(name)) for name in PART_ORDER]
    return ", ".join(text for text in texts if text)
