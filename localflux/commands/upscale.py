"""``localflux upscale INPUT...``: Real-ESRGAN upscaling of existing images.

Parser only here; torch and the model load inside :func:`run`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..dtypes import DTYPES, dtype_option

DEFAULT_OUT = "upscaled"


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "upscale",
        help="upscale images with Real-ESRGAN (any scale 1 < s <= 8)",
        description=(
            "Upscale images with a Real-ESRGAN model: the network runs at its native scale, then Lanczos "
            "resamples to exactly round(w*s) x round(h*s).  Photos are read upright (EXIF orientation applied) "
            "and keep their ICC profile.  Outputs are PNG named <stem>-x<scale>.png, never overwriting; a "
            "localflux recipe in the input is kept and gains an upscale step.  See docs/upscale.md."
        ),
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, or folders of images, to upscale")
    parser.add_argument("--model", default=None, help="registry name (see 'localflux weights list') or a .safetensors/.pth path; default: realesrgan-x2plus for scale <= 2 if installed, else realesrgan-x4plus")
    parser.add_argument("--scale", type=float, default=2.0, help="output scale, 1 < S <= 8 (default 2)")
    parser.add_argument("--tile", type=int, default=None, help="core tile size in input pixels (default: from free memory)")
    parser.add_argument("--overlap", type=int, default=None, help="blended overlap per tile side in input pixels (default 32)")
    parser.add_argument("--alpha", default="model", choices=["model", "resize"],
                        help="an alpha channel goes through the network as grey (model, Real-ESRGAN's default) or is "
                             "Lanczos-resized (resize); default model")
    parser.add_argument("--device", default="auto", metavar="DEV", help="where the model runs: auto (default), cpu, cuda, cuda:N or mps")
    parser.add_argument("--dtype", default=None, type=dtype_option, choices=DTYPES,
                        help="precision, the same names as generate's --dtype (default auto: float16 on GPU, float32 on CPU)")
    parser.add_argument("--out", "-o", default=DEFAULT_OUT, metavar="DIR", help=f"output folder (default {DEFAULT_OUT}/)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar over tiles")
    parser.add_argument("--content-credentials", action="store_true",
                        help="sign each output with C2PA Content Credentials, the input as parent ingredient "
                             "(needs localflux[c2pa]; docs/provenance.md)")
    parser.add_argument("--source", metavar="TEXT", help="where the input image comes from (recorded in the recipe, "
                                                           "shown by inspect, in the C2PA ingredient)")
    parser.add_argument("--license", metavar="TEXT", help="the permission the input is used under (recorded like --source)")
    parser.add_argument("--no-label", action="store_true",
                        help="leave out the XMP AI-generation label (IPTC DigitalSourceType); see docs/provenance.md")
    detail = parser.add_argument_group("detail pass (docs/upscale.md)")
    detail.add_argument("--detail", type=float, default=0.0, metavar="S",
                        help="after Real-ESRGAN, a tiled FLUX img2img pass at strength 0 < S <= 0.6 (default 0: off)")
    detail.add_argument("--detail-model", metavar="SRC", help="the FLUX model of the detail pass (default: the model "
                                                              "in the image's recipe)")
    detail.add_argument("--detail-prompt", metavar="TEXT", help="prompt of the detail pass (default: the recipe's, "
                                                                "else a generic one)")
    detail.add_argument("--detail-steps", type=int, metavar="N", help="steps of the detail pass (default: the model's preset)")
    detail.add_argument("--detail-tile", type=int, default=1024, metavar="PX", help="tile side in pixels (default 1024)")
    detail.add_argument("--detail-overlap", type=int, default=128, metavar="PX", help="tile overlap in pixels (default 128)")
    detail.add_argument("--seed", type=int, help="seed of the detail pass (default: the recipe's, else 0)")
    parser.set_defaults(func=run)
    return parser


# What a folder input contributes: files with these suffixes (any case), hidden files skipped.
FOLDER_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".avif")


def _expand(inputs: list[str]) -> list[Path]:
    """Files as given; a folder stands for its images (not its sub-folders), sorted by name."""
    from ..errors import UpscaleError

    paths = []
    for text in inputs:
        path = Path(text)
        if not path.is_dir():
            paths.append(path)
            continue
        # ._IMG_0001.JPG (macOS resource forks) and .DS_Store look like images by suffix but are not
        found = sorted(p for p in path.iterdir()
                       if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in FOLDER_SUFFIXES)
        if not found:
            raise UpscaleError(f"folder {text!r} has no images ({', '.join(FOLDER_SUFFIXES)}; sub-folders are not searched)")
        paths.extend(found)
    return paths


def _validate_inputs(inputs: list[str]) -> list[Path]:
    """Every input decoded in full before anything is written: a corrupt or unsupported file
    later in the list must not leave the earlier outputs behind."""
    from ..upscale.images import read_picture

    paths = _expand(inputs)
    for path in paths:
        read_picture(path)  # raises UpscaleError naming the file; the pixels are read again when it is upscaled
    return paths


def _scale_label(scale: float) -> str:
    return f"x{scale:g}"


def run(args) -> int:
    from ..errors import UpscaleError
    from ..output import atomic_write_bytes, check_output_dir, ensure_output_dir, unique_path

    # Everything that can be checked cheaply is checked before any file is written.
    from ..upscale.stage import check_scale, choose_model

    from ..upscale.engine import pick_device

    scale = check_scale(args.scale)
    pick_device(args.device)  # an unknown or absent device, before weights are installed or files written
    if args.tile is not None and args.tile < 1:
        raise UpscaleError(f"--tile must be a positive number of pixels, not {args.tile}")
    if args.overlap is not None and args.overlap < 0:
        raise UpscaleError(f"--overlap must be 0 or more pixels, not {args.overlap}")
    check_output_dir(args.out)
    inputs = _validate_inputs(args.inputs)
    signer = None
    if args.content_credentials:
        from ..io.c2pa import Signer

        signer = Signer()  # the package and the local key, before any output is written
    details = [_detail_settings(args, path) for path in inputs] if args.detail else [None] * len(inputs)

    from ..upscale.stage import Upscaler, upscale_file

    upscaler = Upscaler.load(choose_model(args.model, scale), device=args.device, dtype=args.dtype)
    folder = ensure_output_dir(args.out)
    reserved: set[Path] = set()
    for path, detail in zip(inputs, details):
        notes = {k: v for k, v in (("source", args.source), ("license", args.license)) if v}
        data, record = upscale_file(path, upscaler, scale, tile=args.tile, overlap=args.overlap, alpha=args.alpha,
                                    progress=not args.no_progress, label=not args.no_label, notes=notes)
        if detail is not None:
            data = _detail_png(path, data, record, detail, args)
        target = unique_path(folder, f"{path.stem}-{_scale_label(scale)}", ".png", reserved)
        if signer is not None:
            from ..io.c2pa import sign_upscale

            data = sign_upscale(data, path, signer, target.name, **notes)
        atomic_write_bytes(target, data)
        reserved.add(target)
        print(
            f"localflux: {path} -> {target} ({record['model']} x{record['native_scale']}, tile {record['tile']}, "
            f"overlap {record['overlap']}, {record['tiles']} tiles, {record['device']} {record['dtype']})",
            file=sys.stderr,
        )
        print(target)
    return 0


def _detail_settings(args, path: Path) -> dict:
    """What the detail pass of ``path`` uses (checked before anything is written): model, prompts, seed."""
    from ..errors import ConfigError
    from ..upscale.detail import DEFAULT_PROMPT, MAX_DETAIL
    from ..upscale.images import read_picture
    from ..recipe import CHUNK_RECIPE as RECIPE_KEY

    import json

    if not 0 < args.detail <= MAX_DETAIL:
        raise ConfigError(f"--detail must be in (0, {MAX_DETAIL}], got {args.detail:g}")
    picture = read_picture(path)
    if picture.alpha is not None or picture.gray or picture.bits != 8:
        raise ConfigError(f"--detail works on 8-bit RGB pictures; {str(path)!r} has alpha, grey or 16-bit samples: "
                          "upscale it without --detail, or convert it to RGB first")
    try:
        recipe = json.loads(picture.text.get(RECIPE_KEY, "null"))
    except ValueError:
        recipe = None
    recipe = recipe if isinstance(recipe, dict) else {}
    recorded = recipe.get("config", {}).get("model", {}) if isinstance(recipe.get("config"), dict) else {}
    model = {"source": args.detail_model} if args.detail_model else \
        {k: recorded.get(k) for k in ("source", "base", "revision") if recorded.get(k)}
    if not model.get("source"):
        raise ConfigError(f"--detail needs --detail-model (a FLUX.1 [dev] or [schnell] model): {str(path)!r} has no "
                          "localflux recipe naming one")
    prompt = recipe.get("prompt") if isinstance(recipe.get("prompt"), dict) else {}
    text = args.detail_prompt
    prompts = {"clip": text or prompt.get("clip") or DEFAULT_PROMPT, "t5": text or prompt.get("t5") or DEFAULT_PROMPT}
    seed = args.seed if args.seed is not None else recipe.get("seed", 0)
    return {"model": model, "prompts": prompts, "seed": int(seed) if isinstance(seed, int) else 0}


def _detail_png(path: Path, data: bytes, record: dict, detail: dict, args) -> bytes:
    """The Real-ESRGAN result ``data`` with the detail pass applied and both steps recorded."""
    import io

    import numpy as np
    from PIL import Image

    from ..upscale.detail import detail_pass
    from ..upscale.images import add_upscale_step, encode_png, read_picture

    picture = read_picture(path)
    with Image.open(io.BytesIO(data)) as opened:
        upscaled = opened.convert("RGB")
    image, step = detail_pass(upscaled, model=detail["model"], strength=args.detail, seed=detail["seed"],
                              prompts=detail["prompts"], steps=args.detail_steps, tile=args.detail_tile,
                              overlap=args.detail_overlap, device=args.device, progress=not args.no_progress)
    text = add_upscale_step(add_upscale_step(picture.text, record), step)
    return encode_png(np.asarray(image), 8, text, picture.icc)
