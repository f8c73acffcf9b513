"""``localflux train-lora``: train a subject LoRA from one config file.

Works the same under ``accelerate launch -m localflux train-lora ...`` (several GPUs, or several
CPU processes on gloo): accelerate's environment tells the trainer its rank.
"""

from __future__ import annotations


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train-lora", help="train a subject LoRA from photos and captions",
        description="Train a LoRA on the FLUX transformer from one config file (see configs/train-subject.toml). "
                    "Prints the path of the finished LoRA.")
    parser.add_argument("--config", "-c", metavar="FILE", required=True, help="training config (TOML)")
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's last complete checkpoint")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set training.steps=500 (repeatable)")
    parser.add_argument("--dry-run", action="store_true", help="check the config and dataset, print the plan, train nothing")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..train.config import load_train_config
    from ..train.trainer import describe_run, preflight, train

    config = load_train_config(args.config, sets=args.sets)
    if args.dry_run:
        print(describe_run(preflight(config, resume=args.resume)))
        return 0
    try:
        result = train(config, resume=args.resume, progress=not args.no_progress)
    except KeyboardInterrupt:
        _interrupted(args, config)
        return 130
    if result.main_process:  # one line per file, not one per process
        print(result.lora_path, flush=True)
        if result.kohya_path is not None:
            print(result.kohya_path, flush=True)
    return 0


def _interrupted(args, config) -> None:
    """Ctrl-C: one line saying what is kept and the command that goes on from there."""
    import sys
    from pathlib import Path

    from ..train.checkpoint import latest_checkpoint

    last = latest_checkpoint(Path(config.output.dir))
    if last is None:
        hint = "no checkpoint was written yet; run the same command again to start over (cached latents are reused)"
    else:
        hint = f"{last.name} is kept; add --resume to continue from it: localflux train-lora --config {args.config} --resume"
    print(f"localflux: interrupted; {hint}", file=sys.stderr)
