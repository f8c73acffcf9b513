"""Prompt embeddings: a per-process cache across renders of the same prompt, and fp8-stored T5.

T5 on the CPU needs nothing here: diffusers runs each text encoder on the device its weights are
on and moves the embeddings to the denoiser's device.

Both features wrap the pipeline instance's ``encode_prompt`` (FluxPipeline calls it for the prompt
and, with true CFG, for the negative prompt), so the sampler and diffusers' loop stay as they are.
Cached embeddings are the very tensors diffusers computed, so a cached render is pixel-identical to
an uncached one; the cache is skipped while text-encoder LoRAs are loaded.

fp8-stored T5 weights need their own T5 call: FluxPipeline casts T5's output to
``text_encoder_2.dtype``, which would then be fp8 (a second, needless rounding).
"""

from __future__ import annotations

from diffusers.utils.torch_utils import get_module_execution_device


def install(pipe, *, cache: bool, t5_dtype=None) -> None:
    """``t5_dtype``: the dtype T5's output must have when its weights are stored in another (fp8)."""
    if not (cache or t5_dtype is not None):
        return
    original = pipe.encode_prompt
    store: dict = {}

    def encode_prompt(prompt, prompt_2=None, device=None, num_images_per_prompt=1, prompt_embeds=None,
                      pooled_prompt_embeds=None, max_sequence_length=512, lora_scale=None):
        if prompt_embeds is not None:
            return original(prompt, prompt_2, device, num_images_per_prompt, prompt_embeds, pooled_prompt_embeds,
                            max_sequence_length, lora_scale)
        key = (_as_key(prompt), _as_key(prompt_2), str(device), num_images_per_prompt, max_sequence_length, lora_scale)
        cacheable = cache and not _has_text_adapters(pipe)
        if cacheable and key in store:
            return store[key]
        if t5_dtype is not None:
            device = device or pipe._execution_device
            t5_embeds = t5_embeddings(pipe, prompt_2 or prompt, max_sequence_length, device, t5_dtype)
            t5_embeds = t5_embeds.repeat_interleave(num_images_per_prompt, dim=0)
            pooled = pipe._get_clip_prompt_embeds(prompt=prompt, num_images_per_prompt=num_images_per_prompt, device=device)
            result = original(prompt, prompt_2, device, num_images_per_prompt, t5_embeds, pooled,
                              max_sequence_length, lora_scale)
        else:
            result = original(prompt, prompt_2, device, num_images_per_prompt, None, None, max_sequence_length, lora_scale)
        if cacheable:
            store[key] = result
        return result

    encode_prompt.cache = store  # visible to tests and to callers that want to clear it
    pipe.encode_prompt = encode_prompt


def t5_embeddings(pipe, prompt, max_sequence_length: int, device, dtype):
    """T5's sequence embeddings as FluxPipeline computes them, returned in ``dtype``."""

    prompt = [prompt] if isinstance(prompt, str) else list(prompt)
    ids = pipe.tokenizer_2(prompt, padding="max_length", max_length=max_sequence_length, truncation=True,
                           return_length=False, return_overflowing_tokens=False, return_tensors="pt").input_ids
    embeds = pipe.text_encoder_2(ids.to(get_module_execution_device(pipe.text_encoder_2)), output_hidden_states=False)[0]
    return embeds.to(dtype=dtype, device=device)


def _as_key(prompt):
    return tuple(prompt) if isinstance(prompt, list) else prompt


def _has_text_adapters(pipe) -> bool:
    return any(getattr(getattr(pipe, name, None), "peft_config", None) for name in ("text_encoder", "text_encoder_2"))
