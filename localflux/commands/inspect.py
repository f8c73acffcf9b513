"""``localflux inspect IMAGE``: the recipe, AI label and Content Credentials of an image.

Exit codes: 0 the image has a localflux recipe; 1 it has none (the label and credentials are still
shown); 2 not an image, missing, or a damaged recipe (one line). Parser only here.
"""

from __future__ import annotations


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "inspect", help="show how an image was made: recipe, AI label, Content Credentials",
        description="Show an image's localflux recipe (prompt, seed, size, model and LoRA hashes, inputs, upscale "
                    "steps, decisions), its XMP AI-generation label and the validation state of its C2PA Content "
                    "Credentials. Exit 0 with a recipe, 1 without one, 2 for a file that is not a readable image. "
                    "See docs/provenance.md.")
    parser.add_argument("image", help="an image file (any PNG; JPEG/WebP show label and credentials only)")
    parser.add_argument("--json", action="store_true", help="print one JSON object (for scripts)")
    parser.set_defaults(func=run)


def run(args) -> int:
    import json

    from ..inspect import format_text, inspect_image

    info = inspect_image(args.image)
    print(json.dumps(info, indent=1, sort_keys=True, ensure_ascii=False) if args.json else format_text(info))
    return 0 if info["recipe"] is not None else 1
