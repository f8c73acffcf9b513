"""Test helper: a diffusers FLUX transformer state dict in BFL (original / ComfyUI) key layout.

The inverse of diffusers' ``convert_flux_transformer_checkpoint_to_diffusers``, written for the
tests only: it lets them make BFL-style single-file checkpoints from random-weight models, and a
round trip through diffusers' converter proves the mapping.
"""

import torch

_RENAMES = {
    "time_in.in_layer": "time_text_embed.timestep_embedder.linear_1",
    "time_in.out_layer": "time_text_embed.timestep_embedder.linear_2",
    "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
    "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
    "guidance_in.in_layer": "time_text_embed.guidance_embedder.linear_1",
    "guidance_in.out_layer": "time_text_embed.guidance_embedder.linear_2",
    "txt_in": "context_embedder",
    "img_in": "x_embedder",
    "final_layer.linear": "proj_out",
}
_DOUBLE = {
    "img_mod.lin": "norm1.linear", "txt_mod.lin": "norm1_context.linear",
    "img_mlp.0": "ff.net.0.proj", "img_mlp.2": "ff.net.2", "txt_mlp.0": "ff_context.net.0.proj",
    "txt_mlp.2": "ff_context.net.2", "img_attn.proj": "attn.to_out.0", "txt_attn.proj": "attn.to_add_out",
}
_DOUBLE_NORMS = {
    "img_attn.norm.query_norm.scale": "attn.norm_q.weight", "img_attn.norm.key_norm.scale": "attn.norm_k.weight",
    "txt_attn.norm.query_norm.scale": "attn.norm_added_q.weight", "txt_attn.norm.key_norm.scale": "attn.norm_added_k.weight",
}


def diffusers_to_bfl(sd: dict) -> dict:
    out = {}
    for bfl, ours in _RENAMES.items():
        for kind in ("weight", "bias"):
            if f"{ours}.{kind}" in sd:
                out[f"{bfl}.{kind}"] = sd[f"{ours}.{kind}"]
    for kind in ("weight", "bias"):  # BFL stores (shift, scale), diffusers (scale, shift)
        scale, shift = sd[f"norm_out.linear.{kind}"].chunk(2, dim=0)
        out[f"final_layer.adaLN_modulation.1.{kind}"] = torch.cat([shift, scale])
    doubles = sorted({int(k.split(".")[1]) for k in sd if k.startswith("transformer_blocks.")})
    for i in doubles:
        p = f"transformer_blocks.{i}."
        for bfl, ours in _DOUBLE.items():
            for kind in ("weight", "bias"):
                out[f"double_blocks.{i}.{bfl}.{kind}"] = sd[f"{p}{ours}.{kind}"]
        for bfl, ours in _DOUBLE_NORMS.items():
            out[f"double_blocks.{i}.{bfl}"] = sd[p + ours]
        for kind in ("weight", "bias"):
            out[f"double_blocks.{i}.img_attn.qkv.{kind}"] = torch.cat([sd[f"{p}attn.to_{x}.{kind}"] for x in "qkv"])
            out[f"double_blocks.{i}.txt_attn.qkv.{kind}"] = torch.cat(
                [sd[f"{p}attn.add_{x}_proj.{kind}"] for x in "qkv"])
    singles = sorted({int(k.split(".")[1]) for k in sd if k.startswith("single_transformer_blocks.")})
    for i in singles:
        p = f"single_transformer_blocks.{i}."
        for kind in ("weight", "bias"):
            out[f"single_blocks.{i}.modulation.lin.{kind}"] = sd[f"{p}norm.linear.{kind}"]
            out[f"single_blocks.{i}.linear1.{kind}"] = torch.cat(
                [sd[f"{p}attn.to_{x}.{kind}"] for x in "qkv"] + [sd[f"{p}proj_mlp.{kind}"]])
            out[f"single_blocks.{i}.linear2.{kind}"] = sd[f"{p}proj_out.{kind}"]
        out[f"single_blocks.{i}.norm.query_norm.scale"] = sd[f"{p}attn.norm_q.weight"]
        out[f"single_blocks.{i}.norm.key_norm.scale"] = sd[f"{p}attn.norm_k.weight"]
    return out
