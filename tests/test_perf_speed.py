"""The lossless fast path: applied and recorded, no recompilation across seeds/prompts/LoRA hotswaps (eager backend)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from localflux.config import SpeedConfig
from localflux.families.registry import FAMILIES
from localflux.render import RenderRequest, render
from localflux.speed import apply_speed, check_adapters_not_bypassed, prepare_lora_hotswap, unmerged_lora_adapters
from localflux.families.flux1.tiny import build_tiny_pipeline


def request(prompt="a fox in snow", size=64):
    return RenderRequest({"clip": prompt, "t5": prompt}, None, size, size, 2, 0.0, 1.0, 32, False)


def pixels(pipe, seed=1, **kw):
    images, _ = render(pipe, FAMILIES.by_name("flux1"), request(**kw), [seed], progress=False)
    return np.asarray(images[0], dtype=np.int16)


def compiled_frames():
    from torch._dynamo.utils import counters

    return counters["frames"]["ok"], counters["stats"]["unique_graphs"]


def tiny_lora(rank: int, seed: int) -> dict:
    """A diffusers-format LoRA on the tiny transformer's first double and single block attention."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for block in ("transformer_blocks.0.attn", "single_transformer_blocks.0.attn"):
        for proj in ("to_q", "to_k", "to_v"):
            prefix = f"transformer.{block}.{proj}"
            state[f"{prefix}.lora_A.weight"] = torch.randn(rank, 32, generator=generator) * 0.5
            state[f"{prefix}.lora_B.weight"] = torch.randn(32, rank, generator=generator) * 0.5
    return state


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_regional_compile_does_not_recompile_across_seeds_prompts_and_calls():
    pipe = build_tiny_pipeline("schnell")
    eager = pixels(pipe)
    applied = apply_speed(pipe, SpeedConfig(compile="blocks", compile_backend="eager"), "cpu")
    assert applied["compile"] == "blocks"
    assert np.array_equal(pixels(pipe), eager)  # warm-up; the eager backend changes no numerics
    before = compiled_frames()
    for seed, prompt in ((2, "a fox in snow"), (3, "a lighthouse at dawn, long prompt " * 3), (2, "x")):
        pixels(pipe, seed=seed, prompt=prompt)
    assert compiled_frames() == before
    pixels(pipe, size=96)  # the counters do see a recompile: a new size is a new shape
    assert compiled_frames() != before


def test_lora_hotswap_under_compile_does_not_recompile():
    pipe = build_tiny_pipeline("schnell")
    speed = SpeedConfig(compile="blocks", compile_backend="eager", lora_hotswap_rank=8)
    assert prepare_lora_hotswap(pipe, speed)
    pipe.load_lora_weights(tiny_lora(4, seed=1), adapter_name="style")
    apply_speed(pipe, speed, "cpu")
    first = pixels(pipe)
    before = compiled_frames()
    pipe.load_lora_weights(tiny_lora(8, seed=2), adapter_name="style", hotswap=True)
    second = pixels(pipe)
    assert compiled_frames() == before
    assert not np.array_equal(first, second)  # the swapped adapter is the one acting


def test_fused_qkv_only_without_unmerged_adapters():
    pipe = build_tiny_pipeline("schnell")
    reference = pixels(pipe)
    pipe.load_lora_weights(tiny_lora(4, seed=1), adapter_name="style")
    with_lora = pixels(pipe)
    assert unmerged_lora_adapters(pipe.transformer) == ["style"]
    applied = apply_speed(pipe, SpeedConfig(fuse_qkv=True), "cpu")
    assert applied["fuse_qkv"].startswith("skipped") and np.array_equal(pixels(pipe), with_lora)

    pipe = build_tiny_pipeline("schnell")
    assert apply_speed(pipe, SpeedConfig(fuse_qkv=True), "cpu")["fuse_qkv"] is True
    assert np.abs(pixels(pipe) - reference).max() <= 1  # one GEMM instead of three: rounding only
    pipe.load_lora_weights(tiny_lora(4, seed=1), adapter_name="late")
    with pytest.raises(Exception, match="fused QKV"):
        check_adapters_not_bypassed(pipe.transformer)


def test_attention_backends_and_channels_last_are_recorded_and_replay_exactly(tmp_path, run_cli):
    code, out, err = run_cli("generate", "--model", "tiny", "--device", "cpu", "--prompt", "a fox", "--seed", "5",
                             "--width", "64", "--height", "64", "--no-progress", "--out", tmp_path,
                             "--set", "speed.attention=math", "--set", "speed.channels_last_vae=true",
                             "--set", "speed.fuse_qkv=true")
    assert code == 0, err
    from localflux.recipe import read_recipe

    speed = read_recipe(out.strip())["decisions"]["speed"]
    assert speed["attention"] == "_native_math" and speed["channels_last_vae"] and speed["fuse_qkv"] is True
    code, _, err = run_cli("replay", out.strip(), "--verify", "--no-progress")
    assert code == 0, err


def test_unknown_attention_backend_is_a_config_error(run_cli):
    code, _, err = run_cli("generate", "--model", "tiny", "--prompt", "x", "--set", "speed.attention=sage", "--dry-run")
    assert code == 2 and "speed.attention" in err


def test_an_attention_backend_stays_with_its_own_pipeline():
    """diffusers' set_attention_backend also switches the process-wide default; localflux must not leak it."""
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    plain = build_tiny_pipeline("schnell")
    before = pixels(plain, seed=4)
    default = _AttentionBackendRegistry.get_active_backend()[0]
    other = build_tiny_pipeline("schnell")
    apply_speed(other, SpeedConfig(attention="math"), "cpu")
    assert _AttentionBackendRegistry.get_active_backend()[0] == default
    fresh = build_tiny_pipeline("schnell")
    assert np.array_equal(pixels(plain, seed=4), before)
    assert np.array_equal(pixels(fresh, seed=4), before)
    from localflux.pipeline import attention_backend

    assert attention_backend(other.transformer) == "_native_math"
    assert attention_backend(fresh.transformer) == "native"
