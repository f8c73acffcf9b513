"""The ``localflux`` command: a thin dispatcher over one module per subcommand.

Each module in ``localflux.commands`` exposes ``add_parser(subparsers)`` and ``run(args) -> int``.
Parsers are built without importing torch or diffusers (``--help`` stays instant); the heavy
imports happen inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from .errors import LocalFluxError

# Order is the order shown in --help.
COMMAND_MODULES = [
    "generate",
    "replay",
    "doctor",
    "train_lora",
]


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="localflux",
        description="Run FLUX.1 [schnell] and [dev] locally: config-driven, seed-locked, replayable renders.",
    )
    parser.add_argument("--version", action="version", version=f"localflux {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show library log messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"localflux.commands.{name}")
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:
        _quiet_libraries()
    try:
        return int(args.func(args) or 0)
    except LocalFluxError as exc:
        print(f"localflux: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("localflux: interrupted", file=sys.stderr)
        return 130


def _quiet_libraries() -> None:
    # Must happen before transformers/diffusers are imported: they read these at import time.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    for name in ("diffusers", "transformers", "accelerate", "peft", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)


if __name__ == "__main__":
    sys.exit(main())
