"""localflux: FLUX.1 [schnell] and [dev] on your own GPU, through diffusers.

Public API::

    import localflux
    results = localflux.generate("configs/schnell.toml")          # or a dict, or a Config
    results[0].image, results[0].seed, results[0].recipe, results[0].path
    from localflux.replay import replay
    replay("renders/0001-s42.png", verify=True).identical

Heavy libraries (torch, diffusers) load on first use, so ``import localflux`` is cheap.
"""

import importlib

from .errors import (
    ConfigError,
    DeviceError,
    LocalFluxError,
    LoraError,
    ModelSourceError,
    OutputError,
    RecipeError,
    UpscaleError,
    WeightsMismatchError,
)

__version__ = "0.1.0"

__all__ = [
    "Config",
    "ConfigError",
    "DeviceError",
    "LocalFluxError",
    "LoraError",
    "ModelSourceError",
    "OutputError",
    "RecipeError",
    "Result",
    "UpscaleError",
    "WeightsMismatchError",
    "generate",
    "load_config",
]

_LAZY = {
    "generate": ("pipeline", "generate"),
    "Result": ("pipeline", "Result"),
    "load_config": ("config", "load_config"),
    "Config": ("config", "Config"),
}


def __getattr__(name):
    if name in _LAZY:
        module_name, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module_name}", __name__), attr)
    raise AttributeError(f"module 'localflux' has no attribute {name!r}")
