"""Bad input never hurts: each case must end with exit 2, one clear line naming the bad file or key,
no traceback, and no file written or changed.

The cases are a table: add a row with a setup function that builds the bad input under ``tmp``
and returns the command line, plus the fragments the error line must contain. "Nothing written"
covers folders too (an empty output folder left behind is a write), and ``never`` names files that
must not appear (the marker a pickle with code in it would create if it were ever unpickled).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from localflux import faults

TINY_64 = ["--model", "tiny", "--device", "cpu", "--width", "64", "--height", "64", "--seed", "1",
           "--prompt", "a fox", "--no-progress"]


@dataclass
class Ctx:
    tmp: Path
    models: dict  # tiny diffusers folders (read-only: cases copy them)
    png: Path  # a localflux PNG rendered from models["schnell"] (read-only: cases copy it)
    env: dict = field(default_factory=dict)  # environment a setup needs (paths under tmp)

    def write(self, name: str, data: str | bytes) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    def model_copy(self, name: str = "model") -> Path:
        return Path(shutil.copytree(self.models["schnell"], self.tmp / name))

    def png_with_recipe(self, edit: Callable[[dict], object] | None = None, text: str | None = None) -> Path:
        """A copy of the rendered PNG whose recipe chunk is edited (or replaced by ``text``)."""
        from PIL import Image
        from PIL.PngImagePlugin import PngInfo

        with Image.open(self.png) as image:
            image.load()
            recipe = json.loads(image.text["localflux"])
            if edit is not None:
                edit(recipe)
            info = PngInfo()
            info.add_text("localflux", text if text is not None else json.dumps(recipe))
            path = self.tmp / "edited.png"
            image.save(path, pnginfo=info)
        return path


@dataclass
class Case:
    name: str
    setup: Callable[[Ctx], list]
    expect: list[str] = field(default_factory=list)
    env: dict = field(default_factory=dict)
    never: list[str] = field(default_factory=list)  # files (under tmp) that must not appear, e.g. a pickle's marker
    empty_folder_ok: bool = False  # the failure comes after the output folder was made (a full disk)


def job(ctx: Ctx, body: str, extra: str = "", name: str = "job.toml") -> Path:
    text = f"[job]\n{body}\n[model]\nsource = \"tiny\"\ndevice = \"cpu\"\n[size]\nwidth = 64\nheight = 64\n{extra}"
    return ctx.write(name, text)


def truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _folder_without(ctx: Ctx, part: str) -> list:
    folder = ctx.model_copy()
    target = folder / part
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    return ["generate", "--model", folder, *TINY_64[2:]]


def _truncated_folder_weights(ctx: Ctx) -> list:
    folder = ctx.model_copy()
    weights = next((folder / "transformer").glob("*.safetensors"))
    truncate(weights, weights.stat().st_size // 2)
    return ["generate", "--model", folder, *TINY_64[2:]]


def _corrupt_component_config(ctx: Ctx) -> list:
    folder = ctx.model_copy()
    (folder / "vae" / "config.json").write_text("{ not json")
    return ["generate", "--model", folder, *TINY_64[2:]]


def _single_file(ctx: Ctx, data: bytes, name: str = "flux.safetensors", base: bool = True) -> list:
    path = ctx.write(name, data)
    return ["generate", "--model", path, *(["--base", ctx.models["schnell"]] if base else []), *TINY_64[2:]]


def _vae_as_transformer(ctx: Ctx) -> list:
    vae = next((ctx.models["schnell"] / "vae").glob("*.safetensors"))
    return _single_file(ctx, vae.read_bytes())


def _changed_weights(ctx: Ctx) -> list:
    folder = ctx.model_copy()
    png = ctx.png_with_recipe(lambda r: [f.update(path=str(folder / Path(f["path"]).relative_to(ctx.models["schnell"])))
                                         for f in r["model"]["files"]])
    weights = next((folder / "vae").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-4] + b"\x00\x00\x00\x00")
    return ["replay", png, "--verify", "--no-progress"]


def _prompt_file_latin1(ctx: Ctx) -> list:
    ctx.write("p.txt", b"a fox\ncaf\xe9\n")
    return ["batch", job(ctx, 'prompt_file = "p.txt"\nseeds = [1]'), "--no-progress"]


def _job_output_under_file(ctx: Ctx) -> list:
    ctx.write("f.txt", "x")
    return ["batch", job(ctx, 'prompts = ["a"]\nseeds = [1]\noutput = "f.txt/out"'), "--no-progress"]


def _recipe_set(key: str, value) -> Callable[[dict], None]:
    def edit(recipe):
        section, name = key.split(".")
        recipe["config"].setdefault(section, {})[name] = value  # recipes carry no [output]: a forged one may
    return edit


# ---- LoRA, upscale and training inputs (merged after the first audit); builders from the features' own tests

MARKER = "pickle-code-ran"  # a pickle in these cases would create this file if it were ever unpickled


class _CodeInPickle:
    """Unpickling this opens (creates) ``path``: a stand-in for any code hidden in a checkpoint."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _pickle_with_code(ctx: Ctx, name: str, key: str) -> Path:
    import torch

    path = ctx.tmp / name
    torch.save({key: _CodeInPickle(ctx.tmp / MARKER)}, path)  # a zip checkpoint, as real .ckpt/.pth files are
    return path


def _lora(ctx: Ctx, kind: str = "diffusers", name: str = "style.safetensors") -> Path:
    import lora_files

    return getattr(lora_files, f"write_{kind}")(ctx.tmp / name)


def _with_lora(ctx: Ctx, kind: str, name: str = "style.safetensors") -> list:
    return ["generate", *TINY_64, "--lora", _lora(ctx, kind, name)]


def _lora_entry(ctx: Ctx, entry: str) -> list:
    _lora(ctx)
    return ["generate", "-c", ctx.write("c.toml", f"[[lora]]\n{entry}\n"), *TINY_64]


def _replay_changed_lora(ctx: Ctx) -> list:
    lora = _lora(ctx)
    record = {"path": str(lora), "sha256": "0" * 64, "scale": 1.0, "name": "style", "fuse": "fused"}
    return ["replay", ctx.png_with_recipe(lambda r: r.update(loras=[record])), "--no-progress"]


def _convert_onto(ctx: Ctx) -> list:
    return ["lora", "convert", _lora(ctx), ctx.write("kept.safetensors", "keep me"), "--to", "kohya"]


def _sweep(*flags) -> list:
    tiny = list(TINY_64)
    at = tiny.index("--seed")
    del tiny[at:at + 2]  # a sweep's rows come from --seeds; --seed beside it is an error of its own
    return ["sweep", *tiny, "--no-progress", *flags]


def _image(ctx: Ctx, name: str = "in.png") -> Path:
    from PIL import Image

    path = ctx.tmp / name
    Image.new("RGB", (16, 12), "teal").save(path)
    return path


def _upscale(ctx: Ctx, *flags, inputs: list | None = None) -> list:
    ctx.env["LOCALFLUX_WEIGHTS"] = ctx.tmp / "weights"  # an install, if anything reached it, would show up here
    return ["upscale", *(inputs if inputs is not None else [_image(ctx)]), "--device", "cpu", "--no-progress", *flags]


def _install_wrong_arch(ctx: Ctx) -> list:
    import torch

    from localflux.upscale.arch import SRVGGNetCompact

    ctx.env["LOCALFLUX_WEIGHTS"] = ctx.tmp / "weights"
    path = ctx.tmp / "compact-x4.pth"
    torch.save(SRVGGNetCompact(num_feat=4, num_conv=1, upscale=4).state_dict(), path)
    return ["weights", "install", "realesrgan-x2plus", "--from", path, "--no-download"]


def _upscale_config(ctx: Ctx, body: str) -> list:
    ctx.env["LOCALFLUX_WEIGHTS"] = ctx.tmp / "weights"
    return ["generate", "-c", ctx.write("c.toml", f"[upscale]\nenabled = true\n{body}\n"), *TINY_64]


def _train(ctx: Ctx, *flags, folder: Path | None = None, edit: Callable[[str], str] | None = None,
           dataset: Callable[[Path], object] | None = None) -> list:
    from _train_helpers import make_subject, write_config

    if folder is None:
        folder = make_subject(ctx.tmp / "data")
        if dataset is not None:
            dataset(folder)
    path = write_config(ctx.tmp, folder=folder)
    if edit is not None:
        path.write_text(edit(path.read_text()))
    return ["train-lora", "--config", path, "--no-progress", *flags]


def _empty_folder(ctx: Ctx) -> Path:
    (ctx.tmp / "empty").mkdir()
    return ctx.tmp / "empty"


def _resume_before_first_checkpoint(ctx: Ctx) -> list:
    (ctx.tmp / "run" / "cache").mkdir(parents=True)  # a run killed while caching, before its first checkpoint
    return _train(ctx, "--resume")


def _upscale_step(scale) -> Callable[[dict], None]:
    step = {"model": "realesr-animevideov3", "path": "/nowhere/up.safetensors", "sha256": "0" * 64, "scale": scale,
            "native_scale": 4, "tile": 64, "overlap": 8, "device": "cpu", "dtype": "float32"}
    return lambda recipe: recipe.update(upscale_steps=[step])


def _mask(ctx: Ctx, name: str = "mask.png", box=(4, 4, 12, 10)) -> Path:
    from PIL import Image

    path = ctx.tmp / name
    mask = Image.new("L", (16, 12), 0)
    if box is not None:
        mask.paste(255, box)
    mask.save(path)
    return path


def _bomb(ctx: Ctx) -> Path:
    """A PNG header that claims 20000 x 20000 pixels (Pillow's limit is ~89.5 M): read from the header only."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
    return ctx.write("bomb.png", data + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def _truncated_png(ctx: Ctx) -> Path:
    path = _image(ctx, "cut.png")
    from PIL import Image

    Image.effect_noise((64, 64), 64).convert("RGB").save(path)
    truncate(path, path.stat().st_size // 2)
    return path


IMAGE_CASES = [
    Case("input: --mask without --image", lambda c: ["generate", *TINY_64, "--mask", _mask(c)],
         ["--mask", "needs input.image (--image)"]),
    Case("input: --image is not an image", lambda c: ["generate", *TINY_64, "--image", c.write("notes.png", "hello")],
         ["notes.png", "not an image"]),
    Case("input: --image is truncated", lambda c: ["generate", *TINY_64, "--image", _truncated_png(c)],
         ["cut.png", "truncated"]),
    Case("input: --image is a decompression bomb", lambda c: ["generate", *TINY_64, "--image", _bomb(c)],
         ["bomb.png", "decompression-bomb limit", "LOCALFLUX_MAX_IMAGE_PIXELS="]),
    Case("input: --image does not exist", lambda c: ["generate", *TINY_64, "--image", c.tmp / "gone.png"],
         ["gone.png", "does not exist"]),
    Case("upscale: input is a decompression bomb", lambda c: _upscale(c, inputs=[_bomb(c)]),
         ["bomb.png", "decompression-bomb limit"]),
    Case("input: --strength 0", lambda c: ["generate", *TINY_64, "--image", _image(c), "--strength", "0"],
         ["input.strength must be greater than 0"]),
    Case("input: --strength above 1", lambda c: ["generate", *TINY_64, "--image", _image(c), "--strength", "1.5"],
         ["input.strength must be at most 1"]),
    Case("input: --reference with a model that takes none", lambda c: ["generate", *TINY_64, "--reference", _image(c)],
         ["--reference", "needs a FLUX.1 Kontext model"]),
    Case("input: --outpaint negative", lambda c: ["generate", *TINY_64, "--image", _image(c), "--outpaint", "0,-8,0,0"],
         ["--outpaint", "negative"]),
    Case("input: --outpaint not four numbers", lambda c: ["generate", *TINY_64, "--image", _image(c), "--outpaint", "8,8"],
         ["--outpaint '8,8' must be four whole numbers"]),
    Case("input: empty mask", lambda c: ["generate", *TINY_64, "--image", _image(c), "--mask", _mask(c, box=None)],
         ["mask.png", "is empty", "nothing to repaint"]),
    Case("input: Fill model without --mask", lambda c: ["generate", *TINY_64, "--model", "tiny-fill", "--image", _image(c)],
         ["Fill model needs --mask"]),
    Case("input: input too large for any memory plan", lambda c: ["generate", "--model", "tiny", "--device", "cpu",
                                                                 "--prompt", "x", "--image", _huge(c)],
         ["huge.png", "too large for any memory plan"]),
    Case("input: unknown key in an inline image table",
         lambda c: ["generate", "-c", c.write("c.toml", '[input]\nimage = { path = "in.png", licence = "x" }\n'), *TINY_64],
         ["c.toml", "input.image.licence is not a known key"]),
]


def _huge(ctx: Ctx) -> Path:
    from PIL import Image

    path = ctx.tmp / "huge.png"
    Image.new("RGB", (9000, 16), "white").save(path)
    return path


CASES = [
    # ---- config files
    Case("config: malformed TOML", lambda c: ["generate", "-c", c.write("c.toml", "[sampling\nsteps=4"), *TINY_64],
         ["c.toml", "is not valid TOML"]),
    Case("config: wrong type", lambda c: ["generate", "-c", c.write("c.toml", '[sampling]\nsteps = "4"\n'), *TINY_64],
         ["c.toml", "sampling.steps must be an integer"]),
    Case("config: unknown key", lambda c: ["generate", "-c", c.write("c.toml", "[size]\nwidht = 64\n"), *TINY_64],
         ["c.toml", "size.widht", "not a known key"]),
    Case("config: not UTF-8", lambda c: ["generate", "-c", c.write("c.toml", b'[prompt]\nsubject = "caf\xe9"\n'), *TINY_64],
         ["c.toml", "not UTF-8"]),
    Case("config: missing file", lambda c: ["generate", "-c", c.tmp / "nope.toml", *TINY_64], ["nope.toml", "does not exist"]),
    Case("config: a folder", lambda c: ["generate", "-c", c.tmp, *TINY_64], ["is a folder"]),
    # ---- CLI values
    Case("cli: negative steps", lambda c: ["generate", *TINY_64, "--steps", "-3"], ["--steps", "sampling.steps must be at least 1"]),
    Case("cli: 0x0 size", lambda c: ["generate", *TINY_64, "--width", "0", "--height", "0"], ["size.width must be at least 16"]),
    Case("cli: 50000-pixel side", lambda c: ["generate", *TINY_64, "--width", "50000"], ["size.width must be at most 8192"]),
    Case("cli: not a number", lambda c: ["generate", *TINY_64, "--steps", "four"], ["--steps", "invalid int value: 'four'"]),
    Case("cli: unknown choice", lambda c: ["generate", *TINY_64, "--dtype", "float8"], ["--dtype", "invalid choice"]),
    Case("cli: --set without =", lambda c: ["generate", *TINY_64, "--set", "sampling.steps"], ["--set", "KEY=VALUE"]),
    Case("cli: NaN guidance", lambda c: ["generate", *TINY_64, "--set", "sampling.guidance=nan"], ["sampling.guidance must be a number"]),
    Case("cli: bad aspect", lambda c: ["generate", *TINY_64[:4], "--megapixels", "0.01", "--aspect", "wide", "--prompt", "x"],
         ["aspect 'wide' is not a ratio"]),
    Case("cli: empty prompt", lambda c: ["generate", *TINY_64, "--prompt", " "], ["prompt is empty"]),
    Case("cli: unknown device", lambda c: ["generate", *TINY_64, "--device", "tpu"], ["device 'tpu' is not known"]),
    # ---- model folders and weight files
    Case("model: path does not exist", lambda c: ["generate", "--model", c.tmp / "no-model", *TINY_64[2:]], ["no-model", "does not exist"]),
    Case("model: folder without transformer/", lambda c: _folder_without(c, "transformer"), ["has no transformer/"]),
    Case("model: folder without model_index.json", lambda c: _folder_without(c, "model_index.json"), ["no model_index.json"]),
    Case("model: truncated weights in a folder", _truncated_folder_weights, ["model", "transformer"]),
    Case("model: corrupt component config", _corrupt_component_config, ["model", "vae"]),
    Case("weights: truncated safetensors", lambda c: _single_file(c, b"\x40\x00\x00\x00\x00\x00\x00\x00{\"a\":"),
         ["flux.safetensors", "not a readable .safetensors"]),
    Case("weights: pickle checkpoint is refused", lambda c: _single_file(c, b"\x80\x04K\x01.", name="flux.ckpt"),
         ["flux.ckpt", "not a .safetensors or .gguf checkpoint"]),
    Case("weights: single file without base", lambda c: _single_file(c, b"", base=False), ["flux.safetensors", "needs model.base"]),
    Case("weights: a VAE given as transformer", _vae_as_transformer, ["flux.safetensors", "not a FLUX.1 transformer"]),
    # ---- PNG recipes for replay
    Case("replay: image does not exist", lambda c: ["replay", c.tmp / "gone.png"], ["gone.png", "does not exist"]),
    Case("replay: not an image", lambda c: ["replay", c.write("fake.png", "hello")], ["fake.png", "not a readable image"]),
    Case("replay: PNG without recipe", lambda c: ["replay", _plain_png(c)],
         ["plain.png", "has no localflux recipe"]),
    Case("replay: recipe not JSON", lambda c: ["replay", c.png_with_recipe(text="{oops")], ["edited.png", "not valid JSON"]),
    Case("replay: newer schema_version", lambda c: ["replay", c.png_with_recipe(lambda r: r.update(schema_version=99))],
         ["edited.png", "newer localflux", "upgrade"]),
    Case("replay: recipe lacks keys", lambda c: ["replay", c.png_with_recipe(lambda r: r.pop("sigmas"))], ["edited.png", "lacks sigmas"]),
    Case("replay: tampered recipe value", lambda c: ["replay", c.png_with_recipe(_recipe_set("sampling.steps", -1))],
         ["edited.png", "sampling.steps must be at least 1", "altered"]),
    Case("replay: recipe of the wrong shape", lambda c: ["replay", c.png_with_recipe(lambda r: r.update(model="x"))],
         ["edited.png", "malformed"]),
    Case("replay: weight file changed", _changed_weights, ["diffusion_pytorch_model.safetensors", "has sha256"]),
    # ---- output paths
    Case("output: parent is a file", lambda c: ["generate", *TINY_64, "--out", c.write("f.txt", "x") / "sub"], ["f.txt", "is a file"]),
    Case("output: --out is a file", lambda c: ["generate", *TINY_64, "--out", c.write("f.txt", "x")], ["f.txt", "is a file"]),
    Case("output: disk full", lambda c: ["generate", *TINY_64, "--out", c.tmp / "renders"], ["disk full", "renders"],
         env={faults.DISK_FULL_ENV: "1"}, empty_folder_ok=True),
    # ---- job and prompt files
    Case("job: malformed TOML", lambda c: ["batch", c.write("job.toml", "[job\nseeds=[1]")], ["job.toml", "not valid TOML"]),
    Case("job: no [job] table", lambda c: ["batch", c.write("job.toml", "[size]\nwidth = 64\n")], ["job.toml", "no [job] table"]),
    Case("job: unknown [job] key", lambda c: ["batch", job(c, 'prompts = ["a"]\nseeds = [1]\nseed = 3')], ["job.toml", "job.seed is not"]),
    Case("job: prompt file not UTF-8", _prompt_file_latin1, ["p.txt", "not UTF-8", "line 2"]),
    Case("job: prompt file missing", lambda c: ["batch", job(c, 'prompt_file = "p.txt"\nseeds = [1]')], ["p.txt", "does not exist"]),
    Case("job: no prompts", lambda c: ["batch", job(c, "prompts = []\nseeds = [1]")], ["job.toml", "has no prompts"]),
    Case("job: negative seed", lambda c: ["batch", job(c, 'prompts = ["a"]\nseeds = [1, -2]')], ["job.toml", "job.seeds", "-2"]),
    Case("job: seeds missing", lambda c: ["batch", job(c, 'prompts = ["a"]')], ["job.toml", "job.seeds is missing"]),
    Case("job: duplicate items", lambda c: ["batch", job(c, 'prompts = ["a fox", "a fox "]\nseeds = [1]')],
         ["job.toml", "item 2", "same image as item 1"]),
    Case("job: variant sets the seed", lambda c: ["batch", job(c, 'prompts = ["a"]\nseeds = [1]\n[[job.variants]]\nsampling = { seed = 4 }')],
         ["job.toml", "job.variants[1]", "sampling.seed"]),
    Case("job: variant unknown key", lambda c: ["batch", job(c, 'prompts = ["a"]\nseeds = [1]\n[[job.variants]]\nsize = { widht = 4 }')],
         ["job.toml", "size.widht"]),
    Case("job: base config missing", lambda c: ["batch", job(c, 'config = "base.toml"\nprompts = ["a"]\nseeds = [1]')],
         ["base.toml", "does not exist"]),
    Case("job: output parent is a file", _job_output_under_file, ["f.txt", "is a file"]),
    # ---- LoRA files and entries
    Case("lora: file does not exist", lambda c: ["generate", *TINY_64, "--lora", c.tmp / "gone.safetensors"],
         ["gone.safetensors", "does not exist"]),
    Case("lora: truncated safetensors", lambda c: _with_lora(c, "corrupt"), ["style.safetensors", "not a readable .safetensors"]),
    Case("lora: DoRA file", lambda c: _with_lora(c, "dora"), ["style.safetensors", "DoRA"]),
    Case("lora: made for another base (shape)", lambda c: _with_lora(c, "wrong_size"),
         ["style.safetensors", "has 32 features but the LoRA has 3072"]),
    Case("lora: foreign keys (SDXL)", lambda c: _with_lora(c, "foreign"), ["style.safetensors", "not a FLUX.1 LoRA"]),
    Case("lora: .ckpt with code is never unpickled",
         lambda c: ["generate", *TINY_64, "--lora", _pickle_with_code(c, "evil.ckpt", "lora_unet_x.lora_down.weight")],
         ["evil.ckpt", "pickled code"], never=[MARKER]),
    Case("lora: [[lora]] unknown key", lambda c: _lora_entry(c, 'path = "style.safetensors"\nscael = 0.5'),
         ["c.toml", "scael", "not a known key"]),
    Case("lora: [[lora]] wrong type", lambda c: _lora_entry(c, 'path = "style.safetensors"\nscale = "strong"'),
         ["c.toml", "scale must be a number"]),
    Case("lora: [[lora]] without path", lambda c: _lora_entry(c, "scale = 0.5"), ["c.toml", "path"]),
    Case("lora: --lora scale not a number", lambda c: ["generate", *TINY_64, "--lora", f"{_lora(c)}:strong"],
         ["--lora", "'strong' is not a number"]),
    Case("lora: replay with a changed LoRA", _replay_changed_lora, ["style.safetensors", "has sha256", "restore"]),
    Case("lora: inspect a file that is not a LoRA",
         lambda c: ["lora", "inspect", next((c.models["schnell"] / "vae").glob("*.safetensors"))],
         ["diffusion_pytorch_model.safetensors", "not a LoRA"]),
    Case("lora: convert onto an existing file", _convert_onto, ["kept.safetensors", "already exists"]),
    Case("lora: convert to an unknown format", lambda c: ["lora", "convert", _lora(c), c.tmp / "o.safetensors", "--to", "onnx"],
         ["--to", "invalid choice: 'onnx'"]),
    # ---- sweeps (checked before any cell renders)
    Case("sweep: --seed beside --seeds", lambda c: _sweep("--seeds", "1,2", "--seed", "5", "--vary", "sampling.guidance=1,2"),
         ["takes its seeds from --seeds", "--seed 5"]),
    Case("sweep: seed range backwards", lambda c: _sweep("--seeds", "5-1", "--vary", "sampling.guidance=1,2"),
         ["--seeds", "runs backwards"]),
    Case("sweep: seeds not numbers", lambda c: _sweep("--seeds", "a,b", "--vary", "sampling.guidance=1,2"),
         ["--seeds", "'a' is not a seed"]),
    Case("sweep: --vary unknown key", lambda c: _sweep("--seeds", "1", "--vary", "sampling.stepz=1,2"),
         ["--vary sampling.stepz", "not a known key"]),
    Case("sweep: --vary value of the wrong type", lambda c: _sweep("--seeds", "1,2", "--vary", "sampling.steps=2,many"),
         ["--vary sampling.steps", "sampling.steps must be an integer"]),
    Case("sweep: --vary a LoRA that is not there", lambda c: _sweep("--seeds", "1", "--lora", _lora(c), "--vary", "lora[3].scale=0,1"),
         ["lora[3].scale", "only 1 [[lora]] entry"]),
    # ---- upscale inputs, models and weights
    Case("upscale: input does not exist", lambda c: _upscale(c, inputs=[c.tmp / "gone.png"]), ["gone.png", "not found"]),
    Case("upscale: input is not an image", lambda c: _upscale(c, inputs=[c.write("notes.png", "hello")]),
         ["notes.png", "not an image"]),
    Case("upscale: truncated model file", lambda c: _upscale(c, "--model", c.write("up.safetensors", b"\x40\0\0\0\0\0\0\0{\"a\":")),
         ["up.safetensors", "not a readable .safetensors"]),
    Case("upscale: .pth with code is never unpickled",
         lambda c: _upscale(c, "--model", _pickle_with_code(c, "evil.pth", "conv_first.weight")),
         ["evil.pth", "refusing to unpickle"], never=[MARKER]),
    Case("upscale: scale below 1", lambda c: _upscale(c, "--scale", "0.5"), ["scale 0.5 is out of range"]),
    Case("upscale: unknown device", lambda c: _upscale(c, "--device", "tpu"), ["unknown device 'tpu'", "cuda:N"]),
    Case("upscale: cuda:N without a GPU", lambda c: _upscale(c, "--device", "cuda:1"), ["cuda:1", "no CUDA GPU"]),
    Case("upscale: scale above 8", lambda c: _upscale(c, "--scale", "9"), ["scale 9 is out of range"]),
    Case("upscale: output parent is a file", lambda c: _upscale(c, "--out", c.write("f.txt", "x") / "up"), ["f.txt", "is a file"]),
    Case("upscale: --tile 0", lambda c: _upscale(c, "--tile", "0"), ["--tile must be a positive number"]),
    Case("weights: install an unknown name", lambda c: ["weights", "install", "realesrgan-x9000", "--no-download"],
         ["realesrgan-x9000", "unknown upscaler"]),
    Case("weights: install --from another architecture", _install_wrong_arch,
         ["compact-x4.pth", "SRVGGNetCompact x4", "realesrgan-x2plus is RRDBNet x2"]),
    Case("upscale: [upscale] scale out of range", lambda c: _upscale_config(c, "scale = 9.0"), ["c.toml", "upscale.scale"]),
    Case("upscale: [upscale] unknown model", lambda c: _upscale_config(c, 'model = "realesrgan-x9000"'),
         ["upscale.model", "realesrgan-x9000", "unknown upscaler"]),
    # ---- training (found before the model loads)
    Case("train: empty dataset folder", lambda c: _train(c, folder=_empty_folder(c)), ["empty", "has no images"]),
    Case("train: corrupt image", lambda c: _train(c, dataset=lambda d: truncate(d / "img1.png", 100)),
         ["img1.png", "not a readable image"]),
    Case("train: caption without image", lambda c: _train(c, dataset=lambda d: (d / "lost.txt").write_text("[trigger]")),
         ["lost.txt", "has no image"]),
    Case("train: folder named like an image", lambda c: _train(c, dataset=lambda d: (d / "img9.png").mkdir()),
         ["img9.png", "is a folder"]),
    Case("train: FIFO named like an image", lambda c: _train(c, dataset=lambda d: os.mkfifo(d / "img9.png")),
         ["img9.png", "not a regular file"]),
    Case("train: bucket not a multiple of 16", lambda c: _train(c, "--set", "dataset.resolutions=[72]"),
         ["dataset.resolutions", "not a multiple of 16"]),
    Case("train: trigger missing", lambda c: _train(c, edit=lambda t: t.replace('trigger = "zqx"\n', "")),
         ["train.toml", "dataset.trigger is empty"]),
    Case("train: unknown config key", lambda c: _train(c, edit=lambda t: t + "nmae = \"x\"\n"),
         ["train.toml", "output.nmae", "not a known key"]),
    Case("train: --resume without a run folder", lambda c: _train(c, "--resume"), ["--resume", "does not exist", "output.dir"]),
    Case("train: --resume with no checkpoint", _resume_before_first_checkpoint,
         ["--resume", "/run'", "no complete checkpoint"]),
    Case("train: 8-bit AdamW without CUDA", lambda c: _train(c, "--set", 'optimizer.name="adamw8bit"'),
         ["adamw8bit", "needs a CUDA GPU"]),
    # ---- recipes and jobs that carry the newer stages
    Case("replay: malformed upscale_steps entry", lambda c: ["replay", c.png_with_recipe(_upscale_step("big"))],
         ["edited.png", "upscale_steps[1].scale", "altered"]),
    Case("job: variant with a missing LoRA", lambda c: ["batch", job(c, 'prompts = ["a"]\nseeds = [1]\n'
                                                                      '[[job.variants]]\nlora = [{ path = "gone.safetensors" }]')],
         ["job.toml", "gone.safetensors", "does not exist"]),
    # ---- the command line itself (found by the newcomer audit)
    Case("cli: no command", lambda c: [], ["no command given", "localflux generate --config configs/demo.toml"]),
    Case("cli: misspelt flag", lambda c: ["generate", *TINY_64, "--no-progess"],
         ["localflux generate: unrecognized arguments: --no-progess (did you mean --no-progress?)",
          "see localflux generate --help"]),
    Case("cli: misspelt flag of an action", lambda c: ["lora", "inspect", _lora(c), "--jsn"],
         ["localflux lora inspect:", "--jsn (did you mean --json?)"]),
    Case("cli: lora without an action", lambda c: ["lora"], ["localflux lora: choose an action: inspect"]),
    Case("cli: weights without an action", lambda c: ["weights"], ["localflux weights: choose an action: install NAME or list"]),
    Case("cli: relative config path from another folder", lambda c: ["generate", "-c", "configs/demo.toml", *TINY_64],
         ["'configs/demo.toml' does not exist (looked for /", "/configs/demo.toml: relative paths start in the current folder"]),
    Case("job: job file missing", lambda c: ["batch", "jobs/catalog.toml"], ["job file 'jobs/catalog.toml' does not exist"]),
    Case("train: training config missing", lambda c: ["train-lora", "-c", "train.toml"],
         ["training config 'train.toml' does not exist"]),
    Case("doctor: --vram not positive", lambda c: ["doctor", "--vram", "-3"], ["--vram must be a positive number of GiB", "-3"]),
    Case("bench: unknown mode", lambda c: ["bench", "--tiny", "--mode", "fastt"], ["bench mode 'fastt' is not known", "cap12-auto, upscale"]),
    Case("bench: --steps 0", lambda c: ["bench", "--tiny", "--steps", "0"], ["--steps must be at least 1, got 0"]),
    Case("bench: --repeats 0", lambda c: ["bench", "--tiny", "--repeats", "0"], ["--repeats must be at least 1, got 0"]),
    Case("job: variant with a bad LoRA scale", lambda c: ["batch", job(c, 'prompts = ["a"]\nseeds = [1]\n[[job.variants]]\n'
                                                                        f'lora = [{{ path = "{_lora(c).name}", scale = "x" }}]')],
         ["job.toml", "scale must be a number"]),
]


CASES += IMAGE_CASES

KLEIN_64 = ["--model", "tiny-flux2", "--device", "cpu", "--width", "64", "--height", "64", "--seed", "1",
            "--prompt", "a fox", "--no-progress"]


def _rgb(ctx: Ctx, name: str, size=(80, 64)) -> Path:
    from PIL import Image

    path = ctx.tmp / name
    Image.new("RGB", size, (90, 120, 150)).save(path)
    return path


def _flux1_lora(ctx: Ctx) -> Path:
    import flux2_lora_files

    return flux2_lora_files.write_flux1(ctx.tmp / "flux1-lora.safetensors")


FLUX2_CASES = [
    Case("flux2: --reference is not an image", lambda c: ["generate", *KLEIN_64, "--reference", c.write("ref.png", "hi")],
         ["ref.png", "not an image"]),
    Case("flux2: --reference below 64 px", lambda c: ["generate", *KLEIN_64, "--reference", _rgb(c, "small.png", (48, 80))],
         ["small.png", "Image too small: 48×80", "at least 64px"]),
    Case("flux2: too many references", lambda c: ["generate", *KLEIN_64,
                                                   *[a for i in range(11) for a in ("--reference", _rgb(c, f"r{i}.png"))]],
         ["11 references", "more than localflux allows (10", "BFL recommends up to 4"]),
    Case("flux2: prompt.clip", lambda c: ["generate", *KLEIN_64, "--set", 'prompt.clip="x"'],
         ["prompt.clip is for FLUX.1's CLIP encoder", "FLUX.2 models read one text"]),
    Case("flux2: prompt.t5", lambda c: ["generate", *KLEIN_64, "--set", 'prompt.t5="x"'],
         ["prompt.t5 is for FLUX.1's T5 encoder"]),
    Case("flux2: negative prompt on a distilled model", lambda c: ["generate", *KLEIN_64, "--negative-prompt", "blur"],
         ["prompt.negative", "distilled runs without CFG", "klein-base"]),
    Case("flux2: --image without --mask", lambda c: ["generate", *KLEIN_64, "--image", _rgb(c, "photo.png")],
         ["--image without --mask", "no FLUX.2 img2img", "--reference"]),
    Case("flux2: a FLUX.1 LoRA", lambda c: ["generate", *KLEIN_64, "--lora", _flux1_lora(c)],
         ["flux1-lora.safetensors", "is a FLUX.1 LoRA but the model is FLUX.2"]),
]
CASES += FLUX2_CASES


def _plain_png(ctx: Ctx) -> Path:
    from PIL import Image

    path = ctx.tmp / "plain.png"
    Image.new("RGB", (16, 16), "blue").save(path)
    return path


@pytest.fixture(scope="module")
def rendered_png(tiny_folders, tmp_path_factory) -> Path:
    from localflux.cli import main

    out = tmp_path_factory.mktemp("png")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["generate", "--model", str(tiny_folders["schnell"]), *TINY_64[2:], "--out", str(out)]) == 0
    return next(out.glob("*.png"))


def snapshot(root: Path) -> dict[str, str]:
    """Every file's sha256 and every folder (an empty output folder left behind counts as written)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
            for p in sorted(root.rglob("*")) if p.is_file() or p.is_dir()}


def invoke(argv: list, cwd: Path, monkeypatch) -> tuple[int, str, str]:
    from localflux.cli import main

    monkeypatch.chdir(cwd)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def test_at_least_25_distinct_classes():
    assert len({case.name for case in CASES}) == len(CASES) >= 25


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input(case, tmp_path, tiny_folders, rendered_png, monkeypatch):
    ctx = Ctx(tmp_path, tiny_folders, rendered_png)
    argv = case.setup(ctx)
    for key, value in {**case.env, **ctx.env}.items():
        monkeypatch.setenv(key, str(value))
    before = snapshot(tmp_path)
    code, out, err = invoke(argv, tmp_path, monkeypatch)
    lines = err.strip().splitlines()
    print(f"[{case.name}] {err.strip()}")  # the whole catalogue of messages: pytest -s -k test_bad_input
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("localflux: error: "), err
    assert "Traceback" not in err and out == ""
    for fragment in case.expect:
        assert fragment in lines[0], (fragment, lines[0])
    after = snapshot(tmp_path)
    if case.empty_folder_ok:
        after = {k: v for k, v in after.items() if v != "folder" or k in before}
    assert after == before, "a file was written or changed"
    for name in case.never:
        assert not (tmp_path / name).exists(), f"{name} exists: code in a pickle ran"


def test_paths_in_a_recipe_are_never_written_to(tmp_path, tiny_folders, rendered_png, monkeypatch):
    victim = tmp_path / "victim"
    ctx = Ctx(tmp_path, tiny_folders, rendered_png)
    png = ctx.png_with_recipe(_recipe_set("output.dir", str(victim)))
    (tmp_path / "work").mkdir()
    code, out, err = invoke(["replay", png, "--no-progress"], tmp_path / "work", monkeypatch)
    assert code == 0, err
    assert not victim.exists() and (tmp_path / "work" / out.strip()).parent == tmp_path / "work" / "replays"


def test_error_messages_are_one_line_whatever_the_exception_says(run_cli, monkeypatch):
    from localflux.commands import generate
    from localflux.errors import ModelSourceError

    def boom(args):
        raise ModelSourceError("could not load 'x':\n  line two\n\nline three")

    monkeypatch.setattr(generate, "run", boom)  # the parser binds generate.run when main() builds it
    code, out, err = run_cli("generate")
    assert code == 2 and err == "localflux: error: could not load 'x': line two line three\n"


def test_ctrl_c_outside_a_batch_exits_130_with_one_line(run_cli, monkeypatch):
    from localflux.commands import generate

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(generate, "run", interrupted)
    assert run_cli("generate") == (130, "", "localflux: interrupted\n")
