"""Seed-locked sweeps: seeds x one varied setting, every cell a normal PNG, plus one labelled contact sheet.

The portrait guides' method is "lock a seed, vary one element at a time". A sweep renders each
seed (rows) with each value of one config key (columns): ``sampling.guidance``, ``sampling.steps``, a
prompt part such as ``prompt.lighting``, or a LoRA's strength ``lora[0].scale``. Every cell is an
ordinary render with its own recipe (``localflux replay`` reproduces it); the contact sheet is the
cells resized into a grid with "seed N" row labels and "key=value" column labels.

When the varied key belongs to a LoRA and ``lora_options.fuse`` is ``auto``, LoRAs stay separate
adapters (unfused) so a new scale is a cheap ``set_adapters`` instead of reloading the model; the
recipes record that mode, so replays use it too.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from . import config as config_mod
from . import pipeline
from .config import Config
from .errors import ConfigError
from .io.png import png_bytes, save_png, signer_for
from .output import atomic_write_bytes, ensure_output_dir, unique_path
from .recipe import add_extension
from .render import prompt_warnings

log = logging.getLogger(__name__)

_NOT_VARIABLE = ("sampling.seed", "sampling.count", "sampling.batch_size", "output.dir")
SHEET_CHUNK = "localflux-sweep"


@dataclass
class Cell:
    row: int
    column: int
    seed: int
    value: Any
    path: Path | None
    image: Image.Image


@dataclass
class Layout:
    """Where everything sits on the contact sheet (pixels)."""

    rows: int
    columns: int
    cell_width: int
    cell_height: int
    left: int  # width of the row-label column
    top: int  # height of the column-label row
    gap: int

    @property
    def size(self) -> tuple[int, int]:
        return (self.left + self.columns * self.cell_width + (self.columns + 1) * self.gap,
                self.top + self.rows * self.cell_height + (self.rows + 1) * self.gap)

    def box(self, row: int, column: int) -> tuple[int, int, int, int]:
        x = self.left + self.gap + column * (self.cell_width + self.gap)
        y = self.top + self.gap + row * (self.cell_height + self.gap)
        return (x, y, x + self.cell_width, y + self.cell_height)


@dataclass
class Sweep:
    key: str
    values: list
    seeds: list[int]
    cells: list[Cell] = field(default_factory=list)
    sheet: Image.Image | None = None
    sheet_path: Path | None = None
    layout: Layout | None = None


# ---------------------------------------------------------------- parsing


def parse_seeds(text: str) -> list[int]:
    """``1-6``, ``1,5,9`` or ``1-3,10`` -> seeds in the order given."""
    seeds = []
    for part in str(text).split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
        if match:
            lo, hi = int(match[1]), int(match[2])
            if hi < lo:
                raise ConfigError(f"--seeds {text!r}: range {part!r} runs backwards; write it as {hi}-{lo}")
            seeds += range(lo, hi + 1)
        elif part.isdigit():
            seeds.append(int(part))
        else:
            raise ConfigError(f"--seeds {text!r}: {part!r} is not a seed or a range; use e.g. 1-6 or 1,5,9")
    if not seeds or len(seeds) > 1000:
        raise ConfigError(f"--seeds {text!r} must name between 1 and 1000 seeds")
    return seeds


def parse_vary(text: str) -> tuple[str, list]:
    """``KEY=V1,V2,...`` (each value read like ``--set``), or ``KEY=[...]`` as a TOML array (values with commas)."""
    key, sep, rest = text.partition("=")
    key, rest = key.strip(), rest.strip()
    if not sep or not key or not rest:
        raise ConfigError(f"--vary {text!r} must look like KEY=V1,V2,..., e.g. --vary sampling.guidance=2.5,3.5,4.5")
    if key in _NOT_VARIABLE:
        raise ConfigError(f"--vary {key} is not possible: rows are the seeds (--seeds) and each cell is one image")
    if rest.startswith("["):
        values = config_mod.parse_set_value(rest)
        if not isinstance(values, list):
            raise ConfigError(f"--vary {text!r}: {rest!r} is not a valid TOML array")
    else:
        values = [config_mod.parse_set_value(v.strip()) for v in rest.split(",")]
    if not values:
        raise ConfigError(f"--vary {text!r} names no values")
    return key, values


def with_value(config: Config, key: str, value: Any) -> Config:
    """``config`` with one key changed (``lora[N].field`` addresses one [[lora]] entry)."""
    return _replace(config, key, value)


def _replace(config: Config, key: str, value: Any, origin: str = "") -> Config:
    """``config_mod.replace`` whose errors name ``--vary`` (the flag the user typed), not an internal override."""
    layers = config_mod.Layers()
    layers.add_dict(config.to_dict(), origin="config")
    layers.set(key, value, origin=origin or f"--vary {key}")
    return layers.build()


# ---------------------------------------------------------------- rendering


def plan_sweep(config, seeds: list[int], key: str, values: list, *, out_dir: str | Path | None = None) -> list:
    """Every cell's plan as (row, column, seed, value, Plan), checked before anything renders."""

    config = pipeline.coerce_config(config)
    if out_dir is not None:
        config = config_mod.replace(config, **{"output.dir": str(out_dir)})
    if key.startswith("lora") and config.lora_options.fuse == "auto":
        config = config_mod.replace(config, **{"lora_options.fuse": "unfused"})  # scales change between cells
    plans = []
    for column, value in enumerate(values):
        varied = with_value(config, key, value)
        for row, seed in enumerate(seeds):
            cell_config = config_mod.replace(varied, **{"sampling.seed": seed, "sampling.count": 1,
                                                        "sampling.batch_size": 1})
            plans.append((row, column, seed, value, pipeline.plan(cell_config)))
    return plans


def run_sweep(config, seeds: list[int], key: str, values: list, *, out_dir: str | Path | None = None,
              cell_size: int = 256, save: bool = True, progress: bool = True, on_cell=None) -> Sweep:
    """Render ``seeds`` x ``values`` of ``key``; save each cell (with recipe) and the contact sheet.

    ``on_cell(cell)`` is called as each cell is done (saved), so a caller can report it at once.
    """

    plans = plan_sweep(config, seeds, key, values, out_dir=out_dir)
    folder = None
    if save:

        folder = ensure_output_dir(plans[0][4].config.output.dir)
    sweep = Sweep(key, list(values), list(seeds))
    announced = set()
    for row, column, seed, value, plan in plans:
        model = pipeline.load(plan)
        _announce(model, announced)
        warnings = prompt_warnings(plan.family, model.pipe, plan.request)
        result = pipeline.render_batch(plan, model, [seed], warnings, progress=False)[0]
        add_extension(result.recipe, "sweep", {"key": key, "value": value, "row": row, "column": column})
        path = None
        if folder is not None:

            path = save_png(result.image, unique_path(folder, f"r{row + 1:02d}-c{column + 1:02d}-s{seed}", ".png"),
                            result.recipe, sidecar=plan.config.output.sidecar,
                            credentials=signer_for(plan.config.output))
        sweep.cells.append(Cell(row, column, seed, value, path, result.image))
        if on_cell is not None:
            on_cell(sweep.cells[-1])
        if progress:
            log.info("sweep cell %d/%d (seed %d, %s=%s)", len(sweep.cells), len(plans), seed, key, value)
    labels = [v if isinstance(v, str) else json.dumps(v) for v in values]
    sweep.sheet, sweep.layout = contact_sheet(sweep.cells, [f"seed {s}" for s in seeds], labels, title=key,
                                              cell_size=cell_size)
    if folder is not None:
        sweep.sheet_path = _save_sheet(sweep, folder)
    return sweep


def _announce(model, announced: set) -> None:
    state = model.lora_state
    for lora in state.loras if state is not None else []:
        if lora.path not in announced:
            announced.add(lora.path)
            log.info("LoRA %s (%s, %s): %s", lora.name, lora.format, state.mode, lora.summary())


# ---------------------------------------------------------------- contact sheet


def contact_sheet(cells: list[Cell], row_labels: list[str], column_labels: list[str], *, title: str = "",
                  cell_size: int = 256, gap: int = 4):
    """A grid of the cells, each resized (Lanczos) to fit ``cell_size``: ``title`` (the varied key) on top,
    one value label per column under it, one label per row on the left."""

    first = cells[0].image
    scale = cell_size / max(first.width, first.height)
    cell_w, cell_h = max(1, round(first.width * scale)), max(1, round(first.height * scale))
    font = _font()
    draw_probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_h = max(_text_size(draw_probe, t, font)[1] for t in row_labels + column_labels)
    left = max(_text_size(draw_probe, t, font)[0] for t in row_labels) + 2 * gap
    title_h = text_h + gap if title else 0
    layout = Layout(len(row_labels), len(column_labels), cell_w, cell_h, left, title_h + text_h + 2 * gap, gap)
    sheet = Image.new("RGB", layout.size, "white")
    draw = ImageDraw.Draw(sheet)
    for cell in cells:
        thumb = cell.image.convert("RGB").resize((cell_w, cell_h), Image.LANCZOS)
        sheet.paste(thumb, layout.box(cell.row, cell.column)[:2])
    if title:
        draw.text((left + gap, gap), _fit(draw, title, font, layout.size[0] - left - 2 * gap), fill="black", font=font)
    for column, label in enumerate(column_labels):
        x0, _, x1, _ = layout.box(0, column)
        draw.text((x0, gap + title_h), _fit(draw, label, font, x1 - x0), fill="black", font=font)
    for row, label in enumerate(row_labels):
        _, y0, _, y1 = layout.box(row, 0)
        draw.text((gap, (y0 + y1 - text_h) // 2), label, fill="black", font=font)
    return sheet, layout


def cell_thumbnail(image, layout: Layout):
    """What a cell looks like on the sheet (for checks): the image resized like ``contact_sheet`` does."""

    return image.convert("RGB").resize((layout.cell_width, layout.cell_height), Image.LANCZOS)


def _save_sheet(sweep: Sweep, folder: Path) -> Path:

    index = {"key": sweep.key, "values": sweep.values, "seeds": sweep.seeds,
             "layout": dataclasses.asdict(sweep.layout),
             "cells": [{"row": c.row, "column": c.column, "seed": c.seed, "value": c.value,
                        "file": c.path.name if c.path else None} for c in sweep.cells]}
    path = unique_path(folder, "contact-sheet", ".png")
    atomic_write_bytes(path, png_bytes(sweep.sheet, None, extra_text={SHEET_CHUNK: json.dumps(index, sort_keys=True)}))
    return path


def _font():

    try:
        return ImageFont.load_default(size=14)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def _text_size(draw, text: str, font) -> tuple[int, int]:
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    return x1 - x0 + 1, y1 + 1


def _fit(draw, text: str, font, width: int) -> str:
    """``text`` shortened with an ellipsis until it fits ``width`` pixels."""
    if _text_size(draw, text, font)[0] <= width:
        return text
    while len(text) > 1 and _text_size(draw, text + "…", font)[0] > width:
        text = text[:-1]
    return text + "…"
