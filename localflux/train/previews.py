"""Preview renders during training, through the same code as ``localflux generate``.

Each preview turns a sample prompt into an ordinary render config (the run's ``[model]``, the
model's preset steps/guidance unless ``[samples]`` says otherwise) and renders it with
``pipeline.plan`` + ``pipeline.render_batch``: same scheduler, same sigmas, same dtype, one CPU
generator per seed. The LoRA is applied the way a user's render applies the finished file: the
adapter is serialised exactly as the final ``.safetensors`` (same dtype, same metadata), kept as
``samples/step-NNNNNN/lora.safetensors`` and applied by the LoRA stage (unfused) as a separate
adapter while the training adapter is switched off. That is how a preview cannot look better than
the real render (ai-toolkit #309), and how its recipe names a LoRA file that ``replay`` finds.

Only difference left: with ``memory.fp8_base`` the previews run on the fp8-stored base weights the
trainer holds, while a normal render loads them in ``model.dtype``; their recipe says so
(``not_replayable``) and ``replay`` refuses them in one line.

Images go to ``samples/step-NNNNNN/pNN-sSEED.png`` with their recipe (plus a ``training_preview``
record), and ``samples/contact-sheet.png`` is redrawn after each round: one row per step.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import shutil
import warnings
from pathlib import Path

from PIL import Image, ImageDraw

from .. import pipeline
from ..config import config_from_dict
from ..io.png import png_bytes, save_png
from ..lora.state import apply_loras, lora_request
from ..output import atomic_write_bytes, ensure_output_dir
from ..recipe import add_extension
from .config import TrainConfig, fill_trigger

log = logging.getLogger(__name__)

FOLDER = "samples"
SHEET = "contact-sheet.png"
LORA_FILE = "lora.safetensors"  # each preview step keeps the adapter it rendered with: its previews replay
SHEET_CELL = 256  # cells are shrunk to at most this many pixels a side


def preview_size(config: TrainConfig) -> tuple[int, int]:
    first = config.dataset.resolutions[0]
    return config.samples.width or first, config.samples.height or first


def render_config(config: TrainConfig, prompt: str, seed: int, lora: Path | None = None):
    """The render config a user would write to render ``prompt`` with this run's model (and ``lora``, unfused)."""
    width, height = preview_size(config)
    sampling = {"seed": seed, "count": 1}
    if config.samples.steps is not None:
        sampling["steps"] = config.samples.steps
    if config.samples.guidance is not None:
        sampling["guidance"] = config.samples.guidance
    data = {
        "model": {k: v for k, v in dataclasses.asdict(config.model).items() if v is not None},
        "sampling": sampling,
        "size": {"width": width, "height": height},
        "prompt": {"subject": fill_trigger(prompt, config.dataset.trigger)},
        "output": {"sidecar": False},
    }
    if lora is not None:
        data["lora"] = [{"path": str(lora), "scale": 1.0}]
        data["lora_options"] = {"fuse": "unfused"}  # as the preview ran: an adapter beside the training one
    return config_from_dict(data, origin="samples")


def render_previews(config: TrainConfig, loaded, lora_bytes: bytes, step: int, run_dir: Path, device: str) -> list[Path]:
    """Render every (prompt, seed) of ``[samples]`` with the LoRA in ``lora_bytes``; returns the PNG paths.

    The LoRA is kept as ``samples/step-NNNNNN/lora.safetensors`` and applied by the LoRA stage like any
    ``[[lora]]`` entry, so each preview's recipe names it and ``localflux replay`` renders it again.
    """
    root = ensure_output_dir(Path(run_dir) / FOLDER)
    folder = ensure_output_dir(root / f"step-{step:06d}")
    lora_file = atomic_write_bytes(folder / LORA_FILE, lora_bytes, overwrite=True).resolve()
    record = {"step": step, "lora_sha256": hashlib.sha256(lora_bytes).hexdigest(), "run": str(run_dir),
              "trigger": config.dataset.trigger}
    if config.memory.fp8_base:
        record["not_replayable"] = ("it was rendered on the fp8-stored base weights of a memory.fp8_base training "
                                    "run, which a render does not load")
    # the recipe names the device the transformer renders on (the model was loaded on the CPU)
    model = dataclasses.replace(loaded, placement=dataclasses.replace(loaded.placement, device=device))
    moved = _helpers_to(model.pipe, device)
    try:
        paths = _render_all(config, model, lora_file, folder, record)
    finally:
        _remove_preview_lora(model)
        if moved:
            _helpers_to(model.pipe, "cpu")
    write_contact_sheet(root)
    return paths


def _render_all(config: TrainConfig, model, lora_file: Path, folder: Path, record: dict) -> list[Path]:

    paths = []
    for p_index, prompt in enumerate(config.samples.prompts):
        for seed in config.samples.seeds:
            plan = pipeline.plan(render_config(config, prompt, seed, lora_file))
            if model.lora_state is None:
                with warnings.catch_warnings():  # peft warns that a second adapter joins the training one: intended
                    warnings.simplefilter("ignore", UserWarning)
                    apply_loras(model, lora_request(plan.config.lora, plan.config.lora_options.fuse))
            (result,) = pipeline.render_batch(plan, model, [seed], warnings=[], progress=False)
            add_extension(result.recipe, "training_preview", dict(record))
            paths.append(save_png(result.image, folder / f"p{p_index + 1:02d}-s{seed}.png", result.recipe,
                                  sidecar=False))
    return paths


def _remove_preview_lora(model) -> None:
    """Delete the preview adapter only (``unload_lora_weights`` would take the training adapter too)."""
    transformer = model.pipe.transformer
    state, model.lora_state = model.lora_state, None
    adapters = [lora.adapter for lora in state.loras] if state is not None else []
    present = [name for name in adapters if name in getattr(transformer, "peft_config", {})]
    if present:
        with warnings.catch_warnings():  # "active adapter deleted, default active again": intended
            warnings.simplefilter("ignore", UserWarning)
            transformer.delete_adapters(present)
    transformer.set_adapters(["default"])


def discard_after(run_dir: Path, step: int) -> None:
    """Delete preview folders past ``step``: a killed run rendered them, the resumed run renders them again."""

    root = Path(run_dir) / FOLDER
    if not root.is_dir():
        return
    for folder in root.iterdir():
        if folder.is_dir() and folder.name.startswith("step-") and folder.name[5:].isdigit() and int(folder.name[5:]) > step:
            shutil.rmtree(folder)


def _helpers_to(pipe, device: str) -> bool:
    """Text encoders and VAE live on the CPU during training; a preview needs them where the transformer is."""
    if device == "cpu":
        return False
    for name in ("text_encoder", "text_encoder_2", "vae"):
        if getattr(pipe, name, None) is not None:  # FLUX.2 has one text encoder
            getattr(pipe, name).to(device)
    return True


def write_contact_sheet(root: Path) -> Path:
    """One row per preview step (labelled), one column per prompt and seed; rewritten in place."""

    rows = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-")):
        files = sorted(folder.glob("p*-s*.png"))
        if files:
            rows.append((int(folder.name.split("-")[1]), files))
    if not rows:
        raise ValueError(f"no previews under {root}")  # a bug: called before any preview was saved
    with Image.open(rows[0][1][0]) as first:
        scale = min(1.0, SHEET_CELL / max(first.size))
        cell = (max(1, round(first.width * scale)), max(1, round(first.height * scale)))
    label = 90
    columns = max(len(files) for _, files in rows)
    sheet = Image.new("RGB", (label + columns * cell[0], len(rows) * cell[1]), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (step, files) in enumerate(rows):
        draw.text((6, r * cell[1] + 6), f"step {step}", fill="black")
        for c, path in enumerate(files):
            with Image.open(path) as image:
                sheet.paste(image.convert("RGB").resize(cell), (label + c * cell[0], r * cell[1]))

    return atomic_write_bytes(root / SHEET, png_bytes(sheet, None), overwrite=True)
