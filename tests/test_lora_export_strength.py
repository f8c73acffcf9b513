"""A trained LoRA file means the same strength in every loader (alpha != rank folded into the weights)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load

RANK, ALPHA = 4, 2
TARGETS = ["to_q", "to_k", "to_v", "proj_out"]


@pytest.fixture(scope="module")
def trained():
    """The tiny transformer with a rank-4, alpha-2 PEFT adapter whose weights are random (as after training)."""
    from peft import LoraConfig

    from localflux.families.flux1.tiny import build_tiny_pipeline

    torch.manual_seed(0)
    pipe = build_tiny_pipeline("schnell")
    pipe.transformer.add_adapter(LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=TARGETS, init_lora_weights=False))
    deltas = {}
    for name, module in pipe.transformer.named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            a = module.lora_A["default"].weight.detach().double()
            b = module.lora_B["default"].weight.detach().double()
            deltas[name] = (ALPHA / RANK) * b @ a  # what PEFT adds to the weight while training
    assert deltas
    return pipe, deltas


def test_exported_file_merges_to_the_trained_delta_without_reading_the_header(trained):
    from localflux.train.export import lora_file_bytes

    pipe, deltas = trained
    data = lora_file_bytes(pipe.transformer, "float32", {"localflux.alpha": str(ALPHA)})
    tensors = load(data)
    header_len = int.from_bytes(data[:8], "little")
    metadata = json.loads(data[8:8 + header_len])["__metadata__"]
    adapter = json.loads(metadata["lora_adapter_metadata"])
    assert adapter["transformer.r"] == RANK and adapter["transformer.lora_alpha"] == RANK  # header agrees with tensors
    assert not any(k.endswith(".alpha") for k in tensors)
    # ComfyUI: no .alpha tensor -> alpha = rank -> W + strength * (alpha / r) * up @ down with alpha / r = 1
    for name, delta in deltas.items():
        down = tensors[f"transformer.{name}.lora_A.weight"].double()
        up = tensors[f"transformer.{name}.lora_B.weight"].double()
        by_hand = 1.0 * (RANK / down.shape[0]) * up @ down
        assert torch.allclose(by_hand, delta, rtol=1e-6, atol=1e-9), name


def test_diffusers_load_gives_the_trained_weights(trained, tmp_path):
    from localflux.families.flux1.tiny import build_tiny_pipeline
    from localflux.train.export import write_lora

    pipe, deltas = trained
    path = write_lora(tmp_path / "lora.safetensors", pipe.transformer, "float32", {})
    torch.manual_seed(0)
    fresh = build_tiny_pipeline("schnell")  # the same base weights (same seed)
    base = {name: module.weight.detach().double().clone() for name, module in fresh.transformer.named_modules()
            if name in deltas}
    fresh.load_lora_weights(str(path))
    fresh.fuse_lora(lora_scale=1.0)
    modules = dict(fresh.transformer.named_modules())
    for name, delta in deltas.items():
        merged = modules[name].weight.detach().double()
        assert torch.allclose(merged, base[name] + delta, atol=1e-5), name


def test_localflux_reads_the_file_at_the_same_strength(trained, tmp_path):
    from localflux.lora.to_diffusers import convert
    from localflux.lora.files import read_lora
    from localflux.train.export import write_lora

    pipe, deltas = trained
    path = write_lora(tmp_path / "lora.safetensors", pipe.transformer, "float32", {})
    state = convert(read_lora(path))
    for name, delta in deltas.items():
        down = state[f"transformer.{name}.lora_A.weight"].double()
        up = state[f"transformer.{name}.lora_B.weight"].double()
        assert torch.allclose(up @ down, delta, rtol=1e-6, atol=1e-9), name
