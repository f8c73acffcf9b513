"""The ``localflux`` command: a thin dispatcher over one module per subcommand.

Each module in ``localflux.commands`` exposes ``add_parser(subparsers)`` and ``run(args) -> int``.
Parsers are built without importing torch or diffusers (``--help`` stays instant); the heavy
imports happen inside ``run``.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib
import logging
import os
import sys

from . import __version__
from .errors import LocalFluxError, one_line

# Order is the order shown in --help.
COMMAND_MODULES = [
    "generate",
    "replay",
    "inspect",
    "upscale",
    "weights",
    "batch",
    "doctor",
    "lora",
    "sweep",
    "bench",
    "train_lora",
]


class _Parser(argparse.ArgumentParser):
    """Bad flags end like every other user error: one line on stderr, exit 2 (no usage dump)."""

    def error(self, message: str):
        self.exit(2, f"localflux: error: {self.prog}: {one_line(message)} (see {self.prog} --help)\n")

    def unrecognized(self, extras: list[str]):
        """Unknown arguments, reported by the (sub)command they were given to, with the nearest known flag."""
        flags = [s for action in self._actions for s in action.option_strings if s.startswith("--")]
        hints = [f"{extra} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(extra.split("=")[0], flags, 1))
                 else extra for extra in extras]
        self.error(f"unrecognized arguments: {' '.join(hints)}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="localflux",
        description="Run FLUX.1 [schnell] and [dev] locally: config-driven, seed-locked, replayable renders.",
    )
    parser.add_argument("--version", action="version", version=f"localflux {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show library log messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"localflux.commands.{name}")
        module.add_parser(subparsers)
    parser.set_defaults(command_parsers=subparsers.choices)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if args.command is None:
        parser.error("no command given; start with `localflux generate --config configs/demo.toml`")
    if extras:
        sub = args.command_parsers[args.command]
        action = next((getattr(args, a) for a in vars(args) if a.endswith("_action") and getattr(args, a)), None)
        sub = _action_parser(sub, action) or sub
        sub.unrecognized(extras)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:
        _quiet_libraries()
    if getattr(args, "no_progress", False):
        _hide_library_progress_bars()
    try:
        with _localflux_messages(args.verbose):
            return int(args.func(args) or 0)
    except LocalFluxError as exc:
        print(f"localflux: error: {one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("localflux: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout was closed early (`localflux batch ... | head`): stop quietly like other CLI tools.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 1


def _action_parser(parser: argparse.ArgumentParser, action: str | None):
    """The parser of ``localflux lora inspect`` etc. (a command's own sub-command), if one was given."""
    for choice in parser._actions:
        if isinstance(choice, argparse._SubParsersAction) and action in choice.choices:
            return choice.choices[action]
    return None


class _StderrLines(logging.Handler):
    """localflux's log records as ``localflux: ...`` lines on the current ``sys.stderr``.

    Looked up at emit time rather than bound once, so redirected stderr (tests, embedding apps) works.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm  # boundary: not on the --help path; its write() keeps an open progress bar intact

            prefix = "localflux: warning: " if record.levelno >= logging.WARNING else "localflux: "
            tqdm.write(prefix + one_line(record.getMessage()), file=sys.stderr)
        except Exception:  # logging must never take the command down
            self.handleError(record)


@contextlib.contextmanager
def _localflux_messages(verbose: bool):
    # Library modules log (silent when localflux is imported by a script); the command shows the
    # INFO status lines (seed, size, plan, LoRAs) and warnings, and restores the logger afterwards.
    logger = logging.getLogger("localflux")
    handler, saved = _StderrLines(), (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def _hide_library_progress_bars() -> None:
    # --no-progress also means the loaders' own bars ("Loading pipeline components", "Loading weights").
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    # boundary: the heavy libraries load only once a command runs, never for --help
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def _quiet_libraries() -> None:
    # Must happen before transformers/diffusers are imported: they read these at import time.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    for name in ("diffusers", "transformers", "accelerate", "peft", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)


if __name__ == "__main__":
    sys.exit(main())
