"""The lossless fast path (config ``[speed]``): regional compilation, attention backend, fused QKV,
channels-last VAE. "Lossless" here means no quantization and no step caching; outputs can still
differ from eager by rounding (different kernels), which ``localflux bench`` reports.

Order matters and is the caller's (``loader.load_model``):
``prepare_lora_hotswap`` (before the first LoRA is loaded) -> load LoRAs -> ``apply_speed``.
Compilation then survives seeds, prompts, repeated calls of one size and LoRA hotswaps without
recompiling (tested with dynamo's counters). Changing a LoRA's *scale* at run time is a new
constant for dynamo and does recompile.
"""

from __future__ import annotations

import logging

import torch
from diffusers.models.attention_dispatch import _AttentionBackendRegistry
from peft.tuners.tuners_utils import BaseTunerLayer

from .errors import ConfigError, LoraError, first_line

log = logging.getLogger(__name__)

# config name -> diffusers attention backend (PyTorch's built-in SDPA kernels only: flash-attn,
# sage and the *_hub kernels need packages or downloads that an offline install cannot have)
ATTENTION_BACKENDS = {
    "native": "native",
    "flash": "_native_flash",
    "efficient": "_native_efficient",
    "cudnn": "_native_cudnn",
    "math": "_native_math",
}


def unmerged_lora_adapters(module) -> list[str]:
    """Names of PEFT LoRA adapters on ``module`` that are loaded but not merged into its weights."""
    names = set()
    for layer in module.modules():
        if isinstance(layer, BaseTunerLayer):
            names |= set(getattr(layer, "lora_A", {}).keys()) - set(layer.merged_adapters)
    return sorted(names)


def qkv_fused(transformer) -> bool:
    return any(getattr(m, "fused_projections", False) for m in transformer.modules())


def check_adapters_not_bypassed(transformer) -> None:
    """Call after loading LoRAs: fused QKV projections would silently skip adapters on to_q/k/v."""
    adapters = unmerged_lora_adapters(transformer)
    if adapters and qkv_fused(transformer):
        raise LoraError(f"LoRA adapter(s) {', '.join(adapters)} cannot act on a transformer with fused QKV projections "
                        "(speed.fuse_qkv = true); set speed.fuse_qkv = false or fuse the LoRA into the weights")


def prepare_lora_hotswap(pipe, speed) -> bool:
    """Reserve LoRA rank so later adapters swap in place of the first without recompiling."""
    if speed.compile == "off" or speed.lora_hotswap_rank == 0:
        return False
    pipe.enable_lora_hotswap(target_rank=speed.lora_hotswap_rank)
    return True


def apply_speed(pipe, speed, device: str) -> dict:
    """Apply ``speed`` (a ``SpeedConfig``) to a loaded, placed pipeline; returns what was applied."""
    applied = {"compile": speed.compile, "attention": "default", "channels_last_vae": False, "fuse_qkv": False,
               "lora_hotswap_rank": speed.lora_hotswap_rank if speed.compile != "off" else 0}
    if speed.attention != "auto":
        backend = ATTENTION_BACKENDS[speed.attention]
        # diffusers' set_attention_backend also changes the process-wide default backend, which would
        # silently change every other pipeline in this process (and its recorded decisions): the
        # backend is set on this transformer's processors only, and the global default restored.
        previous = _AttentionBackendRegistry._active_backend
        try:
            pipe.transformer.set_attention_backend(backend)
        except (ValueError, RuntimeError, ImportError) as exc:
            raise ConfigError(f"speed.attention = {speed.attention!r} is not available here "
                              f"({first_line(exc)}); use 'auto' or 'native'") from None
        finally:
            _AttentionBackendRegistry.set_active_backend(previous)
        applied["attention"] = backend
    if speed.fuse_qkv:
        adapters = unmerged_lora_adapters(pipe.transformer)
        if adapters:
            # fusion would bypass the adapters on to_q/k/v: keep the LoRA, say why it is not fused
            log.warning("speed.fuse_qkv skipped: unmerged LoRA adapter(s) %s are loaded", ", ".join(adapters))
            applied["fuse_qkv"] = f"skipped: unmerged LoRA adapters {', '.join(adapters)}"
        else:
            pipe.transformer.fuse_qkv_projections()
            pipe.vae.fuse_qkv_projections()
            applied["fuse_qkv"] = True
    if speed.channels_last_vae:
        pipe.vae.to(memory_format=torch.channels_last)
        applied["channels_last_vae"] = True
    if speed.compile == "blocks":
        # one compiled graph serves all 57 blocks of a kind: a short warm-up, unlike compiling the whole model
        pipe.transformer.compile_repeated_blocks(fullgraph=True, backend=speed.compile_backend)
        applied["compile_backend"] = speed.compile_backend
    return applied
