"""``localflux bench``: time localflux against plain diffusers (full-size random weights on a GPU)."""

from __future__ import annotations

import sys

# kept in step with bench.run.MODES (tests check); listed here so --help needs no torch import
MODE_NAMES = ["eager", "fast", "fast-cudnn", "fast-flash", "fast-efficient", "compile", "fp8-storage", "fp8",
              "fp8-fast", "cap24-model", "cap24-resident", "cap24-auto", "cap12-group", "cap12-auto", "upscale"]


GPU_RESULTS = "benchmarks/results/results.json"


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench", help="benchmark a localflux mode against plain diffusers in the same process",
        description="Build full-size FLUX with random weights on the GPU, time the plain diffusers FluxPipeline "
                    "baseline and one localflux mode, print the ratio and append a record to the results file. "
                    "See docs/speed.md.")
    parser.add_argument("--model", choices=["dev", "schnell", *FLUX2_MODELS], default="dev",
                        help="FLUX.1 dev/schnell, or a FLUX.2 model (" + ", ".join(FLUX2_MODELS) + ")")
    parser.add_argument("--mode", default="fast", metavar="MODE", help=f"one of: {', '.join(MODE_NAMES)}")
    parser.add_argument("--upscaler", default="realesrgan-x4plus", metavar="NAME_OR_FILE",
                        help="--mode upscale: the upscaler timed (default realesrgan-x4plus; 1024 px input in fp16, "
                             "--tiny: 32 px in fp32 on the CPU)")
    parser.add_argument("--tiny", action="store_true", help="the same code paths on the tiny model on the CPU (seconds)")
    parser.add_argument("--repeats", type=int, help="timed images per side (default 5; --tiny 2)")
    parser.add_argument("--warmup", type=int, help="untimed images first (default 1)")
    parser.add_argument("--steps", type=int, help="default: the preset's (28 dev, 4 schnell, 4 klein, 50 klein base "
                                                   "and flux2-dev; --tiny 2)")
    parser.add_argument("--width", type=int, help="image width (--mode upscale: the square input side)")
    parser.add_argument("--height", type=int)
    parser.add_argument("--results", metavar="FILE",
                        help="JSON list the record is appended to (default: benchmarks/results/results.json; "
                             "--tiny appends nowhere unless this is given, so CPU runs never mix with GPU figures)")
    parser.add_argument("--dry-run", action="store_true",
                        help="build every full-size config on the meta device (no memory) and print parameter counts")
    parser.set_defaults(func=run)


FLUX2_MODELS = ("klein-4b", "klein-base-4b", "klein-9b", "klein-base-9b", "flux2-dev")  # families/flux2/footprint.py


# the smallest value each number flag takes (a 0 would otherwise silently mean "the default")
MINIMUMS = {"repeats": 1, "warmup": 0, "steps": 1, "width": 16, "height": 16}


def run(args) -> int:
    from ..errors import ConfigError

    if args.mode not in MODE_NAMES:
        raise ConfigError(f"bench mode {args.mode!r} is not known; one of: {', '.join(MODE_NAMES)}")
    for name, least in MINIMUMS.items():
        if getattr(args, name) is not None and getattr(args, name) < least:
            raise ConfigError(f"--{name} must be at least {least}, got {getattr(args, name)}")
    if args.dry_run:
        from ..bench.models import dry_run
        from ..families.registry import FAMILIES

        for preset in ("dev", "schnell"):
            counts = dry_run(preset)
            print(f"FLUX.1-{preset}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items() if k != "footprint"))
        flux2 = FAMILIES.get("flux2") if hasattr(FAMILIES, "get") else next(f for f in FAMILIES if f.name == "flux2")
        for name in flux2.sized_models():
            fp = flux2.sized_footprint(name)  # transformer, VAE and Qwen3 built on the meta device
            text = "text_encoder (Mistral, published size)" if name == "flux2-dev" else "text_encoder"
            print(f"FLUX.2-{name}: transformer {fp.transformer:,}, {text} {fp.t5:,}, vae {fp.vae:,}")
        return 0
    from ..bench.run import print_record, run_bench, settings_from_args

    command = "localflux " + " ".join(sys.argv[1:]) if sys.argv[0].endswith(("localflux", "__main__.py")) else \
        "localflux bench " + " ".join(_argv(args))
    results = args.results or (None if args.tiny else GPU_RESULTS)
    if args.mode == "upscale":
        from ..bench.upscale import run_upscale_bench

        record = run_upscale_bench(upscaler=args.upscaler, size=args.width or (32 if args.tiny else 1024),
                                   tiny=args.tiny, warmup=args.warmup if args.warmup is not None else 1,
                                   repeats=args.repeats or (2 if args.tiny else 10), command=command,
                                   results_path=results)
    else:
        record = run_bench(settings_from_args(args), command, results)
    print_record(record)
    if results is not None:
        print(f"appended to {results}", file=sys.stderr)
    return 0


def _argv(args) -> list[str]:
    parts = [f"--model {args.model}" if args.mode != "upscale" else f"--upscaler {args.upscaler}",
             f"--mode {args.mode}"] + (["--tiny"] if args.tiny else [])
    for name in ("repeats", "warmup", "steps", "width", "height"):
        if getattr(args, name) is not None:
            parts.append(f"--{name} {getattr(args, name)}")
    return parts
