"""``localflux replay``: render an image again from the recipe embedded in it."""

from __future__ import annotations

import sys


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "replay", help="re-render an image from its embedded recipe",
        description="Re-render a localflux PNG from its recipe. With --verify, compare with the file "
                    "and exit 1 if any pixel differs.")
    parser.add_argument("image", help="a PNG written by localflux")
    parser.add_argument("--verify", action="store_true", help="compare the new render with the image; exit 1 on a difference")
    parser.add_argument("--out", "-o", metavar="DIR", help="save the new render here (default: replays/, or nothing with --verify)")
    parser.add_argument("--device", metavar="DEV", help="render on another device than the recorded one (pixels may differ)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..replay import replay

    out = args.out if args.out or args.verify else "replays"
    result = replay(args.image, out_dir=out, device=args.device, progress=not args.no_progress)
    if result.path is not None:
        print(result.path, flush=True)
    if not args.verify:
        return 0
    if result.identical:
        print(f"identical: {args.image} was reproduced pixel for pixel", file=sys.stderr)
        return 0
    print(f"different: {args.image} differs by up to {result.max_difference} levels in "
          f"{result.differing_pixels} pixels", file=sys.stderr)
    return 1
