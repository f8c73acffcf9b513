"""Weight formats: fp8 storage (diffusers layerwise casting), torchao fp8 compute, NF4 and GGUF.

Only the weights' storage changes; every format computes in the model dtype (bf16 on GPUs) except
torchao's fp8, which also runs the matrix products in fp8. Formats that cannot run on the chosen
device are refused before any weight is read.
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import torch
from diffusers import BitsAndBytesConfig, FluxTransformer2DModel, GGUFQuantizationConfig
from diffusers.hooks import apply_layerwise_casting

from ..errors import DeviceError, ModelSourceError, first_line
from .footprint import T5_SKIP_PATTERNS

GGUF_SUFFIX = ".gguf"
# Names of a FLUX.1 transformer's first double block, in BFL/ComfyUI and in diffusers layout.
_FLUX_GGUF_MARKERS = ("double_blocks.0.img_attn", "transformer_blocks.0.attn.to_q",
                      "single_blocks.0.linear1", "single_transformer_blocks.0.attn.to_qkv_mlp_proj")  # FLUX.1, FLUX.2
_FLUX_GGUF_INPUTS = ("img_in.weight", "x_embedder.weight")


def check_runnable(transformer: str, device: str) -> None:
    """Refuse a format the device cannot run, in one sentence that says what to use instead."""
    if transformer == "nf4":
        if not device.startswith("cuda"):
            raise DeviceError(f"memory.transformer = 'nf4' needs a CUDA GPU (bitsandbytes), but the device is {device!r}; "
                              "use 'fp8-storage' or a GGUF file instead")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise DeviceError("memory.transformer = 'nf4' needs the bitsandbytes package: pip install bitsandbytes")
    if transformer == "fp8":
        if not device.startswith("cuda"):
            raise DeviceError(f"memory.transformer = 'fp8' (torchao fp8 compute) needs a CUDA GPU, but the device is "
                              f"{device!r}; use 'fp8-storage', which works everywhere")
        if importlib.util.find_spec("torchao") is None:
            raise DeviceError("memory.transformer = 'fp8' needs the torchao package: pip install torchao "
                              "(or use 'fp8-storage')")

        if torch.cuda.get_device_capability(torch.device(device)) < (8, 9):
            raise DeviceError(f"memory.transformer = 'fp8' needs fp8 tensor cores (compute capability 8.9+, e.g. "
                              f"RTX 40xx, L4, H100); {torch.cuda.get_device_name(torch.device(device))} has none; "
                              "use 'fp8-storage'")


def apply_transformer_format(transformer, fmt: str, compute_dtype, device: str) -> None:
    """Convert an already loaded transformer in place (fp8 storage or torchao fp8)."""

    if fmt == "fp8-storage":
        transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=compute_dtype)
    elif fmt == "fp8":
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

        transformer.to(device)  # torchao quantizes on the device it will run on
        quantize_(transformer, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()))


def apply_t5_format(text_encoder_2, fmt: str, compute_dtype) -> None:

    if fmt == "fp8-storage":

        apply_layerwise_casting(text_encoder_2, storage_dtype=torch.float8_e4m3fn, compute_dtype=compute_dtype,
                                skip_modules_pattern=T5_SKIP_PATTERNS)


def nf4_config(compute_dtype):
    """diffusers' bitsandbytes config for a 4-bit NF4 transformer computing in ``compute_dtype``."""

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype)


# ---------------------------------------------------------------- GGUF


def is_gguf(path: str | Path) -> bool:
    return str(path).lower().endswith(GGUF_SUFFIX)


def inspect_gguf(path: str | Path) -> tuple[str, int]:
    """(the dominant quantization type, e.g. ``Q8_0``; bytes of tensor data) of a FLUX GGUF transformer."""
    if importlib.util.find_spec("gguf") is None:
        raise ModelSourceError(f"{str(path)!r} is a GGUF file; reading it needs the gguf package: pip install gguf")
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except Exception as exc:  # the reader raises ValueError/struct errors/etc. on a bad header
        raise ModelSourceError(f"{str(path)!r} is not a readable GGUF file ({exc.__class__.__name__}); re-download it") from None
    names = [t.name for t in reader.tensors]
    if not (any(n.startswith(_FLUX_GGUF_MARKERS) for n in names) and any(n in _FLUX_GGUF_INPUTS for n in names)):
        raise ModelSourceError(f"{str(path)!r} is not a FLUX.1 transformer GGUF nor a FLUX.2 one (no FLUX transformer tensors); "
                               "pass a FLUX.1 or FLUX.2 transformer .gguf, not a text encoder or another model")
    sizes = Counter()
    for tensor in reader.tensors:
        sizes[tensor.tensor_type.name] += int(tensor.n_bytes)
    quantized = {k: v for k, v in sizes.items() if k not in ("F32", "F16", "BF16")} or sizes
    return max(quantized, key=quantized.get), sum(sizes.values())


def gguf_tensor_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Each tensor's logical shape in torch order (GGUF stores ggml order: fastest dimension first)."""
    inspect_gguf(path)  # one line for a missing package or an unreadable / foreign file
    from gguf import GGUFReader

    return {t.name: tuple(int(n) for n in reversed(list(t.shape))) for t in GGUFReader(str(path)).tensors}


def gguf_quantization(compute_dtype):
    """diffusers' quantization config for a GGUF file (weights stay quantized, dequantized per layer)."""

    return GGUFQuantizationConfig(compute_dtype=compute_dtype)


def gguf_has_guidance(path: str | Path) -> bool:
    from gguf import GGUFReader

    names = [t.name for t in GGUFReader(str(path)).tensors]
    return any(n.startswith(("guidance_in.", "time_text_embed.guidance_embedder.")) for n in names)


def load_gguf_transformer(path: Path, config_root: Path, compute_dtype):
    """A FluxTransformer2DModel whose linear weights stay GGUF-quantized and dequantize per layer."""

    inspect_gguf(path)
    try:
        return FluxTransformer2DModel.from_single_file(
            str(path), quantization_config=GGUFQuantizationConfig(compute_dtype=compute_dtype),
            config=str(config_root), subfolder="transformer", torch_dtype=compute_dtype,
        )
    except (OSError, ValueError, KeyError, RuntimeError, IndexError) as exc:
        raise ModelSourceError(f"could not load GGUF transformer {str(path)!r}: {first_line(exc)}; "
                               "is it a FLUX.1 transformer matching model.base?") from None
