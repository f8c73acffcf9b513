"""The key layouts diffusers 0.42's FLUX converter gets wrong, put right around it.

``to_diffusers.convert`` still lets diffusers convert what it converts correctly; this module
does the rest, so every layout other tools write ends as one diffusers/PEFT dict with the strength the
file means (``alpha / rank`` per module, alpha = rank where a file has none):

- ``prepare``: upcast to float32 (a bf16 alpha made diffusers compute the LoRA scale in bf16), rename
  BFL-key files that diffusers does not recognise (ComfyUI ``diffusion_model.…lora_A/B``, fal
  ``base_model.model.double_blocks…``, bare or ``transformer.`` ``double_blocks…``, ``lora_unet_`` keys with
  ``lora_A/lora_B`` sides) to kohya keys, the "mixture" layout (OneTrainer's ``lora_transformer_…``) and
  diffusers names with ``lora_down/lora_up`` sides to diffusers/PEFT keys, strip PEFT's
  ``base_model.model.`` from diffusers-named keys, and fold ``.alpha`` tensors into the weights where
  diffusers ignores them (kohya ``final_layer``) or matches them by name suffix (diffusers/PEFT files:
  ``proj_out``'s alpha also hit ``single_transformer_blocks.N.proj_out``);
- ``split_own``: the parts localflux converts itself: kohya single-block ``linear1`` (diffusers hard-codes
  FLUX.1's 3072/12288 sizes), kohya/ComfyUI CLIP keys (diffusers names ``out_proj`` and MLP layers so
  that they never load), and T5 keys (diffusers has no T5 LoRA loader: kept aside and reported);
- ``convert_own``: those parts in diffusers/PEFT keys, alpha folded in.
"""

from __future__ import annotations

import re

import torch

from ..errors import LoraError
from ..geometry import MLP_RATIO

# BFL (original FLUX.1 / ComfyUI) top-level module names
_BFL_ROOTS = ("double_blocks.", "single_blocks.", "img_in.", "txt_in.", "time_in.", "vector_in.", "guidance_in.",
              "final_layer.")
_BFL_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "base_model.model.", "transformer.", "")
# diffusers FluxTransformer2DModel top-level module names
_DIFFUSERS_ROOTS = ("transformer_blocks.", "single_transformer_blocks.", "x_embedder.", "context_embedder.",
                    "time_text_embed.", "norm_out.", "proj_out.")
_SIDES = {"lora_A.weight": "lora_down.weight", "lora_B.weight": "lora_up.weight",
          "lora_down.weight": "lora_down.weight", "lora_up.weight": "lora_up.weight", "alpha": "alpha"}
_KOHYA_FINAL = re.compile(r"^lora_unet_final_layer_(linear|adaLN_modulation_1)\.alpha$")
_LINEAR1 = re.compile(r"^lora_unet_single_blocks_(\d+)_linear1\.(lora_down\.weight|lora_up\.weight|alpha)$")
_CLIP_KOHYA = re.compile(r"^lora_te1?_text_model_encoder_layers_(\d+)_(self_attn_(?:q|k|v|out)_proj|mlp_fc[12])"
                         r"\.(lora_down\.weight|lora_up\.weight|alpha)$")
_CLIP_COMFY = re.compile(r"^text_encoders\.clip_l\.transformer\.(text_model\.encoder\.layers\.\d+\.(?:self_attn|mlp)\.\w+)"
                         r"\.(lora_down\.weight|lora_up\.weight|lora_A\.weight|lora_B\.weight|alpha)$")
_KOHYA_AB = re.compile(r"^(lora_unet_\w+|lora_te\d?_\w+)\.lora_([AB])\.weight$")  # kohya names, PEFT sides
# "mixture" layout (OneTrainer's LEGACY_LORA output, also read by diffusers): "lora_transformer_" + a diffusers
# module path with its dots flattened. The flattening is undone with FLUX's fixed module names below, because
# diffusers' own converter maps only the attention layers (ff, norm and proj layers all landed on the block).
_MIXTURE = re.compile(r"^lora_transformer_(.+)\.(lora_down\.weight|lora_up\.weight|lora_A\.weight|lora_B\.weight|"
                      r"lora_B\.bias|alpha)$")
_MIXTURE_BLOCK = re.compile(r"^(transformer_blocks|single_transformer_blocks)_(\d+)_(.+)$")
_DOUBLE_LAYERS = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj",
                  "attn.add_v_proj", "attn.to_add_out", "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj",
                  "ff_context.net.2", "norm1.linear", "norm1_context.linear")
_SINGLE_LAYERS = ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp", "proj_out", "norm.linear")
_GLOBAL_LAYERS = ("x_embedder", "context_embedder", "proj_out", "norm_out.linear",
                  *(f"time_text_embed.{e}_embedder.linear_{i}" for e in ("timestep", "guidance", "text") for i in (1, 2)))
_MIXTURE_SIDES = {"lora_down.weight": "lora_A.weight", "lora_up.weight": "lora_B.weight", "lora_A.weight": "lora_A.weight",
                  "lora_B.weight": "lora_B.weight", "lora_B.bias": "lora_B.bias", "alpha": "alpha"}
T5_PREFIXES = ("lora_te2_", "lora_te3_", "text_encoders.t5xxl.", "text_encoder_2.")


def is_t5_key(key: str) -> bool:
    return key.startswith(T5_PREFIXES)


def prepare(tensors: dict) -> dict:
    """The file's tensors in float32, renamed and alpha-folded where diffusers would get them wrong."""
    out = {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()}
    out = {_rename(k): v for k, v in out.items()}
    for key in [k for k in out if _KOHYA_FINAL.match(k)]:  # diffusers drops these alphas
        module = key.removesuffix(".alpha")
        up, down = out.get(f"{module}.lora_up.weight"), out.get(f"{module}.lora_down.weight")
        alpha = out.pop(key)
        if up is not None and down is not None:
            out[f"{module}.lora_up.weight"] = up * (float(alpha) / down.shape[0])
    # diffusers/PEFT-named modules (also beside kohya keys): fold each module's own alpha; kohya-named alphas
    # are diffusers' (or convert_own's) to read
    for key in [k for k in out if k.endswith(".alpha") and not k.startswith(("lora_unet_", "lora_te"))]:
        module = key.removesuffix(".alpha")
        if f"{module}.lora_A.weight" in out and isinstance(out[key], torch.Tensor) and out[key].is_floating_point():
            down = out[f"{module}.lora_A.weight"]
            fold_strength(out, module, float(out.pop(key)) / down.shape[0])
    return out


def fold_strength(state: dict, module: str, factor: float) -> None:
    """Multiply a PEFT module's strength into its weights: lora_A, and lora_B's bias (PEFT scales B(A x) + bias)."""
    state[f"{module}.lora_A.weight"] = state[f"{module}.lora_A.weight"] * factor
    if f"{module}.lora_B.bias" in state:
        state[f"{module}.lora_B.bias"] = state[f"{module}.lora_B.bias"] * factor


def _rename(key: str) -> str:
    if match := _KOHYA_AB.match(key):  # kohya module names stored with lora_A/lora_B
        return f"{match[1]}.lora_{'down' if match[2] == 'A' else 'up'}.weight"
    if (match := _MIXTURE.match(key)) and (module := _mixture_module(match[1])):
        return f"transformer.{module}.{_MIXTURE_SIDES[match[2]]}"
    for prefix in _BFL_PREFIXES:
        if not key.startswith(prefix):
            continue
        rest = key.removeprefix(prefix)
        if prefix == "base_model.model." and rest.startswith(("transformer.", *_DIFFUSERS_ROOTS)):
            return "transformer." + rest.removeprefix("transformer.")  # PEFT's wrapper prefix on diffusers names
        if rest.startswith(_BFL_ROOTS):
            for side, kohya_side in _SIDES.items():
                if rest.endswith("." + side):
                    return "lora_unet_" + rest[: -len(side) - 1].replace(".", "_") + "." + kohya_side
    if key.startswith(("transformer.", "text_encoder.")) and key.endswith((".lora_down.weight", ".lora_up.weight")):
        # diffusers module names with kohya sides: PEFT sides, so that the module's .alpha is folded in above
        return key.replace(".lora_down.weight", ".lora_A.weight").replace(".lora_up.weight", ".lora_B.weight")
    return key


def readable_name(key: str) -> str:
    """A mixture-layout key with its diffusers module path restored (for reports); other keys as they are."""
    match = _MIXTURE.match(key)
    module = _mixture_module(match[1]) if match else None
    return f"transformer.{module}.{_MIXTURE_SIDES[match[2]]}" if module else key


def _mixture_module(flat: str) -> str | None:
    """``transformer_blocks_0_ff_net_0_proj`` -> ``transformer_blocks.0.ff.net.0.proj`` (None: not a FLUX layer)."""
    if match := _MIXTURE_BLOCK.match(flat):
        layers = _DOUBLE_LAYERS if match[1] == "transformer_blocks" else _SINGLE_LAYERS
        layer = next((name for name in layers if name.replace(".", "_") == match[3]), None)
        return f"{match[1]}.{match[2]}.{layer}" if layer else None
    return next((name for name in _GLOBAL_LAYERS if name.replace(".", "_") == flat), None)


def split_own(tensors: dict) -> tuple[dict, dict, dict]:
    """``(own, t5, rest)``: what ``convert_own`` converts, the T5 tensors (never applied), the rest for diffusers."""
    own, t5, rest = {}, {}, {}
    for key, value in tensors.items():
        if _LINEAR1.match(key) or _CLIP_KOHYA.match(key) or _CLIP_COMFY.match(key):
            own[key] = value
        elif is_t5_key(key):
            t5[key] = value
        else:
            rest[key] = value
    return own, t5, rest


def convert_own(own: dict) -> dict:
    """Kohya single-block ``linear1`` and CLIP LoRAs in diffusers/PEFT keys, ``alpha / rank`` folded into lora_A."""
    modules: dict[str, dict] = {}
    for key, value in own.items():
        if match := _LINEAR1.match(key):
            name, side = ("linear1", int(match[1])), match[2]
        elif match := _CLIP_KOHYA.match(key):
            name, side = ("clip", f"text_model.encoder.layers.{match[1]}.{_clip_module(match[2])}"), match[3]
        else:
            match = _CLIP_COMFY.match(key)
            name, side = ("clip", match[1]), match[2]
        modules.setdefault(name, {})[_SIDES[side]] = value
    out = {}
    for (kind, where), parts in modules.items():
        down, up = parts.get("lora_down.weight"), parts.get("lora_up.weight")
        if down is None or up is None:
            continue  # a lone half: counted as not applied
        scale = float(parts["alpha"]) / down.shape[0] if "alpha" in parts else 1.0
        if kind == "clip":
            out[f"text_encoder.{where}.lora_A.weight"] = down * scale
            out[f"text_encoder.{where}.lora_B.weight"] = up
        else:
            out.update(_split_linear1(where, down * scale, up))
    return out


def _clip_module(kohya: str) -> str:
    """``self_attn_q_proj`` -> ``self_attn.q_proj``; ``mlp_fc1`` -> ``mlp.fc1``."""
    group, _, layer = kohya.partition("_attn_") if kohya.startswith("self_attn") else kohya.partition("_")
    return f"self_attn.{layer}" if kohya.startswith("self_attn") else f"{group}.{layer}"


def _split_linear1(block: int, down, up) -> dict:
    """BFL's fused q|k|v|mlp LoRA as four diffusers LoRAs; sizes from the LoRA itself (3 x width + 4 x width)."""
    if up.shape[0] % (3 + MLP_RATIO):
        raise LoraError(f"single-block {block} linear1 LoRA has {up.shape[0]} outputs, which is not a FLUX.1 "
                        "q|k|v|mlp layer (7 x the model width); it was made for another model")
    width = up.shape[0] // (3 + MLP_RATIO)
    dims = [width, width, width, MLP_RATIO * width]
    names = [f"transformer.single_transformer_blocks.{block}.{m}" for m in ("attn.to_q", "attn.to_k", "attn.to_v",
                                                                             "proj_mlp")]
    rank = down.shape[0]
    ups = torch.split(up, dims, dim=0)
    out = {}
    if rank % 4 == 0 and _block_diagonal(ups, rank // 4):
        # kohya's split_qkv layout (and localflux's export): each part has its own rank-r slice
        r = rank // 4
        for i, name in enumerate(names):
            out[f"{name}.lora_A.weight"] = down[i * r:(i + 1) * r].contiguous()
            out[f"{name}.lora_B.weight"] = ups[i][:, i * r:(i + 1) * r].contiguous()
    else:  # one dense LoRA on the fused layer: every part shares the down weight
        for name, part in zip(names, ups):
            out[f"{name}.lora_A.weight"] = down.clone()
            out[f"{name}.lora_B.weight"] = part.contiguous()
    return out


def _block_diagonal(ups, r: int) -> bool:
    return all(not part[:, j * r:(j + 1) * r].any() for i, part in enumerate(ups) for j in range(4) if j != i)
