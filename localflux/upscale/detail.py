"""The detail pass: after Real-ESRGAN, a tiled FLUX img2img at a low strength (``[upscale] detail``).

Real-ESRGAN makes an image larger and sharp but invents no texture; a light diffusion pass over the
upscaled image adds it back ("Clarity / Ultimate SD Upscale"). FLUX renders about 1 MP well, so the
upscaled image is cut into overlapping tiles of at most ``detail_tile`` pixels a side (1024: 1 MP):

- the image is first padded (edge pixels repeated) to multiples of the model's size multiple (16 for
  FLUX.1), so every tile is a valid render size; the padding is cropped off at the end;
- along each axis, an image no longer than ``detail_tile`` is one tile; a longer one is cut into cores of
  ``detail_tile - 2 * detail_overlap`` pixels, each extended by ``detail_overlap`` into its neighbours
  (``tiling.plan_axis``, the Real-ESRGAN stage's own planner), so a tile is at most ``detail_tile``;
- each tile is an ordinary localflux img2img render (``FluxImg2ImgPipeline``, the same code path and
  parity as ``--image``) at ``strength = detail``, with the render's prompt, seeded with
  ``tile_seed(seed, index)`` (the image's seed and the tile's row-major index);
- outputs are blended with the Real-ESRGAN stage's feathering (``tiling.axis_weights``: linear ramps
  over the 2 x overlap band that sum to 1), so no tile edge shows as a seam.

The step is recorded in ``upscale_steps`` (``kind = "detail"``) with everything replay needs (model,
its files' sha256, strength, steps, guidance, prompt, tile, overlap, seed) and redone by ``replay``.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np
from PIL import Image

from .. import pipeline  # cycle: pipeline's upscale stage calls detail_pass (module references only)
from ..errors import ConfigError
from ..geometry import PATCH
from .tiling import Span, Tile, axis_weights, plan_axis

log = logging.getLogger(__name__)

KIND = "detail"
MAX_DETAIL = 0.6
DEFAULT_PROMPT = "a detailed, sharp photograph"  # for pictures without a recipe and no --detail-prompt


def tile_seed(seed: int, index: int) -> int:
    """The seed of tile ``index`` of an image rendered with ``seed``: 63 bits of sha256("seed:index")."""
    digest = hashlib.sha256(f"{int(seed)}:{int(index)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def plan_grid(width: int, height: int, tile: int, overlap: int, multiple: int):
    """``(padded width, padded height, [tiling.Tile, ...])``; every tile's extent is a multiple of ``multiple``."""
    def up(n: int) -> int:
        return -(-n // multiple) * multiple

    tile = max(tile // multiple * multiple, multiple)
    overlap = overlap // multiple * multiple
    core = tile - 2 * overlap
    if core < multiple:
        raise ConfigError(f"upscale.detail_overlap {overlap} leaves no core in a {tile}-pixel tile; use an overlap "
                          f"below {tile // 2}")

    def axis(length: int):
        return [Span(0, length, 0, length)] if length <= tile else plan_axis(length, core, overlap)

    w, h = up(width), up(height)
    return w, h, [Tile(y, x) for y in axis(h) for x in axis(w)], overlap


def check_detail(config, preset: str) -> None:
    """``[upscale] detail`` needs img2img on a FLUX.1 base model (before anything loads)."""
    up = config.upscale
    if not up.enabled or up.detail <= 0 or up.detail_model is not None:
        return
    if preset not in ("schnell", "dev"):
        raise ConfigError(f"upscale.detail runs img2img, which a {preset} model does not do; set upscale.detail_model "
                          "(--detail-model) to a FLUX.1 [dev] or [schnell] model")


def detail_pass(image, *, model: dict, strength: float, seed: int, prompts: dict, steps: int | None = None,
                guidance: float | None = None, max_sequence_length: int | None = None, tile: int = 1024,
                overlap: int = 128, device: str = "auto", dtype: str = "auto", progress: bool = True):
    """The tiled img2img pass over ``image`` (PIL); returns ``(image, record)``.

    ``model``: ``[model]`` keys (source, base, preset …); ``prompts``: the text per encoder (FLUX.1: clip, t5).
    """
    if not 0 < strength <= MAX_DETAIL:
        raise ConfigError(f"upscale.detail must be in (0, {MAX_DETAIL}], got {strength!r}")
    rgb = image.convert("RGB")
    width, height = rgb.size

    found, family, _ = pipeline.identify(pipeline.coerce_config({"model": dict(model)}).model)
    multiple = PATCH * family.vae_scale_factor(found)
    prompt_table = {key.split(".", 1)[1]: text for key, text in family.recorded_prompt_keys(prompts).items()}
    padded_w, padded_h, tiles, overlap = plan_grid(width, height, tile, overlap, multiple)
    pixels = np.pad(np.asarray(rgb), ((0, padded_h - height), (0, padded_w - width), (0, 0)), mode="edge")
    total = np.zeros((padded_h, padded_w, 3), np.float64)
    weight = np.zeros((padded_h, padded_w, 1), np.float64)
    first = None
    for index, t in enumerate(tiles):
        crop = Image.fromarray(pixels[t.y.ext0:t.y.ext1, t.x.ext0:t.x.ext1])
        sampling = {"seed": tile_seed(seed, index), "count": 1}
        for key, value in (("steps", steps), ("guidance", guidance), ("max_sequence_length", max_sequence_length)):
            if value is not None:
                sampling[key] = value
        config = {"model": {**model, "device": device, "dtype": dtype}, "prompt": prompt_table,
                  "sampling": sampling, "size": {"width": crop.size[0], "height": crop.size[1]},
                  "input": {"image": crop, "strength": strength}}
        (result,) = pipeline.generate(config, save=False, progress=progress)
        first = first or result.recipe
        out = np.asarray(result.image.convert("RGB"), np.float64)
        w = (axis_weights(t.y, padded_h, overlap, 1)[:, None] * axis_weights(t.x, padded_w, overlap, 1)[None, :])[..., None]
        total[t.y.ext0:t.y.ext1, t.x.ext0:t.x.ext1] += out * w
        weight[t.y.ext0:t.y.ext1, t.x.ext0:t.x.ext1] += w
    blended = np.clip(np.rint(total / weight), 0, 255).astype(np.uint8)[:height, :width]
    used = first["config"]["sampling"]
    record = {
        "kind": KIND, "model": {k: v for k, v in model.items() if v is not None},
        "files": [{"path": f["path"], "sha256": f["sha256"]} for f in first["model"]["files"]],
        "fingerprint": first["model"].get("fingerprint"), "strength": strength, "steps": used["steps"],
        "guidance": used["guidance"], "max_sequence_length": used["max_sequence_length"],
        "steps_run": first["task"].get("steps_run"), "prompts": dict(prompts), "seed": seed,
        "seed_rule": "sha256('seed:index')[:8] >> 1, tiles row by row", "tile": tile, "overlap": overlap,
        "tiles": len(tiles), "padded_to": [padded_w, padded_h], "input_size": [width, height],
        "output_size": [width, height], "blend": "linear feather over 2 x overlap (upscale/tiling.py)",
        "device": first["device"], "dtype": first["dtype"], "scale": 1.0,
    }
    result = Image.fromarray(blended)
    if "icc_profile" in image.info:
        result.info["icc_profile"] = image.info["icc_profile"]
    return result, record


def replay_detail(image, step: dict, *, device: str | None, progress: bool):
    """Redo a recorded detail step."""
    image, _ = detail_pass(image, model=step["model"], strength=step["strength"], seed=step["seed"],
                           prompts=step["prompts"], steps=step["steps"], guidance=step["guidance"],
                           max_sequence_length=step["max_sequence_length"], tile=step["tile"], overlap=step["overlap"],
                           device=device or step["device"], dtype=step["dtype"], progress=progress)
    return image


def check_step(n: int, step: dict) -> None:
    """A recorded detail step's values, before anything renders (recipe data is data)."""
    for key in ("model", "files", "strength", "steps", "guidance", "max_sequence_length", "prompts", "seed", "tile",
                "overlap", "device", "dtype"):
        if key not in step:
            raise ConfigError(f"upscale_steps[{n}] (detail) lacks {key}")
    if not isinstance(step["model"], dict) or not isinstance(step["model"].get("source"), str):
        raise ConfigError(f"upscale_steps[{n}].model must be a table with a source")
    if not isinstance(step["prompts"], dict) or not all(isinstance(v, str) for v in step["prompts"].values()):
        raise ConfigError(f"upscale_steps[{n}].prompts must be a table of texts")
    number = (int, float)
    if isinstance(step["strength"], bool) or not isinstance(step["strength"], number) \
            or not 0 < step["strength"] <= MAX_DETAIL:
        raise ConfigError(f"upscale_steps[{n}].strength must be in (0, {MAX_DETAIL}], got {step['strength']!r}")
    for key, low in (("steps", 1), ("tile", 16), ("overlap", 0), ("seed", 0)):
        if isinstance(step[key], bool) or not isinstance(step[key], int) or step[key] < low:
            raise ConfigError(f"upscale_steps[{n}].{key} must be an integer of at least {low}, got {step[key]!r}")
    if not isinstance(step["files"], list) or not all(isinstance(f, dict) and isinstance(f.get("path"), str)
                                                       and isinstance(f.get("sha256"), str) for f in step["files"]):
        raise ConfigError(f"upscale_steps[{n}].files must be a list of {{path, sha256}} tables")
