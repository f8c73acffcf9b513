"""An independent reference for LoRA strength on the tiny model: hand-written BFL -> diffusers layer map,
hand-computed weight deltas, and the deltas localflux actually merges into the model.

The reference is deliberately not localflux's or diffusers' converter: each BFL (ComfyUI / kohya) layer
is named here together with the rows of the diffusers layer(s) it covers, and a LoRA's delta is computed
as ``scale * alpha / rank * up @ down`` in float64.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import torch

from flux_keys import _DOUBLE, _RENAMES

W, MLP = 32, 128  # the tiny model's width and MLP width (attention 2 x 16)

# BFL layer -> (in, out) in the tiny model (dev: with guidance_in)
BFL_SHAPES = {
    "double_blocks.0.img_attn.qkv": (W, 3 * W), "double_blocks.0.txt_attn.qkv": (W, 3 * W),
    "double_blocks.0.img_attn.proj": (W, W), "double_blocks.0.txt_attn.proj": (W, W),
    "double_blocks.0.img_mlp.0": (W, MLP), "double_blocks.0.img_mlp.2": (MLP, W),
    "double_blocks.0.txt_mlp.0": (W, MLP), "double_blocks.0.txt_mlp.2": (MLP, W),
    "double_blocks.0.img_mod.lin": (W, 6 * W), "double_blocks.0.txt_mod.lin": (W, 6 * W),
    "single_blocks.0.linear1": (W, 3 * W + MLP), "single_blocks.0.linear2": (W + MLP, W),
    "single_blocks.0.modulation.lin": (W, 3 * W),
    "img_in": (64, W), "txt_in": (32, W), "time_in.in_layer": (256, W), "time_in.out_layer": (W, W),
    "vector_in.in_layer": (32, W), "vector_in.out_layer": (W, W), "guidance_in.in_layer": (256, W),
    "guidance_in.out_layer": (W, W), "final_layer.linear": (W, 64), "final_layer.adaLN_modulation.1": (W, 2 * W),
}
# one BFL layer -> one diffusers layer: the same names the BFL-key checkpoint helper uses
_SIMPLE = {**_DOUBLE, "linear2": "proj_out", "modulation.lin": "norm.linear"}
_GLOBAL = {**_RENAMES, "final_layer.adaLN_modulation.1": "norm_out.linear"}


def bfl_to_diffusers(name: str) -> list[tuple[str, int, int]]:
    """The diffusers layers a BFL layer covers, with the BFL output rows [start, end) of each."""
    if m := re.fullmatch(r"double_blocks\.(\d+)\.(img|txt)_attn\.qkv", name):
        p = f"transformer_blocks.{m[1]}.attn."
        parts = ["to_q", "to_k", "to_v"] if m[2] == "img" else ["add_q_proj", "add_k_proj", "add_v_proj"]
        return [(p + part, i * W, (i + 1) * W) for i, part in enumerate(parts)]
    if m := re.fullmatch(r"single_blocks\.(\d+)\.linear1", name):
        p = f"single_transformer_blocks.{m[1]}."
        return [(p + "attn.to_q", 0, W), (p + "attn.to_k", W, 2 * W), (p + "attn.to_v", 2 * W, 3 * W),
                (p + "proj_mlp", 3 * W, 3 * W + MLP)]
    if m := re.fullmatch(r"(double_blocks|single_blocks)\.(\d+)\.(.+)", name):
        block = "transformer_blocks" if m[1] == "double_blocks" else "single_transformer_blocks"
        rows = BFL_SHAPES.get(f"{m[1]}.0.{m[3]}", (0, None))[1]
        return [(f"{block}.{m[2]}.{_SIMPLE[m[3]]}", 0, rows)]
    return [(_GLOBAL[name], 0, BFL_SHAPES[name][1])]


def diffusers_deltas(bfl_deltas: dict) -> dict:
    """{BFL layer: delta of its weight} -> {diffusers layer: delta}; BFL's final adaLN is (shift, scale)."""
    out = {}
    for name, delta in bfl_deltas.items():
        if name == "final_layer.adaLN_modulation.1":
            shift, scale = delta.chunk(2)
            delta = torch.cat([scale, shift])  # diffusers' norm_out.linear is (scale, shift)
        for module, start, end in bfl_to_diffusers(name):
            out[module] = out.get(module, 0) + delta[start:end]
    return out


def lora_delta(down, up, alpha=None, scale=1.0):
    """What kohya, ComfyUI and PEFT all merge: scale * alpha / rank * up @ down (alpha None: alpha = rank)."""
    rank = down.shape[0]
    strength = 1.0 if alpha is None else float(alpha) / rank
    return scale * strength * (up.double() @ down.double())


def merged_deltas(path, scale=1.0, variant="dev", strict=True):
    """Fuse the LoRA into a fresh tiny pipeline through localflux's apply path; (applied, {layer: delta})
    for the transformer and the CLIP text encoder."""
    from localflux.config import LoraConfig
    from localflux.lora.state import apply_loras
    from localflux.families.flux1.tiny import build_tiny_pipeline

    pipe = build_tiny_pipeline(variant)
    parts = {"transformer": pipe.transformer, "text_encoder": pipe.text_encoder}
    before = _linear_params(parts)
    model = SimpleNamespace(pipe=pipe, lora_state=None, speed={})
    state = apply_loras(model, [LoraConfig(path=str(path), scale=scale, strict=strict)], "fused")
    after = _linear_params(parts)
    deltas = {k: (after[k] - before[k]).double() for k in before if not torch.equal(after[k], before[k])}
    return state.loras[0], deltas


def _linear_params(parts: dict) -> dict:
    """Every Linear weight (``component.module``) and bias (``component.module.bias``), copied."""
    out = {}
    for c, mod in parts.items():
        for n, m in mod.named_modules():
            if isinstance(m, torch.nn.Linear):
                out[f"{c}.{n}"] = m.weight.detach().clone()
                if m.bias is not None:
                    out[f"{c}.{n}.bias"] = m.bias.detach().clone()
    return out


def assert_deltas(got: dict, expected: dict, rtol=1e-5):
    """Same layers changed, each by the expected delta (relative to its largest entry)."""
    expected = {k: v for k, v in expected.items() if v.abs().max() > 0}
    assert sorted(got) == sorted(expected)
    for key, want in expected.items():
        err = (got[key] - want).abs().max().item() / want.abs().max().item()
        assert err < rtol, f"{key}: merged delta differs from the reference by {err:.2e} (relative)"
