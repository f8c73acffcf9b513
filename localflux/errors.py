"""Typed errors for problems a user can fix.

Every error here carries one clear sentence (what is wrong, which file or key, what to do).
The CLI prints it on one line and exits with code 2; anything else escaping is a bug and
keeps its traceback.
"""

EXIT_USER_ERROR = 2


class LocalFluxError(Exception):
    """Base class: a problem with the user's input, files or machine, not a bug."""

    exit_code = EXIT_USER_ERROR


class ConfigError(LocalFluxError):
    """A config file, flag or override is malformed or out of range."""


class ModelSourceError(LocalFluxError):
    """A model source (hub id, folder, single file) cannot be found or loaded."""


class WeightsMismatchError(LocalFluxError):
    """A weight file differs from the one a recipe was rendered with."""


class RecipeError(LocalFluxError):
    """An image carries no readable localflux recipe, or one this version cannot replay."""


class OutputError(LocalFluxError):
    """An output path cannot be written (parent is a file, disk full, ...)."""


class DeviceError(LocalFluxError):
    """The requested device or precision is not available on this machine."""


class LoraError(LocalFluxError):
    """A LoRA file is missing, unsupported, or does not fit the model."""


class UpscaleError(LocalFluxError):
    """An upscaler model or an input image cannot be used."""


class DatasetError(LocalFluxError):
    """A training dataset (images, captions, trigger word) cannot be used; found before any training step."""


class TrainingError(LocalFluxError):
    """A training run cannot start or resume (run folder, checkpoint, optimizer or hardware)."""


class InputImageError(LocalFluxError):
    """An input image (img2img, mask, reference, upscale input) is missing, not an image, damaged or too large."""
