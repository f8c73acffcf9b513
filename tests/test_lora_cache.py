"""The model cache hands out clean bases; the LoRA stage reaches models only through its handle (lora/state.py)."""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import lora_files as lf
from conftest import pixels, run_subprocess
from localflux import pipeline
from localflux.lora.state import BROKEN, FUSED, UNFUSED, LoraState
from localflux.model_cache import MODELS, ModelCache

BASE = {"model": {"source": "tiny", "device": "cpu"}, "prompt": {"subject": "a red cat"},
        "size": {"width": 64, "height": 64}, "sampling": {"seed": 3}}
LORA_PACKAGE = Path(pipeline.__file__).parent / "lora"


def render(lora=None, fuse="auto"):
    config = dict(BASE, lora=[{"path": str(lora)}] if lora else [], lora_options={"fuse": fuse})
    return pixels(pipeline.generate(config, save=False, progress=False)[0].image)


def has_adapters(model) -> bool:
    parts = (model.pipe.transformer, model.pipe.text_encoder)
    return any(getattr(part, "peft_config", None) for part in parts) or any(
        hasattr(module, "lora_A") for part in parts for module in part.modules())


def fresh_process_render(tmp_path) -> np.ndarray:
    done = run_subprocess("generate", "--model", "tiny", "--device", "cpu", "--prompt", "a red cat", "--seed", "3",
                          "--width", "64", "--height", "64", "--no-progress", "--out", tmp_path / "fresh")
    assert done.returncode == 0, done.stderr
    return pixels(done.stdout.strip())


@pytest.fixture
def kohya(tmp_path):
    return lf.write_kohya_file(tmp_path / "film.safetensors")


@pytest.mark.parametrize("fuse", ["fused", "unfused"])
def test_a_render_after_a_lora_render_is_a_fresh_process_render(tmp_path, kohya, fuse):
    """Two renders in one process, the first with a LoRA: the second (no LoRA) gets exactly the pixels of a
    fresh process, from a model the cache returns with no adapters and the base weights."""
    from localflux.families.flux1.tiny import build_tiny_pipeline

    MODELS.clear()
    try:
        with_lora = render(kohya, fuse)
        lora_model = pipeline.load(pipeline.plan(pipeline.coerce_config(dict(BASE, lora=[{"path": str(kohya)}],
                                                                          lora_options={"fuse": fuse}))))
        assert lora_model.lora_state is not None and lora_model.lora_state.mode == fuse
        plain = render()
        model = pipeline.load(pipeline.plan(pipeline.coerce_config(dict(BASE))))
        assert model in MODELS and model.lora_state is None and not has_adapters(model)
        # fused LoRAs changed the base weights: that model was discarded and loaded again; adapters were unloaded
        assert (model is lora_model) == (fuse == "unfused")
        base = build_tiny_pipeline("schnell").transformer.state_dict()
        assert all(torch.equal(value, base[key]) for key, value in model.pipe.transformer.state_dict().items())
    finally:
        MODELS.clear()
    assert np.array_equal(plain, fresh_process_render(tmp_path))
    assert np.abs(with_lora - plain).max() > 1  # the LoRA acted


def test_the_same_fused_lora_again_keeps_the_model(kohya):
    """A render that wants the LoRAs already fused into a cached model gets that model (nothing fused twice)."""
    MODELS.clear()
    try:
        config = pipeline.plan(pipeline.coerce_config(dict(BASE, lora=[{"path": str(kohya)}], lora_options={"fuse": "fused"})))
        first = pipeline.load(config)
        assert pipeline.load(config) is first and first.lora_state.mode == FUSED
    finally:
        MODELS.clear()


class FakePipe:
    def __init__(self):
        self.unloads = 0

    def unload_lora_weights(self):
        self.unloads += 1


def fake_model(mode=None):
    state = LoraState(key=(("a.safetensors", "0" * 64, True),), mode=mode, scales=(1.0,), loras=[]) if mode else None
    return SimpleNamespace(pipe=FakePipe(), lora_state=state, speed={})


@pytest.mark.parametrize("mode, reloads", [(None, 0), (UNFUSED, 0), (FUSED, 1), (BROKEN, 1)])
def test_the_cache_cleans_unfused_adapters_and_reloads_changed_weights(mode, reloads):
    cache, loads = ModelCache(), []

    def load():
        loads.append(fake_model())
        return loads[-1]

    first = cache.get("k", load)
    first.lora_state = fake_model(mode).lora_state
    again = cache.get("k", load)
    assert len(loads) == 1 + reloads and again.lora_state is None
    assert (again is first) == (reloads == 0) and (first in cache) == (reloads == 0)
    assert first.pipe.unloads == (1 if mode == UNFUSED else 0)
    cache.discard(again)
    assert again not in cache and cache.get("k", load) is not again


def _imported_modules(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` (in localflux/lora/) imports, anywhere in the file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ["localflux", "lora"][: 2 - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names |= {module} | {f"{module}.{alias.name}" for alias in node.names}
    return names


def test_lora_modules_never_import_the_loader_or_the_model_cache():
    files = sorted(LORA_PACKAGE.glob("*.py"))
    assert {"state.py", "to_diffusers.py", "verify.py"} <= {f.name for f in files}
    for path in files:
        imported = _imported_modules(path)
        assert not imported & {"localflux.loader", "localflux.model_cache"}, f"{path.name} imports {imported}"
    assert "localflux.errors" in _imported_modules(LORA_PACKAGE / "state.py")  # the resolution above works
