"""Built-in random-weight FLUX.2 miniatures: ``tiny-flux2``, ``tiny-flux2-base``, ``tiny-flux2-dev``.

They keep FLUX.2's real geometry at a width of a few dozen channels, so a 64x64 render takes well
under a second on a CPU:

* VAE (``AutoencoderKLFlux2``): factor 8, 32 latent channels, patchified 2x2 into 128 transformer
  channels and normalised with the VAE's batch-norm running stats (set to non-trivial values here, so
  the normalisation is exercised);
* transformer (``Flux2Transformer2DModel``): 4-axis RoPE, one double and one single block; klein has no
  guidance embedding, dev has one;
* text: klein reads a Qwen3 (``Qwen3ForCausalLM``, 28 layers at hidden 16, so the default hidden-state
  layers (9, 18, 27) exist; ``joint_attention_dim`` = 3 x 16); dev reads a Mistral3
  (``Mistral3ForConditionalGeneration``, 31 text layers for the default layers (10, 20, 30));
* tokenizers built from in-memory vocabularies (no hub here), with chat templates, because the
  pipelines call ``apply_chat_template``.

``tiny-flux2`` is klein distilled (``is_distilled=True``: no CFG, 4 steps), ``tiny-flux2-base`` klein
base (CFG against the empty prompt), ``tiny-flux2-dev`` FLUX.2 [dev]-like (embedded guidance).

Weights come from a private, fixed-seed generator state (``torch.random.fork_rng``), so every process
builds the same model and the caller's global RNG is left exactly as it was.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKLFlux2,
    FlowMatchEulerDiscreteScheduler,
    Flux2KleinPipeline,
    Flux2Pipeline,
    Flux2Transformer2DModel,
)
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    Mistral3Config,
    Mistral3ForConditionalGeneration,
    PreTrainedTokenizerFast,
    Qwen2TokenizerFast,
    Qwen3Config,
    Qwen3ForCausalLM,
)

TINY_SEED = 20260214
VARIANTS = ("tiny-flux2", "tiny-flux2-base", "tiny-flux2-dev")

TEXT_HIDDEN = 16
QWEN_LAYERS = 28  # hidden_states[27] must exist (index 0 = embeddings)
MISTRAL_LAYERS = 31  # hidden_states[30] must exist
KLEIN_LAYERS = (9, 18, 27)
DEV_LAYERS = (10, 20, 30)

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
# A reduced Qwen3 chat template: what Flux2KleinPipeline needs (user turns, generation prompt, and the
# empty think block that Qwen3's template writes when enable_thinking is false).
QWEN_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{ '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}{{ '<think>\\n\\n</think>\\n\\n' }}{%- endif -%}"
    "{%- endif -%}"
)

# Mistral's control tokens in their Tekken order (id 0..19); [IMG] = 10, <pad> = 11.
MISTRAL_SPECIALS = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
                    "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]",
                    "[IMG_END]", "[PREFIX]", "[MIDDLE]", "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]",
                    "[TOOL_CONTENT]"]
# Mistral-Small-3.x style: <s>, the system message in [SYSTEM_PROMPT]..[/SYSTEM_PROMPT], user turns in
# [INST]..[/INST]; content is a string or a list of {"type": "text"|"image", ...} parts.
MISTRAL_CHAT_TEMPLATE = (
    "{%- macro render(content) -%}"
    "{%- if content is string -%}{{ content }}"
    "{%- else -%}{%- for part in content -%}"
    "{%- if part['type'] == 'text' -%}{{ part['text'] }}{%- elif part['type'] == 'image' -%}[IMG]{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "{{ bos_token }}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{{ '[SYSTEM_PROMPT]' + render(message['content']) + '[/SYSTEM_PROMPT]' }}"
    "{%- elif message['role'] == 'user' -%}{{ '[INST]' + render(message['content']) + '[/INST]' }}"
    "{%- elif message['role'] == 'assistant' -%}{{ render(message['content']) + eos_token }}"
    "{%- endif -%}"
    "{%- endfor -%}"
)

# a few merges so the BPE is a real BPE (multi-byte tokens appear); ByteLevel maps " " to "Ġ"
_MERGES = [("Ġ", "a"), ("r", "e"), ("t", "h"), ("Ġ", "th"), ("e", "d"), ("i", "n"), ("o", "n"), ("Ġ", "f")]


def is_tiny_flux2(source: str) -> bool:
    return source in VARIANTS


def _check(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown tiny FLUX.2 variant {variant!r}; choose one of {', '.join(VARIANTS)}")


def build_tiny_components(variant: str) -> dict:
    """The pipeline components of a tiny FLUX.2 model (klein: Flux2KleinPipeline's; dev: Flux2Pipeline's).

    Klein variants also carry ``is_distilled`` (a pipeline config argument, not a module).
    """

    _check(variant)
    dev = variant == "tiny-flux2-dev"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        modules = {
            "transformer": _tiny_transformer(guidance_embeds=dev),
            "vae": _tiny_vae(),
            "text_encoder": _tiny_mistral3() if dev else _tiny_qwen3(),
        }
    for module in modules.values():
        module.eval()  # built from configs: train mode (dropout, batch-norm updates) until told otherwise
        module.requires_grad_(False)
    components = dict(modules)
    components["tokenizer"] = mistral_tokenizer() if dev else qwen_tokenizer()
    components["scheduler"] = _scheduler("FLUX.2-dev" if dev else "FLUX.2-klein-4B")
    if not dev:
        components["is_distilled"] = variant == "tiny-flux2"
    return components


def pipeline_class(variant: str):
    _check(variant)

    return Flux2Pipeline if variant == "tiny-flux2-dev" else Flux2KleinPipeline


def build_tiny_pipeline(variant: str):
    return pipeline_class(variant)(**build_tiny_components(variant))


def save_tiny_model(variant: str, folder) -> Path:
    """Write the tiny model as a diffusers folder.

    Klein: ``Flux2KleinPipeline.from_pretrained(folder)`` reads it back (``is_distilled`` is in
    model_index.json). Dev: the tokenizer is saved as a plain fast tokenizer (``tokenizer/tokenizer.json``
    + config), not as a ``PixtralProcessor`` like the published FLUX.2-dev folder, whose processor needs
    torchvision; ``loading.load_pipeline`` builds dev pipelines from components with
    ``AutoTokenizer.from_pretrained(folder / "tokenizer")`` either way.
    """
    folder = Path(folder)
    build_tiny_pipeline(variant).save_pretrained(folder)
    return folder


def fingerprint(components: dict) -> str:
    """sha256 over every module's state dict (names, dtypes, shapes, bytes), the tokenizer and the flags."""

    digest = hashlib.sha256()
    for name in sorted(components):
        value = components[name]
        digest.update(name.encode())
        if isinstance(value, torch.nn.Module):
            for key, tensor in sorted(value.state_dict().items()):
                digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
                tensor = tensor.detach().cpu().contiguous().reshape(-1)  # 0-d tensors cannot be viewed as bytes
                digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
        elif hasattr(value, "backend_tokenizer"):
            digest.update(value.backend_tokenizer.to_str().encode())
            digest.update(str(value.chat_template).encode())
        elif hasattr(value, "config"):
            digest.update(json.dumps(dict(value.config), sort_keys=True, default=str).encode())
        else:
            digest.update(repr(value).encode())
    return digest.hexdigest()


# --- models -----------------------------------------------------------------------------------------


def _tiny_transformer(guidance_embeds: bool):

    return Flux2Transformer2DModel(
        patch_size=1,
        in_channels=128,  # 32 latent channels x 2x2 patch, as in the real models
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=3 * TEXT_HIDDEN,  # three stacked hidden-state layers
        timestep_guidance_channels=256,
        mlp_ratio=3.0,
        axes_dims_rope=(4, 4, 4, 4),  # sums to the head size; 4 axes (t, h, w, l)
        rope_theta=2000,
        guidance_embeds=guidance_embeds,
    )


def _tiny_vae():

    vae = AutoencoderKLFlux2(
        block_out_channels=(8, 8, 16, 16),  # four blocks -> factor 8, like the real VAE
        layers_per_block=1,
        latent_channels=32,
        norm_num_groups=4,
        sample_size=64,
        patch_size=(2, 2),
    )
    # the real VAE's batch-norm stats are not 0/1: give the tiny one some, so (x - mean)/std matters
    channels = vae.bn.running_mean.shape[0]
    vae.bn.running_mean.copy_(0.1 * torch.randn(channels))
    vae.bn.running_var.copy_(0.5 + torch.rand(channels))
    return vae


def _tiny_qwen3():

    config = Qwen3Config(
        vocab_size=len(_qwen_vocab()) + len(QWEN_SPECIALS),
        hidden_size=TEXT_HIDDEN,
        intermediate_size=32,
        num_hidden_layers=QWEN_LAYERS,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,  # Qwen3's default is 128: set it
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=_qwen_special_id("<|im_end|>"),
        pad_token_id=_qwen_special_id("<|endoftext|>"),
    )
    return Qwen3ForCausalLM(config)


def _tiny_mistral3():

    vocab_size = len(MISTRAL_SPECIALS) + len(_byte_alphabet()) + len(_MERGES)
    config = Mistral3Config(
        text_config=dict(
            model_type="mistral", vocab_size=vocab_size, hidden_size=TEXT_HIDDEN, intermediate_size=32,
            num_hidden_layers=MISTRAL_LAYERS, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
            max_position_embeddings=1024, bos_token_id=1, eos_token_id=2, pad_token_id=11,
        ),
        vision_config=dict(
            model_type="pixtral", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
            num_attention_heads=2, head_dim=8, patch_size=4, image_size=64,
        ),
        image_token_index=MISTRAL_SPECIALS.index("[IMG]"),
        spatial_merge_size=2,
        projector_hidden_act="gelu",
    )
    return Mistral3ForConditionalGeneration(config)


def _scheduler(name: str):

    text = config_root().joinpath(name, "scheduler", "scheduler_config.json").read_text()
    return FlowMatchEulerDiscreteScheduler.from_config(json.loads(text))


def config_root():
    """The shipped published configs (``configs/<repo name>/...``), as an importlib Traversable."""
    return resources.files("localflux.families.flux2").joinpath("configs")


# --- tokenizers -------------------------------------------------------------------------------------


def _byte_alphabet() -> list[str]:

    return sorted(pre_tokenizers.ByteLevel.alphabet())


def _qwen_vocab() -> dict[str, int]:
    vocab = {ch: i for i, ch in enumerate(_byte_alphabet())}
    for a, b in _MERGES:
        vocab.setdefault(a + b, len(vocab))
    return vocab


def _qwen_special_id(token: str) -> int:
    return len(_qwen_vocab()) + QWEN_SPECIALS.index(token)


def qwen_tokenizer():
    """An offline ``Qwen2TokenizerFast`` (ByteLevel BPE) with a reduced Qwen3 chat template."""

    tok = Qwen2TokenizerFast(
        vocab=_qwen_vocab(),
        merges=list(_MERGES),  # tuples, not "a b" strings
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=QWEN_CHAT_TEMPLATE,
        model_max_length=131072,
    )
    # specials must be added as special and un-normalised, or "<|im_start|>" splits into characters
    tok.add_tokens([AddedToken(s, special=True, normalized=False) for s in QWEN_SPECIALS], special_tokens=True)
    return tok


def mistral_tokenizer():
    """An offline Mistral-style fast tokenizer: ByteLevel BPE, control tokens, ``<s>`` prepended."""

    vocab = {tok: i for i, tok in enumerate(MISTRAL_SPECIALS)}
    for ch in _byte_alphabet():
        vocab[ch] = len(vocab)
    for a, b in _MERGES:
        vocab.setdefault(a + b, len(vocab))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=list(_MERGES), unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in MISTRAL_SPECIALS])
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        chat_template=MISTRAL_CHAT_TEMPLATE,
        model_max_length=131072,
    )
