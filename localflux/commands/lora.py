"""``localflux lora inspect|convert``: look into a LoRA file, or rewrite it in diffusers or kohya keys."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("lora", help="inspect a LoRA file or convert it to diffusers/kohya keys",
                                   description="Inspect or convert FLUX.1 LoRA files (no model needed).")
    actions = parser.add_subparsers(dest="lora_action", metavar="ACTION")
    inspect = actions.add_parser("inspect", help="format, tensors, rank, alpha, targets, trigger words, sha256")
    inspect.add_argument("path", help="a LoRA .safetensors (or .pt/.ckpt) file")
    inspect.add_argument("--json", action="store_true", help="print the summary as JSON")
    inspect.set_defaults(func=run_inspect)
    convert = actions.add_parser("convert", help="rewrite a LoRA in diffusers or kohya (BFL) keys",
                                 description="Rewrite a LoRA; the result renders the same image. "
                                             "kohya output carries .alpha tensors (read by kohya and ComfyUI).")
    convert.add_argument("path", help="the LoRA to convert")
    convert.add_argument("out", help="the .safetensors file to write (never overwritten)")
    convert.add_argument("--to", required=True, choices=["diffusers", "kohya"], help="target key layout")
    convert.set_defaults(func=run_convert)
    parser.set_defaults(func=lambda args: parser.error("choose an action: inspect PATH or convert PATH OUT --to FORMAT"))


def run_inspect(args) -> int:
    import json

    from ..lora.inspect import format_report, inspect_lora

    info = inspect_lora(args.path)
    print(json.dumps(info, indent=2) if args.json else format_report(info))
    return 0


def run_convert(args) -> int:
    from ..lora.rewrite import rewrite_lora

    print(rewrite_lora(args.path, args.to, args.out), flush=True)
    return 0
