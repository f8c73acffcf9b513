"""The one place that knows the order of stages: config -> model -> seeds -> render -> (upscale) -> save.

``plan`` resolves everything that can be decided without weights (preset, size, seeds, prompts,
device) so ``--dry-run`` shows exactly what ``generate`` will do. ``generate`` renders and saves,
embedding a recipe from which ``replay`` reproduces each image.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from . import config as config_mod
from .config import Config
from .device import resolve_placement
from .errors import ConfigError
from .families import Family
from .families.registry import FAMILIES
from .geometry import PATCH
from .hashing import sha256_file
from .io.c2pa import check_output
from .io.png import save_png, signer_for
from .loader import LoadedModel, Source, describe_source
from .lora.files import check_lora_path
from .lora.state import apply_loras, lora_request
from .memory.plan import GiB, MemoryPlan, stage_peaks
from .memory.resolve import gguf_of, resolve_plan, workload
from .model_cache import MODELS
from .output import check_output_dir, ensure_output_dir, unique_path
from .progress import progress_bar
from .prompts import PART_ORDER, join_prompt
from .recipe import versions
from .recipe_schema import SCHEMA_VERSION, FileRecord, ModelRecord, Recipe, SizeRecord
from .render import RenderRequest, prompt_warnings, render, vae_tiling_enabled
from .resolution import Size, resolve_size
from .tasks import TASKS, Prepared, Task
from .tasks.images import absolute_input_paths, describe_task, strip_pixels
from .upscale import upscale_pil
# cycle: upscale/detail renders its pass through this module's generate; both sides import the other module
# (not names from it) at the top, so either can be imported first
from .upscale import detail as upscale_detail
from .upscale.registry import check_reference

log = logging.getLogger(__name__)

RANDOM_SEED_LIMIT = 2**32  # random seeds stay short enough to read and type


@dataclass
class Result:
    image: Image.Image
    seed: int
    recipe: dict
    path: Path | None = None
    base_image: Image.Image | None = None  # the image before the upscale stage, when there was one


@dataclass(frozen=True)
class Plan:
    """Everything decided before weights load: the family and preset (detected once), task, size, seeds."""

    config: Config  # preset applied, seed fixed, paths absolute
    source: Source
    family: Family
    task: Task
    prepared: Prepared  # the task's inputs, read once
    size: Size
    seeds: list[int]
    request: RenderRequest
    prompt_parts: dict
    seed_was_random: bool

    @property
    def preset(self) -> str:
        return self.config.model.preset


def plan(config: Config) -> Plan:
    """Resolve a config into a concrete plan, without loading weights or downloading anything."""
    config = _absolute_paths(config)
    if config.output.content_credentials:  # before minutes of loading: the package and the key files

        check_output(config.output)
    source, family, preset = identify(config.model)
    config = config_mod.with_preset(config, family.presets[preset])
    family.validate(config)
    task = TASKS.select(config, family, preset)
    task.validate(config, family, preset)

    upscale_detail.check_detail(config, preset)
    seed_was_random = config.sampling.seed is None
    if seed_was_random:
        config = config_mod.replace(config, **{"sampling.seed": secrets.randbelow(RANDOM_SEED_LIMIT)})
    size = resolve_size(config.size.width, config.size.height, config.size.megapixels, config.size.aspect,
                        multiple=PATCH * family.vae_scale_factor(source))
    parts = {name: getattr(config.prompt, name) for name in PART_ORDER}
    prompts = family.encoder_prompts(config, join_prompt(parts))
    if not any(prompts.values()):
        raise ConfigError("the prompt is empty; give --prompt TEXT or set prompt.subject in the config")
    _check_files(config)
    prepared = task.prepare(config, family, preset, size)
    size = prepared.size or size
    s = config.sampling
    request = RenderRequest(
        prompts=prompts, negative_prompt=config.prompt.negative or None, width=size.width, height=size.height,
        steps=s.steps, guidance=s.guidance, true_cfg=s.true_cfg, max_sequence_length=s.max_sequence_length,
        vae_tiling=vae_tiling_enabled(config.memory.vae_tiling, size.width, size.height),
    )
    seeds = [s.seed + k for k in range(s.count)]
    return Plan(config, source, family, task, prepared, size, seeds, request, parts, seed_was_random)


def identify(model) -> tuple[Source, Family, str]:
    """The source, family and preset of a ``[model]`` table: detected here, once per run, never again."""
    source = describe_source(model.source, model.base, model.revision)
    family = FAMILIES.detect(source)
    preset = getattr(model, "preset", "auto")
    preset = preset if preset != "auto" else family.detect_preset(source)
    if preset not in family.presets:
        raise ConfigError(f"model.preset {preset!r} is not a {family.label} preset; use auto or one of "
                          f"{', '.join(family.presets)}")
    return source, family, preset


def _check_files(config: Config) -> None:
    """A missing LoRA or upscaler must stop the run (a whole batch) before any model loads."""
    if config.lora:

        for entry in config.lora:
            check_lora_path(entry.path)
    if config.upscale.enabled:

        check_reference(config.upscale.model)


def generate(config, *, save: bool = True, progress: bool = True, out_dir: str | Path | None = None,
             on_result=None) -> list[Result]:
    """Render every image of ``config`` (a path, a dict or a ``Config``); save them unless ``save=False``.

    ``on_result(result)`` is called as each image is done (saved), so a caller can report it at once.
    """
    config = coerce_config(config)
    if out_dir is not None:
        config = config_mod.replace(config, **{"output.dir": str(out_dir)})
    return _generate(plan(config), save=save, progress=progress, on_result=on_result)


def _generate(plan: Plan, *, save: bool, progress: bool, on_result) -> list[Result]:
    if save:

        check_output_dir(plan.config.output.dir)
    model = load(plan)
    _announce(plan)
    _announce_loras(model)
    folder = None
    if save:

        folder = ensure_output_dir(plan.config.output.dir)
    warnings = prompt_warnings(plan.family, model.pipe, plan.request)
    results = []
    batches = _batches(plan.seeds, plan.config.sampling.batch_size)
    bar = _image_bar(len(plan.seeds), progress)
    for batch in batches:
        for result in render_batch(plan, model, batch, warnings, progress=progress):
            if folder is not None:
                result.path = save_result(result, folder, plan.config)
            results.append(result)
            if on_result is not None:
                on_result(result)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return results


def coerce_config(config) -> Config:
    if isinstance(config, Config):
        return config
    if isinstance(config, dict):
        return config_mod.config_from_dict(config)
    if isinstance(config, (str, Path)):
        return config_mod.load_config(config)
    raise TypeError(f"config must be a path, a dict or a localflux Config, not {type(config).__name__}")


def load(plan: Plan) -> LoadedModel:
    """The model to render a plan with: from the model cache, with exactly the config's LoRAs applied."""
    config = plan.config
    placement = resolve_placement(config.model.device, config.model.dtype)
    memory_plan = memory_plan_for(plan, placement)
    if memory_plan.chosen_by == "auto":
        log.info("memory plan: %s (%s)", memory_plan.label(), memory_plan.reason)
    loras = lora_request(config.lora, config.lora_options.fuse)  # hashes the files once; a missing one stops here
    # a clean base, or one whose adapters these LoRAs can re-scale or hot-swap into (model_cache.py)
    model = MODELS.load(config.model, placement, family=plan.family, preset=plan.preset,
                        memory_plan=memory_plan, speed=config.speed, loras=loras if loras.entries else None)
    if loras.entries:  # the LoRA stage
        apply_loras(model, loras)
    return model


def memory_plan_for(plan: Plan, placement) -> MemoryPlan:
    """The run's memory plan; an automatic one counts the final size and what the task adds."""
    return resolve_plan(plan.config, plan.source, plan.family, plan.preset, placement,
                        PATCH * plan.family.vae_scale_factor(plan.source), size=plan.size,
                        task=plan.prepared.workload)


def memory_estimate(plan: Plan, placement) -> list[str]:
    """``--dry-run`` lines: what the task adds to the work, and the estimated accelerator peak of each stage."""

    multiple = PATCH * plan.family.vae_scale_factor(plan.source)
    work = workload(plan.config, placement, multiple, size=plan.size, task=plan.prepared.workload)
    lines = []
    note = work.task_note(multiple // PATCH)
    if note:
        lines.append(f"task memory: {note}")
    try:
        footprint = plan.family.footprint(plan.source, plan.preset)
        memory_plan = memory_plan_for(plan, placement)
        gguf = gguf_of(plan.source)
        peaks = stage_peaks(memory_plan, footprint, work, gguf[1] if gguf else None)
    except Exception as exc:  # an estimate must never stop a dry run (e.g. a hub model whose configs are not here)
        log.debug("no memory estimate: %s", exc)
        return lines
    stages = ", ".join(f"{stage} {peak / GiB:.2f}" for stage, peak in peaks.items())
    lines.append(f"memory estimate ({memory_plan.label()}): peak {max(peaks.values()) / GiB:.2f} GiB on the "
                 f"accelerator (per stage, GiB: {stages}; docs/memory.md)")
    return lines


def render_batch(plan: Plan, model: LoadedModel, seeds: list[int], warnings: list[str], *, progress: bool = True) -> list[Result]:
    """Render ``seeds`` in one forward pass and attach each image's recipe (and upscale, if enabled)."""

    index0 = plan.seeds.index(seeds[0])
    desc = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}-{seeds[-1]}"
    images, sigmas = render(model.pipe, plan.family, plan.request, seeds, plan.prepared,
                            progress=progress, desc=desc)
    results = []
    for position, (seed, image) in enumerate(zip(seeds, images)):
        recipe = build_recipe(plan, model, seed, index0 + position, sigmas, warnings, batch_seeds=seeds)
        if plan.config.upscale.enabled:
            upscaled, record = upscale_stage(image, plan.config.upscale, model.placement.device, progress=progress)
            recipe["upscale_steps"] = [record]
            if plan.config.upscale.detail > 0:
                upscaled, record = detail_stage(upscaled, plan, seed, model.placement.device, progress=progress)
                recipe["upscale_steps"].append(record)
            result = Result(upscaled, seed, recipe, base_image=image)
        else:
            result = Result(image, seed, recipe)
        results.append(result)
    return results


def upscale_stage(image, upscale, device: str, *, progress: bool = True):
    """The chained Real-ESRGAN stage (``[upscale]``); returns (image, recipe record)."""

    return upscale_pil(image, model=upscale.model, scale=upscale.scale, tile=upscale.tile, device=device,
                       alpha=upscale.alpha, progress=progress)


def detail_stage(image, plan: Plan, seed: int, device: str, *, progress: bool = True):
    """The detail pass after Real-ESRGAN (``[upscale] detail``): tiled img2img with the render's prompt."""

    c, up = plan.config, plan.config.upscale
    if up.detail_model is not None:
        model = {"source": up.detail_model}
    else:
        model = {"source": c.model.source, "base": c.model.base, "revision": c.model.revision}
    return upscale_detail.detail_pass(image, model=model, strength=up.detail, seed=seed, prompts=dict(plan.request.prompts),
                       steps=up.detail_steps, tile=up.detail_tile, overlap=up.detail_overlap, device=device,
                       dtype=c.model.dtype, progress=progress)


def build_recipe(plan: Plan, model: LoadedModel, seed: int, index: int, sigmas: list[float], warnings: list[str],
                 batch_seeds: list[int]) -> dict:
    config = plan.config
    request = plan.request
    files = [FileRecord(str(path), sha256_file(path), path.stat().st_size) for path in model.files]
    return Recipe(
        schema_version=SCHEMA_VERSION,
        localflux_version=versions()["localflux"],
        # where the file is saved is not part of how its pixels are made (and would break byte-identity)
        # where the file is saved is not part of how its pixels are made (and would break byte-identity);
        # only whether the PNG carries the AI label is kept: it is part of the file's bytes
        config=strip_pixels({**{key: value for key, value in config.to_dict().items() if key != "output"},
                             "output": {"label": config.output.label}}),
        seed=seed,
        index=index,
        size=SizeRecord(plan.size.width, plan.size.height, list(plan.size.requested)),
        prompt={"parts": plan.prompt_parts, "final": join_prompt(plan.prompt_parts), **request.prompts,
                "negative": request.negative_prompt},
        sigmas=sigmas,
        model=ModelRecord(config.model.source, model.source.kind, model.preset, config.model.base, files,
                          model.fingerprint, family=plan.family.name),
        versions=versions(),
        device=model.placement.device,
        dtype=model.placement.dtype,
        decisions={
            "offload": model.offload,
            "vae_tiling": request.vae_tiling,
            "batch_seeds": list(batch_seeds),
            "attention_backend": attention_backend(model.pipe.transformer),
            "true_cfg_active": request.true_cfg > 1 and bool(request.negative_prompt),
            "memory": model.memory_plan,  # formats and offload that were applied; replay reuses them
            "speed": model.speed,
        },
        warnings=list(warnings),
        upscale_steps=[],  # one record per upscale applied, oldest first (chained stage, `localflux upscale`)
        loras=model.lora_state.records() if model.lora_state is not None else [],
        task={"name": plan.prepared.task, **copy.deepcopy(plan.prepared.record)},
        inputs=copy.deepcopy(plan.prepared.inputs),  # one record per input image
    ).to_dict()


def save_result(result: Result, folder: Path, config: Config) -> Path:

    signer = signer_for(config.output)

    stem = f"{result.recipe['index'] + 1:04d}-s{result.seed}"
    if config.upscale.enabled and config.upscale.keep_original:
        base_recipe = dict(result.recipe, upscale_steps=[])
        save_png(result.base_image, unique_path(folder, stem + "-base", ".png"), base_recipe,
                 sidecar=config.output.sidecar, credentials=signer)
    path = unique_path(folder, stem, ".png")
    return save_png(result.image, path, result.recipe, sidecar=config.output.sidecar, credentials=signer)


def attention_backend(transformer) -> str:
    for module in transformer.modules():
        processor = getattr(module, "processor", None)
        if processor is not None:
            backend = getattr(processor, "_attention_backend", None)
            return str(getattr(backend, "value", backend) or "native")
    return "native"


def _batches(seeds: list[int], size: int) -> list[list[int]]:
    return [seeds[i:i + size] for i in range(0, len(seeds), size)]


def _image_bar(total: int, progress: bool):
    if not progress or total < 2:
        return None

    return progress_bar(total, "images", "img", leave=True)


def _announce(plan: Plan) -> None:
    c = plan.config
    if plan.seed_was_random:
        log.info("seed %d (random; pass --seed %d to render it again)", c.sampling.seed, c.sampling.seed)
    if plan.size.snapped:
        req = plan.size.requested
        log.info("size %dx%d (asked for %gx%g; sides are multiples of %d)", plan.size.width, plan.size.height,
                 req[0], req[1], plan.size.multiple)


def _announce_loras(model: LoadedModel) -> None:
    state = model.lora_state
    for lora in state.loras if state is not None else []:
        log.info("LoRA %s x%g (%s, %s): %s", lora.name, lora.scale, lora.format, state.mode, lora.summary())


def _absolute_paths(config: Config) -> Config:
    """Paths the user gave relative to the working directory become absolute, so recipes replay anywhere."""
    changes = {}
    builtin = FAMILIES.builtin_names()  # built-in names win over files of that name (write ./tiny for those)
    for key, value in (("model.source", config.model.source), ("model.base", config.model.base),
                       ("output.dir", config.output.dir)):
        if value and (key == "output.dir" or (Path(value).exists() and value not in builtin)):
            absolute = str(Path(value).expanduser().resolve())
            if absolute != value:
                changes[key] = absolute
    changes.update(absolute_input_paths(config))  # --image etc. relative to the working directory
    loras = [dict(dataclasses.asdict(e), path=str(Path(e.path).expanduser().resolve())) for e in config.lora]
    if loras != [dataclasses.asdict(e) for e in config.lora]:
        changes["lora"] = loras  # recipes find LoRAs by absolute path
    return config_mod.replace(config, **changes) if changes else config


def describe(plan: Plan) -> str:
    """Human-readable account of what ``generate`` would do (``--dry-run``)."""

    c = plan.config
    r = plan.request
    where = plan.source.kind
    if where == "hub":
        where = "hub, in the local cache" if plan.source.path else "hub, NOT in the local cache: would download"
    lines = [
        f"model: {c.model.source} ({where}, preset {c.model.preset})",
        f"size: {r.width}x{r.height} ({r.width * r.height / 2**20:.2f} MP)",
        f"steps: {r.steps}, guidance: {r.guidance}, true_cfg: {r.true_cfg}, max_sequence_length: {r.max_sequence_length}",
        f"seeds: {', '.join(str(s) for s in plan.seeds[:8])}{' ...' if len(plan.seeds) > 8 else ''}"
        f" ({len(plan.seeds)} image(s), {c.sampling.batch_size} per pass)",
        f"prompt: {join_prompt(plan.prompt_parts) or next(v for v in r.prompts.values() if v)}",
        f"memory: plan={c.memory.plan}, transformer={c.memory.transformer}, t5={c.memory.t5}, "
        f"offload={c.memory.offload}, vae_tiling={'on' if r.vae_tiling else 'off'}",
        f"output: {c.output.dir}",
    ]
    if r.negative_prompt:
        lines.insert(5, f"negative: {r.negative_prompt} ({plan.family.negative_note(r)})")
    placement = resolve_placement(c.model.device, c.model.dtype)
    lines.append(f"device: {placement.device}, {placement.dtype}")
    lines += memory_estimate(plan, placement)
    sigmas = plan.family.sigmas(plan.source, c.model.preset, r.steps, r.width, r.height)
    lines.append("sigmas: " + ", ".join(f"{x:.4f}" for x in sigmas[:10]) + (" ..." if len(sigmas) > 10 else ""))
    for entry in c.lora:
        lines.append(f"lora: {entry.path} x{entry.scale:g}{'' if entry.strict else ' (strict = false)'}"
                     f" (fuse {c.lora_options.fuse})")
    lines += describe_task(plan.prepared)
    if c.upscale.enabled:
        lines.append(f"upscale: {c.upscale.model} x{c.upscale.scale} (tile {c.upscale.tile or 'auto'})")
    lines.append("resolved config:")
    lines.append(json.dumps(strip_pixels(dataclasses.asdict(c)), indent=2, sort_keys=False, default=str))
    return "\n".join(lines)
