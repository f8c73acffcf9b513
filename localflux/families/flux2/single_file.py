"""A single-file FLUX.2 transformer's shape, read from its tensor shapes; and diffusers <-> BFL keys.

diffusers 0.42.1 detects every FLUX.2 single file as "flux-2-dev" (key ``single_stream_modulation.lin.weight``)
and, offline, needs ``config=`` a local folder. The file itself says what sizes the model: block counts,
width, head size (the RMS-norm scale is one head wide), text width (``txt_in``), the MLP ratio, the
timestep channels and whether there is a guidance embedder (dev) or not (klein). ``infer_config`` reads
those; ``pick_config`` names the shipped config folder that matches them (or the closest one of the same
kind, whose remaining fields - RoPE axes, theta, eps, patch size - are shared by every FLUX.2 model).

diffusers' BFL conversion (``convert_flux2_transformer_checkpoint_to_diffusers``) is width-agnostic (it
chunks fused qkv in three), so unlike FLUX.1 no own conversion is needed for loading; ``diffusers_to_bfl``
is the inverse, for writing BFL-layout files (tests, tools).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors import safe_open

from ...memory.formats import gguf_tensor_shapes
from ..shapes import COMFY_PREFIX, layout_of, skeleton, strip_prefix

BFL_PREFIX = COMFY_PREFIX  # ComfyUI full checkpoints

_LAYOUTS = {
    "diffusers": {
        "x": "x_embedder.weight", "context": "context_embedder.weight",
        "time": "time_guidance_embed.timestep_embedder.linear_1.weight",
        "guidance": "time_guidance_embed.guidance_embedder.",
        "double": "transformer_blocks.", "single": "single_transformer_blocks.",
        "head": ("transformer_blocks.0.attn.norm_q.weight", "single_transformer_blocks.0.attn.norm_q.weight"),
        "mlp": "transformer_blocks.0.ff.linear_in.weight",
    },
    "bfl": {
        "x": "img_in.weight", "context": "txt_in.weight", "time": "time_in.in_layer.weight",
        "guidance": "guidance_in.", "double": "double_blocks.", "single": "single_blocks.",
        "head": ("double_blocks.0.img_attn.norm.query_norm.scale", "single_blocks.0.norm.query_norm.scale"),
        "mlp": "double_blocks.0.img_mlp.0.weight",
    },
}

# fields of Flux2Transformer2DModel's config that the tensor shapes determine
SHAPE_FIELDS = ("in_channels", "num_layers", "num_single_layers", "attention_head_dim", "num_attention_heads",
                "joint_attention_dim", "timestep_guidance_channels", "mlp_ratio", "guidance_embeds")
# shipped transformer configs (published: klein-4B and base-4B; derived: klein-9B and dev, see configs/SOURCES.md)
CONFIG_FOLDERS = ("FLUX.2-klein-4B", "FLUX.2-klein-9B", "FLUX.2-dev")


def tensor_shapes(path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape from a safetensors header, or a GGUF file's tensor table (no weights read)."""
    if str(path).lower().endswith(".gguf"):

        return gguf_tensor_shapes(path)

    with safe_open(str(path), framework="pt") as handle:
        return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}


def is_flux2_transformer(shapes: dict) -> bool:
    keys = strip_prefix(shapes)
    return "single_stream_modulation.lin.weight" in keys or "single_stream_modulation.linear.weight" in keys


def infer_config(shapes: dict) -> dict:
    """The ``Flux2Transformer2DModel`` config fields a file's tensor shapes determine (ValueError if not FLUX.2)."""
    shapes = strip_prefix(shapes)
    if not is_flux2_transformer(shapes):
        raise ValueError("no single_stream_modulation tensor: not a FLUX.2 transformer")
    names = _LAYOUTS[layout_of(shapes)]
    for key in ("x", "context", "time"):
        if names[key] not in shapes:
            raise ValueError(f"no {names[key]} tensor")

    config = skeleton(shapes, names, names["head"])
    config["timestep_guidance_channels"] = shapes[names["time"]][1]
    width, doubles = config["num_attention_heads"] * config["attention_head_dim"], config["num_layers"]
    if doubles and names["mlp"] in shapes:  # SwiGLU: linear_in holds gate + value, 2 x mlp_hidden rows
        config["mlp_ratio"] = shapes[names["mlp"]][0] / 2 / width
    return config


def pick_config(inferred: dict, root: Path) -> tuple[str, dict]:
    """(folder name under ``root``, overrides): the shipped config matching the file, else the closest of its kind.

    ``overrides`` are the fields where the file differs from that config; pass them as keyword arguments to
    ``from_single_file`` (it updates the loaded config with them).
    """
    best, best_diff = None, None
    for name in CONFIG_FOLDERS:
        config = json.loads((root / name / "transformer" / "config.json").read_text())
        if bool(config.get("guidance_embeds", True)) != inferred["guidance_embeds"]:
            continue
        diff = {k: v for k, v in inferred.items() if config.get(k) != v}
        if best_diff is None or len(diff) < len(best_diff):
            best, best_diff = name, diff
    return best, best_diff


def diffusers_to_bfl(state_dict: dict) -> dict:
    """diffusers ``Flux2Transformer2DModel`` keys -> BFL keys (the inverse of diffusers' own conversion)."""

    renames = {
        "x_embedder": "img_in", "context_embedder": "txt_in",
        "time_guidance_embed.timestep_embedder.linear_1": "time_in.in_layer",
        "time_guidance_embed.timestep_embedder.linear_2": "time_in.out_layer",
        "time_guidance_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
        "time_guidance_embed.guidance_embedder.linear_2": "guidance_in.out_layer",
        "double_stream_modulation_img.linear": "double_stream_modulation_img.lin",
        "double_stream_modulation_txt.linear": "double_stream_modulation_txt.lin",
        "single_stream_modulation.linear": "single_stream_modulation.lin",
        "proj_out": "final_layer.linear",
    }
    double = {"attn.norm_q": "img_attn.norm.query_norm", "attn.norm_k": "img_attn.norm.key_norm",
              "attn.to_out.0": "img_attn.proj", "ff.linear_in": "img_mlp.0", "ff.linear_out": "img_mlp.2",
              "attn.norm_added_q": "txt_attn.norm.query_norm", "attn.norm_added_k": "txt_attn.norm.key_norm",
              "attn.to_add_out": "txt_attn.proj", "ff_context.linear_in": "txt_mlp.0",
              "ff_context.linear_out": "txt_mlp.2"}
    single = {"attn.to_qkv_mlp_proj": "linear1", "attn.to_out": "linear2",
              "attn.norm_q": "norm.query_norm", "attn.norm_k": "norm.key_norm"}
    sd = dict(state_dict)
    out = {}
    for key in list(sd):
        module, kind = key.rsplit(".", 1)
        if module in renames:
            out[f"{renames[module]}.{kind}"] = sd.pop(key)
        elif module == "norm_out.linear":  # diffusers (scale, shift) -> BFL (shift, scale)
            scale, shift = sd.pop(key).chunk(2, dim=0)
            out[f"final_layer.adaLN_modulation.1.{kind}"] = torch.cat([shift, scale])
    for key in list(sd):
        m = re.match(r"(single_)?transformer_blocks\.(\d+)\.(.+)\.(weight|bias)$", key)
        if not m:
            continue
        is_single, i, module, kind = m.groups()
        bfl_kind = "scale" if "norm" in module else kind
        if is_single and module in single:
            out[f"single_blocks.{i}.{single[module]}.{bfl_kind}"] = sd.pop(key)
        elif not is_single and module in double:
            out[f"double_blocks.{i}.{double[module]}.{bfl_kind}"] = sd.pop(key)
    for key in list(sd):
        m = re.match(r"transformer_blocks\.(\d+)\.attn\.(to_q|add_q_proj)\.(weight|bias)$", key)
        if not m:
            continue
        i, which, kind = m.groups()
        names = ("to_q", "to_k", "to_v") if which == "to_q" else ("add_q_proj", "add_k_proj", "add_v_proj")
        parts = [sd.pop(f"transformer_blocks.{i}.attn.{n}.{kind}") for n in names]
        stream = "img" if which == "to_q" else "txt"
        out[f"double_blocks.{i}.{stream}_attn.qkv.{kind}"] = torch.cat(parts, dim=0)
    if sd:
        raise ValueError(f"{len(sd)} tensors with no BFL name, e.g. {next(iter(sd))!r}")
    return out
