"""``tiny``: a built-in random-weight miniature FLUX for the demo and the tests.

It has FLUX's real geometry (VAE downsampling factor 8, 16 latent channels packed 2x2 into 64
transformer channels, CLIP pooled + T5 sequence conditioning, 3-axis RoPE) at a width of a few
dozen channels, so a 64x64 render takes milliseconds on a CPU. Weights come from a private,
fixed-seed generator state (``torch.random.fork_rng``), so every process builds the same model
and the caller's global RNG is left exactly as it was. Tokenizers are built from in-memory
vocabularies because no hub can be reached here.

Two variants mirror the real models: ``tiny-schnell`` (no guidance embedding, static schedule)
and ``tiny-dev`` (guidance embedding, resolution-shifted schedule). ``tiny`` is ``tiny-schnell``.
"""

from __future__ import annotations

import json

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel, T5TokenizerFast

from .pipelines import pipeline_class
from .presets import config_root

VARIANTS = ("schnell", "dev", "fill", "kontext", "control")
TINY_SEED = 20240801

# Byte-level characters: printable ASCII is enough for prompts in tests and the demo; other
# characters fall back to the unknown token, exactly as a real vocabulary's rare bytes would.
_ASCII = [chr(c) for c in range(33, 127)]


def build_tiny_components(variant: str) -> dict:
    """Return the FluxPipeline components of the tiny model (``variant`` is ``schnell`` or ``dev``)."""

    if variant not in VARIANTS:
        raise ValueError(f"unknown tiny variant {variant!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        components = {
            "transformer": _tiny_transformer(guidance_embeds=variant != "schnell",
                                             in_channels={"fill": 384, "control": 128}.get(variant, 64)),
            "vae": _tiny_vae(),
            "text_encoder": _tiny_clip(),
            "text_encoder_2": _tiny_t5(),
        }
    for module in components.values():
        module.eval()  # models built from configs start in train mode (T5 dropout)
        module.requires_grad_(False)
    components["tokenizer"] = _clip_tokenizer()
    components["tokenizer_2"] = _t5_tokenizer()
    components["scheduler"] = _scheduler(variant)
    return components


def build_tiny_pipeline(variant: str):
    """The base ``FluxPipeline`` of the tiny model (tasks build their own pipeline from its components)."""

    return FluxPipeline(**build_tiny_components(variant))


def save_tiny_model(variant: str, folder) -> None:
    """Write the tiny model as an ordinary diffusers folder; ``model_index.json`` names the variant's own
    pipeline class (``FluxFillPipeline``, ``FluxKontextPipeline``) as the published models do."""

    role = {"fill": "fill", "kontext": "kontext", "control": "control"}.get(variant, "text")
    pipeline_class(role)(**build_tiny_components(variant)).save_pretrained(folder)


def _tiny_transformer(guidance_embeds: bool, in_channels: int = 64):

    # Fill: per token [noisy 64 | masked-image latents 64 | mask 8x8 pixels x 2x2 patches = 256] = 384 in, 64 out
    # Control (Canny/Depth): [noisy 64 | control-image latents 64] = 128 in, 64 out
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=in_channels,
        out_channels=64 if in_channels != 64 else None,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=guidance_embeds,
        axes_dims_rope=(4, 6, 6),
    )


def _tiny_vae():

    # Four blocks -> three downsamplings -> factor 8, like FLUX's VAE; scaling/shift are FLUX's.
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        latent_channels=16,
        norm_num_groups=4,
        sample_size=64,
        scaling_factor=0.3611,
        shift_factor=0.1159,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def _clip_vocab() -> tuple[dict, list]:
    vocab = {}
    for ch in _ASCII:
        vocab[ch] = len(vocab)
    for ch in _ASCII:
        vocab[ch + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab, []


def _tiny_clip():

    vocab, _ = _clip_vocab()
    config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=32,
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],  # not 2: that id selects CLIP's legacy argmax pooling
        pad_token_id=vocab["<|endoftext|>"],
    )
    return CLIPTextModel(config)


def _clip_tokenizer():

    vocab, merges = _clip_vocab()
    return CLIPTokenizer(
        vocab=vocab,
        merges=merges,
        model_max_length=77,  # without it FluxPipeline's CLIP padding breaks
        unk_token="<|endoftext|>",
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )


def _t5_vocab() -> list[tuple[str, float]]:
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [("\u2581" + ch, -3.0) for ch in _ASCII]
    pieces += [(ch, -4.0) for ch in _ASCII]
    return pieces


def _tiny_t5():

    config = T5Config(
        vocab_size=len(_t5_vocab()),
        d_model=32,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        feed_forward_proj="gated-gelu",  # FLUX's T5 v1.1 uses gated GELU
        pad_token_id=0,
        eos_token_id=1,
    )
    return T5EncoderModel(config)


def _t5_tokenizer():

    return T5TokenizerFast(vocab=_t5_vocab(), extra_ids=0, model_max_length=512)


def _scheduler(variant: str):


    text = (config_root(variant) / "scheduler" / "scheduler_config.json").read_text()
    return FlowMatchEulerDiscreteScheduler.from_config(json.loads(text))
