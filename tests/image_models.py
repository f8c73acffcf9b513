"""Test helper: tiny Fill, Kontext and control models of two shapes each (diffusers folders), a Redux prior, a
control LoRA, a Depth Anything model, and input pictures."""

from __future__ import annotations

from pathlib import Path


def save_task_model(kind: str, shape: str, folder: Path) -> None:
    """``kind``: base | fill | kontext | control; ``shape``: "tiny" (localflux.tiny) or a tests/shape_models.py name."""
    import torch
    from diffusers import FluxTransformer2DModel

    from localflux.families.flux1.pipelines import pipeline_class

    if shape == "tiny":
        from localflux.families.flux1.tiny import build_tiny_components

        components = build_tiny_components({"base": "dev"}.get(kind, kind))
    else:
        from shape_models import SHAPES, build_shape_pipeline

        components = dict(build_shape_pipeline(shape).components)
        if kind == "fill":  # [noisy 64 | masked-image latents 64 | mask f*f pixels x 2x2 patches]
            f = 2 ** (len(SHAPES[shape]["vae"]["block_out_channels"]) - 1)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(5)
                components["transformer"] = FluxTransformer2DModel(
                    patch_size=1, in_channels=128 + 4 * f * f, out_channels=64, **SHAPES[shape]["transformer"]).eval()
        if kind == "control":  # [noisy 64 | control-image latents 64]
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(6)
                components["transformer"] = FluxTransformer2DModel(
                    patch_size=1, in_channels=128, out_channels=64, **SHAPES[shape]["transformer"]).eval()
    role = {"base": "text"}.get(kind, kind)
    cls = pipeline_class(role)
    import inspect

    accepted = inspect.signature(cls.__init__).parameters
    cls(**{k: v for k, v in components.items() if k in accepted}).save_pretrained(folder)


def noise_picture(path: Path, size: tuple[int, int], seed: int = 0) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.RandomState(seed)
    Image.fromarray((rng.rand(size[1], size[0], 3) * 255).astype("uint8")).save(path)
    return path


def box_mask(path: Path, size: tuple[int, int], box: tuple[int, int, int, int]) -> Path:
    import numpy as np
    from PIL import Image

    mask = np.zeros((size[1], size[0]), np.uint8)
    mask[box[1]:box[3], box[0]:box[2]] = 255
    Image.fromarray(mask).save(path)
    return path


def save_redux_prior(folder: Path, txt_in_features: int, seed: int = 3, hidden: int = 24, image_size: int = 32) -> Path:
    """A tiny random FLUX.1 Redux prior as a diffusers folder: SigLIP vision model + processor + ReduxImageEncoder
    (the real one: SigLIP so400m 384 px, patch 14, width 1152 -> txt_in_features 4096)."""
    import torch
    from diffusers import FluxPriorReduxPipeline
    from diffusers.pipelines.flux.modeling_flux import ReduxImageEncoder
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = SiglipVisionModel(SiglipVisionConfig(hidden_size=hidden, intermediate_size=37, num_hidden_layers=2,
                                                       num_attention_heads=4, image_size=image_size, patch_size=8)).eval()
        embedder = ReduxImageEncoder(redux_dim=hidden, txt_in_features=txt_in_features).eval()
        with torch.no_grad():  # ReduxImageEncoder's default init is small; make its tokens matter
            for p in embedder.parameters():
                p.mul_(4.0)
    processor = SiglipImageProcessor(size={"height": image_size, "width": image_size}, resample=3,
                                     image_mean=[0.5] * 3, image_std=[0.5] * 3)
    FluxPriorReduxPipeline(image_encoder=encoder, feature_extractor=processor, image_embedder=embedder).save_pretrained(folder)
    return folder


def save_control_lora(path: Path, transformer, rank: int = 4, seed: int = 9) -> Path:
    """A tiny FLUX.1 control LoRA in diffusers keys, like BFL's Canny/Depth LoRAs after diffusers' conversion:
    x_embedder's LoRA reads 128 channels (noisy + control latents), a LoRA on one attention projection, and
    full q/k norm weights (written into the model, not added)."""
    import torch
    from safetensors.torch import save_file

    inner = transformer.x_embedder.out_features
    block = transformer.transformer_blocks[0].attn
    head = block.norm_q.weight.shape[0]
    g = torch.Generator().manual_seed(seed)
    tensors = {
        "transformer.x_embedder.lora_A.weight": torch.randn(rank, 2 * transformer.x_embedder.in_features, generator=g) * 0.2,
        "transformer.x_embedder.lora_B.weight": torch.randn(inner, rank, generator=g) * 0.2,
        "transformer.transformer_blocks.0.attn.to_q.lora_A.weight": torch.randn(rank, inner, generator=g) * 0.2,
        "transformer.transformer_blocks.0.attn.to_q.lora_B.weight": torch.randn(inner, rank, generator=g) * 0.2,
        "transformer.transformer_blocks.0.attn.norm_q.weight": 1 + torch.randn(head, generator=g) * 0.1,
        "transformer.transformer_blocks.0.attn.norm_k.weight": 1 + torch.randn(head, generator=g) * 0.1,
    }
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def save_depth_anything(folder: Path) -> Path:
    """A tiny random Depth Anything (DINOv2 backbone + DPT head) as a transformers folder, for control_kind = "depth"."""
    import torch
    from transformers import DPTImageProcessor, DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    backbone = Dinov2Config(hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32,
                            image_size=28, patch_size=14, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=16, neck_hidden_sizes=[8, 8, 8, 8],
                                 fusion_hidden_size=8, head_hidden_size=8, reassemble_factors=[4, 2, 1, 0.5],
                                 patch_size=14)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        DepthAnythingForDepthEstimation(config).eval().save_pretrained(folder)
    DPTImageProcessor(size={"height": 28, "width": 28}, keep_aspect_ratio=False, do_pad=False).save_pretrained(folder)
    return folder
