"""``localflux doctor``: what this machine can run, and where weights are looked for."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("doctor", help="show device, memory, dtype support and weight locations")
    parser.set_defaults(func=run)


def run(args) -> int:
    import os

    from ..device import memory_summary, resolve_placement
    from ..hashing import cache_dir

    rows = memory_summary()
    placement = resolve_placement()
    rows.append(("default device", f"{placement.device}, {placement.dtype}"))
    try:
        from huggingface_hub import constants

        rows.append(("hugging face cache", str(constants.HF_HUB_CACHE)))
        rows.append(("hub offline", str(constants.HF_HUB_OFFLINE)))
    except ImportError:  # huggingface_hub is a dependency; this only guards odd installs
        pass
    rows.append(("HF_TOKEN set", "yes" if os.environ.get("HF_TOKEN") else "no (needed for FLUX.1-dev downloads)"))
    rows.append(("hash cache", str(cache_dir())))
    rows += _upscaler_rows()
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


def _upscaler_rows() -> list[tuple[str, str]]:
    try:
        from ..upscale.registry import weights_dir
    except ImportError:  # the upscale stage is optional
        return []
    return [("upscaler weights", str(weights_dir()))]
