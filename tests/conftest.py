"""Shared fixtures: tiny models on disk, a CLI runner, and settings that keep CPU tests fast and exact."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Tiny models on a busy 2-core box ran up to 100x slower with two threads.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["HF_HUB_OFFLINE"] = "1"  # tests never reach a hub
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")


def pytest_configure(config):
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LOCALFLUX_CACHE", str(tmp_path_factory.getbasetemp() / "lfcache"))
    # upscaler weights installed by tests never land in the checkout's weights/ folder
    monkeypatch.setenv("LOCALFLUX_WEIGHTS", str(tmp_path_factory.getbasetemp() / "upscalers"))
    # the local C2PA signing key (localflux.io.c2pa) is made in the user data folder: a test one here
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.getbasetemp() / "xdg"))


@pytest.fixture(scope="session")
def tiny_folders(tmp_path_factory) -> dict[str, Path]:
    """The tiny dev-like and schnell-like models saved as ordinary diffusers folders."""
    from localflux.families.flux1.tiny import save_tiny_model

    root = tmp_path_factory.mktemp("models")
    folders = {}
    for variant in ("schnell", "dev"):
        folders[variant] = root / f"tiny-{variant}"
        save_tiny_model(variant, folders[variant])
    return folders


@pytest.fixture(scope="session")
def shape_folders(tmp_path_factory) -> dict[str, Path]:
    """Tiny FLUX models of other shapes than ``tiny`` (tests/shape_models.py), as diffusers folders."""
    from shape_models import SHAPES, save_shape_model

    root = tmp_path_factory.mktemp("shapes")
    folders = {}
    for name in SHAPES:
        folders[name] = root / name
        save_shape_model(name, folders[name])
    return folders


@pytest.fixture
def run_cli(monkeypatch):
    """Run ``localflux ARGS`` in this process; returns (exit code, stdout, stderr)."""

    def run(*args: str, cwd: Path | None = None):
        from localflux.cli import main

        if cwd is not None:
            monkeypatch.chdir(cwd)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(a) for a in args])
        return code, out.getvalue(), err.getvalue()

    return run


def run_subprocess(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 120):
    """Run ``python -m localflux ARGS`` in a fresh process (real exit codes and tracebacks)."""
    full_env = dict(os.environ, **(env or {}))
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "localflux", *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def pixels(path_or_image):
    import numpy as np
    from PIL import Image

    if isinstance(path_or_image, (str, Path)):
        with Image.open(path_or_image) as image:
            return np.asarray(image.convert("RGB"), dtype=np.int16)
    return np.asarray(path_or_image.convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory, request):
    """A weights folder with the test module's upscalers installed once per module: ``MODEL`` and any
    ``EXTRA_MODELS`` named at the module's top level."""
    from upscale_common import install_into

    names = (request.module.MODEL, *getattr(request.module, "EXTRA_MODELS", ()))
    folder = tmp_path_factory.mktemp("weights")
    mp = pytest.MonkeyPatch()
    install_into(folder, mp, *names)
    mp.undo()
    return folder


@pytest.fixture(scope="module")
def upscaler(weights_dir, request):
    """The test module's ``MODEL``, loaded once on the CPU from ``weights_dir``."""
    from localflux.upscale.stage import Upscaler

    mp = pytest.MonkeyPatch()
    mp.setenv("LOCALFLUX_WEIGHTS", str(weights_dir))
    loaded = Upscaler.load(request.module.MODEL, device="cpu")
    mp.undo()
    return loaded


@pytest.fixture
def stop_render_at(monkeypatch):
    """``stop_render_at(n)``: the n-th call of ``pipeline.render_batch`` raises KeyboardInterrupt (Ctrl-C mid-run)."""

    def arm(n: int) -> None:
        from localflux import pipeline

        real, calls = pipeline.render_batch, []

        def render_batch(*args, **kwargs):
            calls.append(1)
            if len(calls) == n:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        monkeypatch.setattr(pipeline, "render_batch", render_batch)

    return arm
