"""Job files: one TOML file -> a deterministic, ordered list of fully validated items.

A job file is an ordinary config file (``[model]``, ``[sampling]``, ``[size]``, ...) plus a
``[job]`` table::

    [job]
    config = "../configs/schnell.toml"   # optional base config; this file's sections override it
    prompts = ["a red fox in snow"]      # and/or
    prompt_file = "prompts.txt"          # one prompt per line; blank lines and "# ..." skipped
    seeds = [1, 2, 3]                    # or { start = 100, count = 8 }
    output = "../renders/catalog"        # default: <output.dir>/<job file name>

    images = "photos/"                   # optional: img2img each image file of a folder (sorted by name)

    [[job.variants]]                     # optional; every item is prompt x image x variant x seed
    name = "wide"
    size = { width = 1344, height = 768 }  # any config keys, e.g. a LoRA scale
    strength = 0.35                      # the [input] keys may be written without "input."

Each prompt becomes ``prompt.subject`` (the config's other prompt parts still apply); each item
renders one image with its own seed. Items are ordered prompt-major, then image, then variant, then
seed. A prompt may be a table with its own inputs: ``{ prompt = "…", image = "me.png", mask = "m.png" }``,
``control = "edges.png"``, ``redux = ["look.png"]`` (any ``INPUT_KEYS``; variants too)
(image paths relative to the job file, or inline ``{ path, source, license }`` tables).

An item's id is a sha256 of what determines its pixels: the resolved config (without the output
section and without paths, which are replaced by the sha256 of the files they name), the final
prompt texts, the seed, the model's file hashes and, for image inputs, each input's role, sha256 and
preprocessing. Tool versions and the machine are not in it,
so the same job on another machine or after an upgrade still recognises its finished images.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from .. import config as config_mod
from .. import pipeline
from ..errors import ConfigError, InputImageError, LocalFluxError
from ..hashing import sha256_file
from ..loader import describe_source, source_files

log = logging.getLogger(__name__)

JOB_KEYS = ("config", "prompts", "prompt_file", "seeds", "output", "variants", "images")
# [input] keys a prompt table or a variant may give without the "input." prefix
INPUT_KEYS = ("image", "mask", "references", "strength", "outpaint", "paste_back", "control", "control_kind",
              "canny_low", "canny_high", "redux", "redux_scale")
# job.images: files with these suffixes are the job's images; other files are skipped (and said so)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
# Each item is exactly one image with its own seed; these belong to the job, not to a variant.
ITEM_OWNED_KEYS = ("sampling.seed", "sampling.count", "sampling.batch_size", "output.dir")
ID_SCHEME = "localflux-batch-item-1"  # bump only if the meaning of an id changes
SEED_MAX = 2**63 - 1
SLUG_CHARS = 40
MAX_LISTED_PROBLEMS = 8


@dataclass(frozen=True)
class Item:
    index: int  # position in the job, from 0
    prompt: str  # "" when the job has no prompts of its own (job.images with the config's prompt)
    seed: int
    variant: str | None
    plan: pipeline.Plan  # resolved config, size, request (input pixels released: see ``render_plan``)
    item_id: str  # sha256 hex of the pixel-determining inputs
    filename: str
    image: str | None = None  # job.images: the file of this item

    @property
    def label(self) -> str:
        variant = f", variant {self.variant!r}" if self.variant else ""
        image = f", image {Path(self.image).name!r}" if self.image else ""
        return f"item {self.index + 1} (seed {self.seed}{variant}{image})"


@dataclass(frozen=True)
class Job:
    path: Path
    folder: Path  # the job's output folder (not created here)
    items: list[Item]
    notes: tuple[str, ...] = ()  # said once after every item checked out (e.g. files job.images skipped)


def load_job(path: str | Path, *, sets: list[str] | None = None, out: str | Path | None = None) -> Job:
    """Read, expand and validate a job; raises one ``ConfigError`` listing every bad item."""
    path = Path(path)
    data = config_mod.read_toml(path, "job file")
    base_dir = path.resolve().parent
    job = data.pop("job", None)
    if not isinstance(job, dict):
        raise ConfigError(f"job file {str(path)!r} has no [job] table; add one with prompts and seeds (see docs/batch.md)")
    unknown = [key for key in job if key not in JOB_KEYS]
    if unknown:
        raise ConfigError(f"{path}: job.{unknown[0]} is not a known key (known in [job]: {', '.join(JOB_KEYS)})")
    base = _base_config(path, job, data, base_dir, sets)
    images, notes = _images(path, job.get("images"), base_dir)
    prompts = _prompts(path, job, base_dir, optional=bool(images))
    seeds = _seeds(path, job.get("seeds"))
    variants = _variants(path, job.get("variants"), base_dir)
    if images:
        _check_images_alone(path, base, prompts, variants)
    folder = _folder(path, job, base, out, base_dir)
    items = _expand(path, base, prompts, images or [None], variants, seeds, folder)
    for note in notes:
        log.info("%s", note)
    return Job(path, folder, items, tuple(notes))


# ---------------------------------------------------------------- the [job] table


def _base_config(path: Path, job: dict, data: dict, base_dir: Path, sets: list[str] | None):
    layers = config_mod.Layers()
    if "config" in job:
        if not isinstance(job["config"], str):
            raise ConfigError(f"{path}: job.config must be a path to a config file, got {job['config']!r}")
        layers.add_file(base_dir / job["config"])
    layers.add_dict(data, origin=str(path), base_dir=base_dir)
    for option in sets or []:
        key, value = config_mod.parse_set_option(option)
        layers.set(key, value, origin=f"--set {option}")
    return layers.build()


def _prompts(path: Path, job: dict, base_dir: Path, optional: bool = False) -> list[tuple[str | None, dict]]:
    """[(prompt text, {dotted input key: value})]; a prompt table carries its own ``[input]`` values.

    With ``optional`` (a job over a folder of images) and no prompts, one entry ``(None, {})``: every
    image is rendered with the config's own prompt.
    """
    prompts: list[tuple[str, dict]] = []
    inline = job.get("prompts", [])
    if not isinstance(inline, list) or not all(isinstance(p, (str, dict)) for p in inline):
        raise ConfigError(f"{path}: job.prompts must be a list of strings or {{ prompt = \"…\", image = \"…\" }} "
                          f"tables, got {inline!r}")
    for number, entry in enumerate(inline, 1):
        prompts.append(_prompt_entry(path, number, entry, base_dir) if isinstance(entry, dict) else (entry, {}))
    if "prompt_file" in job:
        if not isinstance(job["prompt_file"], str):
            raise ConfigError(f"{path}: job.prompt_file must be a path, got {job['prompt_file']!r}")
        prompts += [(p, {}) for p in read_prompt_file(base_dir / job["prompt_file"])]
    for number, (prompt, _) in enumerate(prompts, 1):
        if not prompt.strip():
            raise ConfigError(f"{path}: prompt {number} is empty; remove it or write a prompt")
    if not prompts:
        if optional:
            return [(None, {})]
        raise ConfigError(f"{path}: the job has no prompts; set job.prompts or job.prompt_file")
    return [(p.strip(), inputs) for p, inputs in prompts]


def _prompt_entry(path: Path, number: int, entry: dict, base_dir: Path) -> tuple[str, dict]:
    where = f"{path}: job.prompts[{number}]"
    entry = dict(entry)
    prompt = entry.pop("prompt", None)
    if not isinstance(prompt, str):
        raise ConfigError(f"{where} needs prompt = \"…\" (the text), got {prompt!r}")
    unknown = [key for key in entry if key not in INPUT_KEYS]
    if unknown:
        raise ConfigError(f"{where}: {unknown[0]!r} is not a key of a prompt table (known: prompt, "
                          f"{', '.join(INPUT_KEYS)})")
    return prompt, _input_values(entry, where, base_dir)


def _input_values(given: dict, origin: str, base_dir: Path) -> dict:
    """``{image: …, strength: …}`` -> ``{"input.image": …}``: checked key names, image paths relative to the job."""
    layers = config_mod.Layers()
    layers.add_dict({"input": given}, origin=origin, base_dir=base_dir)
    return layers.values


def _images(path: Path, value, base_dir: Path) -> tuple[list, list[str]]:
    """``job.images``: the image files of a folder, sorted by name, as ``input.image`` values; and a note
    naming what was skipped. Files are taken by suffix (``IMAGE_SUFFIXES``); a file with an image suffix
    that is not a readable image stops the job like any bad input (checked before anything renders)."""
    if value is None:
        return [], []
    notes = {}
    if isinstance(value, dict):
        extra = [k for k in value if k not in ("path", "source", "license")]
        if extra or not isinstance(value.get("path"), str):
            raise ConfigError(f"{path}: job.images must be a folder path or {{ path = \"photos/\", source = \"…\", "
                              f"license = \"…\" }}, got {value!r}")
        notes = {k: v for k, v in value.items() if k != "path"}
        value = value["path"]
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{path}: job.images must be a folder of images, e.g. images = \"photos/\", got {value!r}")
    folder = (base_dir / Path(value).expanduser()).resolve()
    if not folder.is_dir():
        what = "is a file" if folder.exists() else "does not exist"
        raise ConfigError(f"{path}: job.images {value!r} ({folder}) {what}; give a folder of images "
                          "(for one image use input.image)")
    images, skipped = [], []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES:
            images.append(dict(notes, path=str(entry)) if notes else str(entry))
        else:
            skipped.append(entry.name + ("/" if entry.is_dir() else ""))
    if not images:
        raise ConfigError(f"{path}: job.images {value!r} holds no image files ({', '.join(IMAGE_SUFFIXES)}); "
                          "put the pictures to start from there")
    messages = []
    if skipped:
        shown = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        messages.append(f"job.images: {len(images)} image(s) in {folder}; skipped {len(skipped)} that are not image "
                        f"files by their suffix or are folders (not searched): {shown}")
    return images, messages


def _check_images_alone(path: Path, base, prompts, variants) -> None:
    """With job.images each item's picture is its file: nothing else may set ``input.image``."""
    if base.input.image is not None:
        raise ConfigError(f"{path}: job.images gives every item its image, but the config also sets input.image; "
                          "remove one of them")
    for _, inputs in prompts:
        if "input.image" in inputs:
            raise ConfigError(f"{path}: job.images gives every item its image; a prompt table may not set image")
    for name, overrides in variants:
        if "input.image" in overrides:
            raise ConfigError(f"{path}: job.images gives every item its image; variant {name!r} may not set image")


def read_prompt_file(path: Path) -> list[str]:
    """One prompt per line (UTF-8); blank lines and lines starting with ``#`` are skipped."""
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise ConfigError(f"prompt file {str(path)!r} {what}; set job.prompt_file to a text file")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError(f"prompt file {str(path)!r} is not UTF-8 text (bad byte on line {line}); save it as UTF-8") from None
    if "\x00" in text:
        raise ConfigError(f"prompt file {str(path)!r} contains NUL bytes; it is not a text file")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _seeds(path: Path, value) -> list[int]:
    if value is None:
        raise ConfigError(f"{path}: job.seeds is missing; give a list such as [1, 2, 3] or {{ start = 1, count = 8 }}")
    if isinstance(value, dict):
        extra = [k for k in value if k not in ("start", "count")]
        start, count = value.get("start"), value.get("count")
        if extra or not _is_int(start) or not _is_int(count) or not 1 <= count <= 100000:
            raise ConfigError(f"{path}: job.seeds as a table must be {{ start = INT, count = 1..100000 }}, got {value!r}")
        seeds = list(range(start, start + count))
    elif isinstance(value, list) and value and all(_is_int(s) for s in value):
        seeds = list(value)
    else:
        raise ConfigError(f"{path}: job.seeds must be a non-empty list of integers or {{ start, count }}, got {value!r}")
    bad = [s for s in seeds if not 0 <= s <= SEED_MAX]
    if bad:
        raise ConfigError(f"{path}: job.seeds must be between 0 and {SEED_MAX}, got {bad[0]}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{path}: job.seeds lists a seed twice; each seed once")
    return seeds


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _variants(path: Path, value, base_dir: Path) -> list[tuple[str | None, dict]]:
    """[(name, {dotted key: value})]; a job without variants has one unnamed variant."""
    if value is None:
        return [(None, {})]
    if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{path}: job.variants must be [[job.variants]] tables, got {value!r}")
    variants, names = [], set()
    for number, table in enumerate(value, 1):
        table = dict(table)
        name = table.pop("name", f"v{number}")
        shorthand = {key: table.pop(key) for key in INPUT_KEYS if key in table}  # strength = 0.3 -> input.strength
        if shorthand:
            table["input"] = {**(table.get("input") if isinstance(table.get("input"), dict) else {}), **shorthand}
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{path}: job.variants[{number}].name must be a non-empty string, got {name!r}")
        if name in names:
            raise ConfigError(f"{path}: two job.variants are named {name!r}; give each a different name")
        names.add(name)
        layers = config_mod.Layers()  # only to flatten, check key names and resolve paths like a config file
        layers.add_dict(table, origin=f"{path}: job.variants[{number}] ({name})", base_dir=base_dir)
        for key in layers.values:
            if key in ITEM_OWNED_KEYS:
                raise ConfigError(f"{path}: job.variants[{number}] ({name}) sets {key}; seeds and the output "
                                  "folder are set for the whole job in [job]")
        variants.append((name, layers.values))
    return variants


def _folder(path: Path, job: dict, base, out, base_dir: Path) -> Path:
    if out is not None:
        return Path(out).expanduser().resolve()
    if "output" in job:
        if not isinstance(job["output"], str) or not job["output"].strip():
            raise ConfigError(f"{path}: job.output must be a folder path, got {job['output']!r}")
        return (base_dir / job["output"]).resolve()
    return (Path(base.output.dir).expanduser() / path.stem).resolve()


# ---------------------------------------------------------------- items


def _expand(path: Path, base, prompts, images: list, variants, seeds: list[int], folder: Path) -> list[Item]:

    items, problems, seen = [], [], {}
    hashes = _FileHashes()
    index = 0
    with _quiet_status_lines():  # "size from the input image" once per item would bury the one error line
        for prompt, inputs in prompts:
            for image in images:
                for name, overrides in variants:
                    for seed in seeds:
                        image_name = f", image {Path(_image_path(image)).name!r}" if image is not None else ""
                        label = f"item {index + 1} (seed {seed}{f', variant {name!r}' if name else ''}{image_name})"
                        try:
                            layers = config_mod.Layers()
                            layers.add_dict(base.to_dict(), origin="config")
                            for key, value in inputs.items():
                                layers.set(key, value, origin=f"{path}: job.prompts ({prompt!r})")
                            if image is not None:
                                layers.set("input.image", image, origin=f"{path}: job.images")
                            for key, value in overrides.items():
                                layers.set(key, value, origin=f"{path}: job.variants ({name})")
                            fixed = [("sampling.seed", seed), ("sampling.count", 1), ("sampling.batch_size", 1),
                                     ("output.dir", str(folder))]
                            if prompt is not None:
                                fixed.insert(0, ("prompt.subject", prompt))
                            for key, value in fixed:
                                layers.set(key, value, origin=str(path))
                            plan = pipeline.plan(layers.build())
                            identity = item_id(plan, hashes)
                        except LocalFluxError as exc:
                            problems.append((label, str(exc)))
                            index += 1
                            continue
                        if identity in seen:
                            problems.append((label, f"renders exactly the same image as item {seen[identity] + 1}; "
                                                    "remove the duplicate prompt, image, seed or variant"))
                        seen.setdefault(identity, index)
                        image_path = _image_path(image) if image is not None else None
                        filename = item_filename(index, seed, name, prompt or "", identity,
                                                 image=Path(image_path).stem if image_path else None)
                        items.append(Item(index, prompt or "", seed, name, release_inputs(plan), identity,
                                          filename, image_path))
                        index += 1
    if problems:
        raise ConfigError(f"{path}: {len(problems)} of {index} items are invalid, nothing was rendered: "
                          + _summarise(problems))
    return items


def _image_path(value) -> str:
    return value["path"] if isinstance(value, dict) else value


class _quiet_status_lines:
    """localflux's INFO lines off while the items are checked (warnings and errors still show)."""

    def __enter__(self):
        self.logger = logging.getLogger("localflux")
        self.saved = self.logger.level
        if self.logger.getEffectiveLevel() < logging.WARNING:
            self.logger.setLevel(logging.WARNING)
        return self

    def __exit__(self, *exc) -> None:
        self.logger.setLevel(self.saved)


# The input pixels of a checked item are not kept (a job over a folder of photos would hold every one
# in memory): ``render_plan`` reads them again just before the item renders.
_RELEASED = {"released": "input pixels are read again just before the render (batch.jobs.render_plan)"}


def release_inputs(plan):
    """``plan`` without its input pixels (only for plans with input images)."""

    if not plan.prepared.inputs:
        return plan
    return dataclasses.replace(plan, prepared=dataclasses.replace(plan.prepared, kwargs=_RELEASED, finish=None))


def render_plan(item: Item, plan=None):
    """The plan to render ``item`` with: its input images read again (when released), with the same bytes as
    when the job was checked (the id says which); a changed or missing input raises ``InputImageError``."""

    plan = plan or item.plan
    if plan.prepared.kwargs is _RELEASED:
        with _quiet_status_lines():  # its status lines were said (or not) when the job was checked
            plan = pipeline.plan(plan.config)
    for was, now in zip(item.plan.prepared.inputs, plan.prepared.inputs):
        if was["sha256"] != now["sha256"]:
            raise InputImageError(f"input {was['role']} {was['path']!r} changed after the job was checked (sha256 "
                                  f"{was['sha256'][:12]}… -> {now['sha256'][:12]}…); run the batch again to render "
                                  "it as a new item")
    return plan


def _summarise(problems: list[tuple[str, str]]) -> str:
    """Every distinct problem once, with the items it hits (a bad variant would otherwise repeat N times)."""
    by_message: dict[str, list[str]] = {}
    for label, message in problems:
        by_message.setdefault(message, []).append(label)
    parts = []
    for message, labels in list(by_message.items())[:MAX_LISTED_PROBLEMS]:
        who = labels[0] if len(labels) == 1 else f"{labels[0]} and {len(labels) - 1} more"
        parts.append(f"{who}: {message}")
    if len(by_message) > MAX_LISTED_PROBLEMS:
        parts.append(f"and {len(by_message) - MAX_LISTED_PROBLEMS} more kinds of problem")
    return " | ".join(parts)


class _FileHashes:
    """sha256 per file (``hashing.sha256_file`` caches across runs; this avoids re-statting per item)."""

    def __init__(self) -> None:
        self.digests: dict[str, str] = {}
        self.sources: dict[tuple, list[str]] = {}

    def file(self, path: Path) -> str:

        key = str(Path(path).resolve())
        if key not in self.digests:
            self.digests[key] = sha256_file(key)
        return self.digests[key]

    def model(self, model_config) -> list[str]:

        key = (model_config.source, model_config.base, model_config.revision)
        if key not in self.sources:
            source = describe_source(*key, download=True)
            self.sources[key] = [self.file(p) for p in source_files(source)]
        return self.sources[key]


def item_id(plan, hashes: _FileHashes | None = None) -> str:
    """sha256 of the inputs that determine an item's pixels (see the module docstring)."""
    hashes = hashes or _FileHashes()
    config = plan.config.to_dict()
    config.pop("output")
    model_hashes = hashes.model(plan.config.model)
    if model_hashes:  # the files identify the model; where they live does not matter
        for key in ("source", "base", "revision"):
            config["model"].pop(key)
    request = plan.request
    payload = {
        "scheme": ID_SCHEME,
        "config": _files_to_hashes(config, hashes),
        "prompt": {**request.prompts, "negative": request.negative_prompt},
        "size": [request.width, request.height],
        "seed": plan.seeds[0],
        "model_sha256": model_hashes,
    }
    inputs = plan.prepared.inputs
    if inputs:  # the bytes read, not only the paths (a text-only item's id is unchanged by this key)
        payload["inputs"] = [{"role": r["role"], "sha256": r["sha256"], "steps": r["steps"]} for r in inputs]
        payload["task"] = plan.prepared.task
    text = json.dumps(payload, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _files_to_hashes(value, hashes: _FileHashes):
    """Any string naming an existing file (a LoRA, an upscaler) becomes ``sha256:<digest>``."""
    if isinstance(value, dict):
        return {k: _files_to_hashes(v, hashes) for k, v in value.items()}
    if isinstance(value, list):
        return [_files_to_hashes(v, hashes) for v in value]
    if isinstance(value, str) and ("/" in value or "\\" in value) and Path(value).is_file():
        return "sha256:" + hashes.file(Path(value))
    return value


def item_filename(index: int, seed: int, variant: str | None, prompt: str, identity: str,
                  image: str | None = None) -> str:
    """``0001-s42-a-red-fox-in-snow-1a2b3c4d5e.png``: readable prefix, then the id that makes it unique.

    ``image`` (job.images: the input file's stem) comes before the prompt: ``0001-s1-img-0042-1a2b3c4d5e.png``.
    """
    parts = [f"{index + 1:04d}"]
    if variant:
        parts.append(slug(variant, 20))
    parts.append(f"s{seed}")
    if image is not None:
        parts.append(slug(image, 30))
    if prompt or image is None:
        parts.append(slug(prompt, SLUG_CHARS))
    parts.append(identity[:10])
    return "-".join(p for p in parts if p) + ".png"


def slug(text: str, limit: int) -> str:
    """Lower-case ASCII letters and digits joined by '-': never a path separator, never longer than ``limit``."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", ascii_text.lower())
    result = "-".join(words)[:limit].strip("-")
    return result or "prompt"
