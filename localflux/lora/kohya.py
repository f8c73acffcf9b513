"""Write a diffusers/PEFT FLUX LoRA as a kohya (sd-scripts / BFL key) file with ``.alpha`` tensors.

Hand-written because no library goes this way: diffusers only reads kohya files
(``_convert_kohya_flux_lora_to_diffusers``). This is that converter's inverse, so a written file
loads back through diffusers to the same weights (a test renders both and compares pixels):

- BFL fuses q, k, v (and, in single blocks, the MLP input) into one layer. Their LoRAs become one
  kohya LoRA whose down weight stacks the parts' down weights and whose up weight is block-diagonal;
  diffusers' converter recognises exactly this "sparse" layout and splits it back losslessly. Parts a
  LoRA lacks are zero blocks (they change nothing); parts of unequal rank are padded with zeros.
- ``alpha``: each kohya module gets ``alpha = scale * rank`` so kohya, ComfyUI and diffusers (which all
  scale by alpha / rank) apply the same strength. Where the fused parts have different scales, or for
  ``final_layer`` (diffusers ignores those alphas), the scale is multiplied into the up weights instead
  and ``alpha = rank``.
- ``norm_out.linear`` is stored as BFL's ``final_layer.adaLN_modulation.1``, whose output halves are
  swapped (shift, scale vs scale, shift); swapping is its own inverse.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from diffusers.utils.peft_utils import _create_lora_config
from peft.utils.other import get_pattern_key

from ..errors import LoraError
from ..geometry import (
    MLP_RATIO,  # sizes a zero block when a single-block LoRA has q/k/v but no proj_mlp (or the reverse)
)
from ..weightfile import save_safetensors

_DOUBLE = {
    "attn.to_q": ("img_attn_qkv", 0, 3), "attn.to_k": ("img_attn_qkv", 1, 3), "attn.to_v": ("img_attn_qkv", 2, 3),
    "attn.add_q_proj": ("txt_attn_qkv", 0, 3), "attn.add_k_proj": ("txt_attn_qkv", 1, 3),
    "attn.add_v_proj": ("txt_attn_qkv", 2, 3),
    "attn.to_out.0": ("img_attn_proj", 0, 1), "attn.to_add_out": ("txt_attn_proj", 0, 1),
    "ff.net.0.proj": ("img_mlp_0", 0, 1), "ff.net.2": ("img_mlp_2", 0, 1),
    "ff_context.net.0.proj": ("txt_mlp_0", 0, 1), "ff_context.net.2": ("txt_mlp_2", 0, 1),
    "norm1.linear": ("img_mod_lin", 0, 1), "norm1_context.linear": ("txt_mod_lin", 0, 1),
}
_SINGLE = {
    "attn.to_q": ("linear1", 0, 4), "attn.to_k": ("linear1", 1, 4), "attn.to_v": ("linear1", 2, 4),
    "proj_mlp": ("linear1", 3, 4), "proj_out": ("linear2", 0, 1), "norm.linear": ("modulation_lin", 0, 1),
}
_GLOBAL = {
    "x_embedder": "img_in", "context_embedder": "txt_in",
    "time_text_embed.timestep_embedder.linear_1": "time_in_in_layer",
    "time_text_embed.timestep_embedder.linear_2": "time_in_out_layer",
    "time_text_embed.text_embedder.linear_1": "vector_in_in_layer",
    "time_text_embed.text_embedder.linear_2": "vector_in_out_layer",
    "time_text_embed.guidance_embedder.linear_1": "guidance_in_in_layer",
    "time_text_embed.guidance_embedder.linear_2": "guidance_in_out_layer",
    "norm_out.linear": "final_layer_adaLN_modulation_1",
    "proj_out": "final_layer_linear",
}
_FOLDED = ("unet_final_layer_adaLN_modulation_1", "unet_final_layer_linear")  # diffusers ignores alphas there
_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<side>[AB])(?:\.[\w-]+)?\.weight$")


def write_kohya(state_dict: Mapping, path: str | Path, *, alpha: float | Mapping[str, float] | None = None,
                metadata: Mapping[str, object] | None = None) -> Path:
    """Write a FLUX LoRA given in diffusers/PEFT keys as a kohya/BFL-key ``.safetensors`` file.

    ``state_dict``: ``{module}.lora_A.weight`` / ``.lora_B.weight`` tensors, as from
    ``peft.get_peft_model_state_dict(transformer)`` or a diffusers LoRA file; keys may start with
    ``transformer.`` (or ``text_encoder.`` for CLIP parts, written as ``lora_te1_*``); ``{module}.alpha``
    tensors are read as that module's alpha.
    ``alpha``: PEFT's ``lora_alpha`` (strength = alpha / rank): one number for all modules, or a mapping
    from module name (with or without ``transformer.``) to alpha; ``None`` means alpha = rank (strength 1).
    For ``use_rslora`` (strength = alpha / sqrt(rank)) pass ``lora_alpha * sqrt(rank)``.
    ``metadata``: extra safetensors metadata (values that are not strings are stored as JSON), e.g. the
    trigger word; kohya's ``ss_network_*`` keys are filled in.
    Never overwrites ``path``. Returns it.
    """
    tensors, info = to_kohya_state_dict(state_dict, alpha=alpha)
    path = Path(path)
    # kohya's own conventions: dim and alpha as trained (per q/k/v part, not the stacked module), "Dynamic"
    # when modules differ (sd-scripts' resize_lora writes that); ComfyUI and Forge read only the tensors
    meta = {"ss_network_module": "networks.lora_flux", "ss_base_model_version": "flux1",
            "ss_network_dim": _number(info["rank"]), "ss_network_alpha": _number(info["alpha"]),
            "modelspec.title": path.stem.removesuffix(".kohya"), "localflux_export": "kohya"}
    for key, value in (metadata or {}).items():
        meta[str(key)] = value if isinstance(value, str) else json.dumps(value)
    return save_safetensors(tensors, path, meta)


def to_kohya_state_dict(state_dict: Mapping, *, alpha: float | Mapping[str, float] | None = None):
    """``(kohya tensors, {"rank": common rank, "alpha": common alpha})`` without writing a file; rank and alpha
    are the input modules' (before q/k/v stacking), ``None`` where they differ."""
    pairs, alphas = _pairs(state_dict)
    groups: dict[str, dict[int, tuple]] = {}  # kohya name -> {part index: (module, down, up)}
    sizes: dict[str, int] = {}
    for module, (down, up) in pairs.items():
        name, part, parts = _kohya_name(module)
        groups.setdefault(name, {})[part] = (module, down, up)
        sizes[name] = parts
    out, ranks, input_alphas = {}, set(), set()
    for name, members in groups.items():
        scales = {part: _scale(module, down, alphas, alpha) for part, (module, down, up) in members.items()}
        for part, (_module, down, _up) in members.items():
            ranks.add(down.shape[0])
            input_alphas.add(scales[part] * down.shape[0])
        down, up = _stack(name, members, sizes[name])
        rank = down.shape[0]
        if name.startswith(_FOLDED) or len(set(scales.values())) > 1:
            up = _fold(members, scales, sizes[name], up, name)
            kohya_alpha = float(rank)
        else:
            kohya_alpha = next(iter(scales.values())) * rank
        if name == "unet_final_layer_adaLN_modulation_1":
            shift, scale = up.chunk(2, dim=0)
            up = torch.cat([scale, shift], dim=0)  # undo diffusers' swap_scale_shift
        out[f"lora_{name}.lora_down.weight"] = down.contiguous()
        out[f"lora_{name}.lora_up.weight"] = up.contiguous()
        out[f"lora_{name}.alpha"] = torch.tensor(kohya_alpha, dtype=torch.float32)
    if not out:
        raise LoraError("the LoRA to export holds no lora_A/lora_B weight pairs")
    return out, {"rank": ranks.pop() if len(ranks) == 1 else None,
                 "alpha": input_alphas.pop() if len(input_alphas) == 1 else None}


def _pairs(state_dict: Mapping):
    pairs: dict[str, list] = {}
    alphas: dict[str, float] = {}
    for key, value in state_dict.items():
        key = key.removeprefix("base_model.model.")
        if key.endswith(".alpha"):
            alphas[_module_name(key.removesuffix(".alpha"))] = float(value)
            continue
        match = _KEY.match(key)
        if key.endswith(".lora_B.bias"):
            raise LoraError(f"cannot export {key!r} as kohya: kohya files have no LoRA bias (PEFT lora_bias); "
                            "keep it in diffusers keys (--to diffusers)")
        if match is None:
            raise LoraError(f"cannot export {key!r} as kohya: only lora_A/lora_B weights (and .alpha) are supported")
        module = _module_name(match["module"])
        pairs.setdefault(module, [None, None])[0 if match["side"] == "A" else 1] = value
    for module, (down, up) in pairs.items():
        if down is None or up is None:
            raise LoraError(f"cannot export LoRA module {module!r}: it has only one of lora_A / lora_B")
    return {m: tuple(p) for m, p in pairs.items()}, alphas


def _module_name(name: str) -> str:
    """Canonical ``transformer.X`` / ``text_encoder.text_model.X`` names."""
    if name.startswith("text_encoder."):
        rest = name.removeprefix("text_encoder.")
        return "text_encoder." + (rest if rest.startswith("text_model.") else "text_model." + rest)
    return "transformer." + name.removeprefix("transformer.")


def _kohya_name(module: str) -> tuple[str, int, int]:
    if module.startswith("text_encoder."):
        return "te1_" + module.removeprefix("text_encoder.").replace(".", "_"), 0, 1
    inner = module.removeprefix("transformer.")
    for prefix, table, kind in (("transformer_blocks.", _DOUBLE, "double_blocks"),
                                ("single_transformer_blocks.", _SINGLE, "single_blocks")):
        if inner.startswith(prefix):
            index, _, tail = inner.removeprefix(prefix).partition(".")
            if tail in table:
                name, part, parts = table[tail]
                return f"unet_{kind}_{index}_{name}", part, parts
    if inner in _GLOBAL:
        return "unet_" + _GLOBAL[inner], 0, 1
    raise LoraError(f"cannot export LoRA module {module!r} as kohya: it is not a FLUX.1 layer kohya names")


def _scale(module: str, down, alphas: Mapping[str, float], alpha) -> float:
    rank = down.shape[0]
    if module in alphas:
        return alphas[module] / rank
    if isinstance(alpha, Mapping):
        for key in (module, module.removeprefix("transformer."), module.removeprefix("text_encoder.")):
            if key in alpha:
                return float(alpha[key]) / rank
        return 1.0
    return 1.0 if alpha is None else float(alpha) / rank


def _stack(name: str, members: dict, parts: int):
    """(down, up) of one kohya module: stacked downs, block-diagonal up (zero blocks for absent parts)."""
    if parts == 1:
        _, down, up = members[0]
        return down, up
    rank = max(down.shape[0] for _, down, _ in members.values())
    fan_in = next(iter(members.values()))[1].shape[1]
    outs = _part_sizes(name, members, parts)
    dtype = next(iter(members.values()))[1].dtype
    down = torch.zeros(rank * parts, fan_in, dtype=dtype)
    up = torch.zeros(sum(outs), rank * parts, dtype=dtype)
    row = 0
    for part in range(parts):
        if part in members:
            _, d, u = members[part]
            down[part * rank: part * rank + d.shape[0]] = d
            up[row: row + outs[part], part * rank: part * rank + u.shape[1]] = u
        row += outs[part]
    return down, up


def _part_sizes(name: str, members: dict, parts: int) -> list[int]:
    known = {part: up.shape[0] for part, (_, _, up) in members.items()}
    width = next((known[p] for p in (0, 1, 2) if p in known), None)
    if parts == 4 and width is None:
        width = known[3] // MLP_RATIO
    sizes = [known.get(p, width) for p in range(min(parts, 3))]
    if parts == 4:
        sizes.append(known.get(3, width * MLP_RATIO))
    return sizes


def _fold(members: dict, scales: dict, parts: int, up, name: str):
    """Multiply each part's rows of ``up`` by that part's scale (then alpha = rank means strength 1)."""
    up = up.clone().float()
    if parts == 1:
        up *= scales[0]
        return up.to(members[0][2].dtype)
    outs = _part_sizes(name, members, parts)
    row = 0
    for part in range(parts):
        if part in members:
            up[row: row + outs[part]] *= scales[part]
        row += outs[part]
    return up.to(next(iter(members.values()))[2].dtype)


def _number(value) -> str:
    if value is None:
        return "Dynamic"
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def peft_alphas(state_dict: Mapping, network_alphas: Mapping | None, metadata: Mapping | None) -> dict[str, float]:
    """Each module's effective alpha (strength x rank) as diffusers would apply it, from its own LoraConfig.

    Uses the ``LoraConfig`` diffusers builds when loading (``_create_lora_config``: from ``.alpha`` tensors,
    the PEFT metadata, or rank-only files) and PEFT's pattern lookup, so the export matches the load.
    """
    result = {}
    for prefix in ("transformer", "text_encoder"):
        part = {k.removeprefix(prefix + "."): v for k, v in state_dict.items() if k.startswith(prefix + ".")}
        if not part:
            continue
        alphas = {k.removeprefix(prefix + "."): v for k, v in (network_alphas or {}).items()
                  if k.startswith(prefix + ".")} or None
        meta = {k.removeprefix(prefix + "."): v for k, v in (metadata or {}).items() if k.startswith(prefix + ".")} or None
        if meta and alphas:
            alphas = None  # diffusers refuses both; metadata is the PEFT config itself
        ranks = {f"^{k}": v.shape[1] for k, v in part.items() if "lora_B" in k and v.ndim > 1}
        config = _create_lora_config(part, alphas, meta, ranks)
        for key, value in part.items():
            if ".lora_A." not in key:
                continue
            module = key.split(".lora_A.")[0]
            r = config.rank_pattern.get(get_pattern_key(config.rank_pattern.keys(), module), config.r)
            a = config.alpha_pattern.get(get_pattern_key(config.alpha_pattern.keys(), module), config.lora_alpha)
            strength = a / math.sqrt(r) if config.use_rslora else a / r
            result[f"{prefix}.{module}"] = strength * value.shape[0]
    return result
