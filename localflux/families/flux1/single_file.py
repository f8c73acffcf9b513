"""A single-file FLUX transformer's own shape, read from its tensor shapes (no weights loaded).

diffusers' ``from_single_file`` builds the model from a config folder (``model.base``'s, or FLUX.1's
published one) and only then reads the file: a file of another shape than that config (fewer blocks,
another width) fails deep inside diffusers (an IndexError, or a split at FLUX.1's 3072 width). The
file itself says everything that sizes the model: block counts, width, head size (the RMS-norm
scale is one head wide), text widths, the guidance embedding. localflux reads those, starts from the
base config (for what no tensor shows: RoPE axes, patch size), and checks the result against the
base's text encoders, so a transformer that cannot work with them is refused in one sentence.

BFL/ComfyUI key files are converted by diffusers at FLUX.1's width; at any other width localflux
renames and splits the tensors itself (``bfl_to_diffusers``) and hands diffusers a diffusers-key dict.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ...errors import ModelSourceError
from ...geometry import MLP_RATIO
from ...weightfile import tensor_shapes
from ..shapes import layout_of, skeleton, strip_prefix

FLUX1_WIDTH = 3072  # diffusers' BFL-key conversion assumes it

# what each config field is read from, per key layout: (tensor, dimension)
_LAYOUTS = {
    "diffusers": {
        "x": "x_embedder.weight", "context": "context_embedder.weight",
        "pooled": "time_text_embed.text_embedder.linear_1.weight", "out": "proj_out.weight",
        "double": "transformer_blocks.", "single": "single_transformer_blocks.",
        "head": ("transformer_blocks.{}.attn.norm_q.weight", "single_transformer_blocks.{}.attn.norm_q.weight"),
        "guidance": "time_text_embed.guidance_embedder.",
    },
    "bfl": {
        "x": "img_in.weight", "context": "txt_in.weight", "pooled": "vector_in.in_layer.weight",
        "out": "final_layer.linear.weight", "double": "double_blocks.", "single": "single_blocks.",
        "head": ("double_blocks.{}.img_attn.norm.query_norm.scale", "single_blocks.{}.norm.query_norm.scale"),
        "guidance": "guidance_in.",
    },
}


def infer_config(shapes: dict) -> dict:
    """The ``FluxTransformer2DModel`` config fields a file's tensor shapes determine."""
    shapes = strip_prefix(shapes)
    names = _LAYOUTS[layout_of(shapes)]
    missing = [names[k] for k in ("x", "context", "pooled") if names[k] not in shapes]
    if missing:
        raise ValueError(f"no {missing[0]} tensor")
    config = skeleton(shapes, names, (names["head"][0].format(0), names["head"][1].format(0)))
    config["pooled_projection_dim"] = shapes[names["pooled"]][1]
    in_channels = config["in_channels"]
    if names["out"] in shapes and shapes[names["out"]][0] != in_channels:
        config["out_channels"] = shapes[names["out"]][0]
    return config


def transformer_config(path: Path, base_config: dict, base_root: Path | None) -> dict:
    """The base transformer config with every field the file determines replaced by the file's value."""
    try:
        inferred = infer_config(tensor_shapes(path))
    except (ValueError, KeyError, IndexError) as exc:
        raise ModelSourceError(f"{str(path)!r} does not look like a whole FLUX transformer ({exc}); "
                               "pass the transformer checkpoint itself") from None
    config = {k: v for k, v in base_config.items() if not k.startswith("_")}
    config.update(inferred)
    axes = config.get("axes_dims_rope", [16, 56, 56])
    if sum(axes) != config["attention_head_dim"]:
        raise ModelSourceError(f"transformer checkpoint {str(path)!r} has attention heads of {config['attention_head_dim']} "
                               f"channels, but the RoPE axes of model.base's transformer config sum to {sum(axes)}; "
                               "use a base whose transformer config matches the checkpoint")
    _check_text_widths(path, config, base_root)
    return config


def _check_text_widths(path: Path, config: dict, root: Path | None) -> None:
    """The transformer reads T5's sequence and CLIP's pooled vector: their widths must be the base's."""
    if root is None:
        return
    for part, key, field, what in (("text_encoder_2", "d_model", "joint_attention_dim", "T5"),
                                   ("text_encoder", "hidden_size", "pooled_projection_dim", "CLIP")):
        file = root / part / "config.json"
        if not file.is_file():
            continue
        width = json.loads(file.read_text()).get(key)
        if width is not None and width != config[field]:
            raise ModelSourceError(f"transformer checkpoint {str(path)!r} reads {config[field]}-wide {what} features, "
                                   f"but model.base's {what} encoder gives {width}; it belongs to another model family")


def bfl_to_diffusers(state_dict: dict, config: dict) -> dict:
    """BFL/ComfyUI keys -> diffusers keys at any width (diffusers' own conversion assumes 3072)."""

    sd = {k.removeprefix("model.diffusion_model."): v for k, v in state_dict.items()}
    width = config["num_attention_heads"] * config["attention_head_dim"]
    out = {}

    def move(bfl, ours):
        for kind in ("weight", "bias", "scale"):
            if f"{bfl}.{kind}" in sd:
                out[f"{ours}.{'weight' if kind == 'scale' else kind}"] = sd.pop(f"{bfl}.{kind}")

    def split(bfl, ours: list[str], sizes: list[int]):
        for kind in ("weight", "bias"):
            if f"{bfl}.{kind}" in sd:
                for name, part in zip(ours, torch.split(sd.pop(f"{bfl}.{kind}"), sizes, dim=0)):
                    out[f"{name}.{kind}"] = part.contiguous()

    for bfl, ours in (("time_in.in_layer", "time_text_embed.timestep_embedder.linear_1"),
                      ("time_in.out_layer", "time_text_embed.timestep_embedder.linear_2"),
                      ("vector_in.in_layer", "time_text_embed.text_embedder.linear_1"),
                      ("vector_in.out_layer", "time_text_embed.text_embedder.linear_2"),
                      ("guidance_in.in_layer", "time_text_embed.guidance_embedder.linear_1"),
                      ("guidance_in.out_layer", "time_text_embed.guidance_embedder.linear_2"),
                      ("txt_in", "context_embedder"), ("img_in", "x_embedder"), ("final_layer.linear", "proj_out")):
        move(bfl, ours)
    for kind in ("weight", "bias"):  # BFL's final modulation is (shift, scale); diffusers' (scale, shift)
        key = f"final_layer.adaLN_modulation.1.{kind}"
        if key in sd:
            shift, scale = sd.pop(key).chunk(2, dim=0)
            out[f"norm_out.linear.{kind}"] = torch.cat([scale, shift])
    for i in range(config["num_layers"]):
        b, p = f"double_blocks.{i}.", f"transformer_blocks.{i}."
        for bfl, ours in (("img_mod.lin", "norm1.linear"), ("txt_mod.lin", "norm1_context.linear"),
                          ("img_mlp.0", "ff.net.0.proj"), ("img_mlp.2", "ff.net.2"),
                          ("txt_mlp.0", "ff_context.net.0.proj"), ("txt_mlp.2", "ff_context.net.2"),
                          ("img_attn.proj", "attn.to_out.0"), ("txt_attn.proj", "attn.to_add_out"),
                          ("img_attn.norm.query_norm", "attn.norm_q"), ("img_attn.norm.key_norm", "attn.norm_k"),
                          ("txt_attn.norm.query_norm", "attn.norm_added_q"),
                          ("txt_attn.norm.key_norm", "attn.norm_added_k")):
            move(b + bfl, p + ours)
        split(b + "img_attn.qkv", [p + "attn.to_q", p + "attn.to_k", p + "attn.to_v"], [width] * 3)
        split(b + "txt_attn.qkv", [p + "attn.add_q_proj", p + "attn.add_k_proj", p + "attn.add_v_proj"], [width] * 3)
    for i in range(config["num_single_layers"]):
        b, p = f"single_blocks.{i}.", f"single_transformer_blocks.{i}."
        for bfl, ours in (("modulation.lin", "norm.linear"), ("linear2", "proj_out"),
                          ("norm.query_norm", "attn.norm_q"), ("norm.key_norm", "attn.norm_k")):
            move(b + bfl, p + ours)
        split(b + "linear1", [p + "attn.to_q", p + "attn.to_k", p + "attn.to_v", p + "proj_mlp"],
              [width] * 3 + [width * MLP_RATIO])
    if sd:
        raise ValueError(f"{len(sd)} tensors with no place in a FLUX transformer, e.g. {next(iter(sd))!r}")
    return out
