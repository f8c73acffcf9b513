"""``localflux generate``: render images from a config file and/or flags."""

from __future__ import annotations

import argparse

from ..dtypes import DTYPES, dtype_option

# flag -> dotted config key; precedence: preset < config file < these flags < --set
FLAG_KEYS = {
    "model": "model.source",
    "base": "model.base",
    "device": "model.device",
    "dtype": "model.dtype",
    "prompt": "prompt.subject",
    "negative_prompt": "prompt.negative",
    "steps": "sampling.steps",
    "guidance": "sampling.guidance",
    "true_cfg": "sampling.true_cfg",
    "max_sequence_length": "sampling.max_sequence_length",
    "seed": "sampling.seed",
    "count": "sampling.count",
    "batch_size": "sampling.batch_size",
    "width": "size.width",
    "height": "size.height",
    "megapixels": "size.megapixels",
    "aspect": "size.aspect",
    "out": "output.dir",
    "offload": "memory.offload",
    "lora_fuse": "lora_options.fuse",
    "memory": "memory.plan",
    "image": "input.image",
    "mask": "input.mask",
    "strength": "input.strength",
    "content_credentials": "output.content_credentials",
    "control": "input.control",
    "control_kind": "input.control_kind",
    "redux_model": "model.redux",
    "redux_scale": "input.redux_scale",
    "depth_model": "model.depth",
}


def add_render_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by every command that renders from a config (generate, sweep), shown in groups in --help."""
    parser.add_argument("--config", "-c", metavar="FILE", help="TOML config file (see configs/)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key, e.g. --set sampling.steps=8 or --set speed.compile=... "
                             "(repeatable; wins over everything)")
    model = parser.add_argument_group("model")
    model.add_argument("--model", metavar="SRC", help="hub id, diffusers folder, single-file checkpoint, or 'tiny'")
    model.add_argument("--base", metavar="SRC", help="folder or hub id with VAE/text encoders for a single-file --model")
    model.add_argument("--device", metavar="DEV", help="auto (default), cpu, cuda, cuda:N or mps")
    model.add_argument("--dtype", type=dtype_option, choices=DTYPES, help="precision (default auto: bf16 on GPUs)")
    prompt = parser.add_argument_group("prompt")
    prompt.add_argument("--prompt", "-p", metavar="TEXT", help="the subject of the prompt (prompt.subject)")
    prompt.add_argument("--negative-prompt", metavar="TEXT", help="negative prompt (needs --true-cfg > 1)")
    prompt.add_argument("--max-sequence-length", type=int, help="T5 tokens (schnell 256, dev 512)")
    sampling = parser.add_argument_group("sampling")
    sampling.add_argument("--steps", type=int)
    sampling.add_argument("--guidance", type=float, help="distilled guidance (dev; schnell ignores it)")
    sampling.add_argument("--true-cfg", type=float, help="true classifier-free guidance scale (> 1 with a negative prompt)")
    sampling.add_argument("--seed", type=int, help="first seed; image k uses seed+k (default: random, shown)")
    sampling.add_argument("--count", "-n", type=int, help="number of images")
    sampling.add_argument("--batch-size", type=int, help="images per forward pass (default 1: exact per-seed images)")
    size = parser.add_argument_group("size")
    size.add_argument("--width", type=int)
    size.add_argument("--height", type=int)
    size.add_argument("--megapixels", type=float, help="size by area: 1 MP = 1024x1024")
    size.add_argument("--aspect", metavar="W:H", help="aspect ratio with --megapixels, e.g. 3:4 or 16:9")
    add_input_options(parser)
    memory = parser.add_argument_group("memory (docs/memory.md)")
    memory.add_argument("--offload", choices=["none", "model", "group", "sequential", "resident"],
                        help="offload mode for smaller GPUs (docs/memory.md)")
    memory.add_argument("--memory", choices=["auto", "manual"],
                        help="auto: pick the fastest memory plan that fits this GPU, print and record it")
    lora = parser.add_argument_group("LoRA")
    lora.add_argument("--lora", action="append", metavar="PATH[:SCALE]",
                      help="apply a LoRA at SCALE (default 1, negative allowed); repeat to stack; "
                           "replaces the config file's [[lora]] entries")
    lora.add_argument("--lora-fuse", choices=["auto", "fused", "unfused"],
                      help="merge LoRAs into the weights or keep separate adapters (default auto)")
    output = parser.add_argument_group("output")
    output.add_argument("--out", "-o", metavar="DIR", help="output folder (default renders/)")
    output.add_argument("--content-credentials", action="store_const", const=True, default=None,
                        help="sign each PNG with C2PA Content Credentials (needs localflux[c2pa]; docs/provenance.md)")
    parser.add_argument_group("speed", "[speed] keys in a config or with --set speed.KEY=VALUE (docs/speed.md)")


def add_input_options(parser: argparse.ArgumentParser) -> None:
    """``[input]`` flags (docs/images.md): image-conditioned tasks."""
    group = parser.add_argument_group("inputs (docs/images.md)")
    group.add_argument("--image", metavar="FILE", help="start from this picture (img2img; with --mask: inpaint)")
    group.add_argument("--mask", metavar="FILE", help="white = repaint (inpaint, FLUX.1 Fill)")
    group.add_argument("--strength", type=float, help="0 < s <= 1: how much of --image is repainted "
                                                      "(default: the pipeline's, 0.6; Fill 1.0)")
    group.add_argument("--outpaint", metavar="L,T,R,B", help="extend --image by these pixels on each side")
    group.add_argument("--reference", action="append", metavar="FILE",
                       help="a reference image (repeatable; FLUX.2: each one a reference, FLUX.1 Kontext: stitched "
                            "side by side)")
    group.add_argument("--control", metavar="FILE",
                       help="control picture for a FLUX.1 Depth/Canny model or control LoRA (see --control-kind)")
    group.add_argument("--control-kind", choices=["map", "canny", "depth"],
                       help="map: --control is a ready depth/edge map (default); canny: edges computed from a photo; "
                            "depth: a depth map estimated from a photo (needs --depth-model)")
    group.add_argument("--depth-model", metavar="SRC", help="a local Depth Anything model for --control-kind depth")
    group.add_argument("--redux", action="append", metavar="FILE",
                       help="vary this image with a FLUX.1 Redux prior (repeat: embeddings summed)")
    group.add_argument("--redux-model", metavar="SRC", help="the FLUX.1 Redux prior (a diffusers folder or hub id)")
    group.add_argument("--redux-scale", type=float, help="scale of the Redux embeddings (default 1)")


def input_flags(args) -> dict:
    """The list-valued ``[input]`` flags, parsed (``--outpaint``, ``--reference``)."""
    from ..config import ConfigError

    flags = {}
    text = getattr(args, "outpaint", None)
    if text is not None:
        parts = [p.strip() for p in text.replace(" ", ",").split(",") if p.strip()]
        try:
            values = [int(p) for p in parts]
        except ValueError:
            values = None
        if values is None or len(values) != 4:
            raise ConfigError(f"--outpaint {text!r} must be four whole numbers LEFT,TOP,RIGHT,BOTTOM (pixels to add), "
                              "e.g. --outpaint 0,0,256,0")
        flags["input.outpaint"] = values
    if getattr(args, "reference", None):
        flags["input.references"] = list(args.reference)
    if getattr(args, "redux", None):
        flags["input.redux"] = list(args.redux)
    return flags


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate", help="render images from a config file and/or flags",
        description="Render images. Prints the path of each image written, one per line.")
    add_render_options(parser)
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and plan; render nothing")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=run)


def config_from_args(args):
    from ..config import load_config

    flags = {key: getattr(args, name, None) for name, key in FLAG_KEYS.items()}
    flags.update(input_flags(args))
    if getattr(args, "lora", None):
        flags["lora"] = [parse_lora_option(text) for text in args.lora]
    return load_config(args.config, flags=flags, sets=args.sets)


_LORA_SUFFIXES = (".safetensors", ".sft", ".pt", ".ckpt", ".pth", ".bin")  # as localflux.lora.files reads


def parse_lora_option(text: str) -> dict:
    """``PATH[:SCALE]``: the last ``:`` followed by a number is the scale (``a:b.safetensors:-0.5``)."""
    from ..config import ConfigError

    path, sep, tail = text.rpartition(":")
    if sep and path:
        try:
            return {"path": path, "scale": float(tail)}
        except ValueError:
            if path.lower().endswith(_LORA_SUFFIXES):  # a LoRA file then ':': the tail was meant as its scale
                raise ConfigError(f"--lora {text!r}: scale {tail!r} is not a number; write PATH:SCALE, "
                                  "e.g. --lora loras/anna.safetensors:0.9") from None
            # else a colon inside the path (C:\loras\x.safetensors), no scale
    if not text:
        raise ConfigError("--lora needs a path, e.g. --lora loras/anna.safetensors:0.9")
    return {"path": text, "scale": 1.0}


def run(args) -> int:
    from .. import pipeline

    config = config_from_args(args)
    if args.dry_run:
        print(pipeline.describe(pipeline.plan(config)))
        return 0
    # each path as soon as its file is written: a run stopped by Ctrl-C has listed every image it saved
    pipeline.generate(config, progress=not args.no_progress, on_result=lambda result: print(result.path, flush=True))
    return 0
