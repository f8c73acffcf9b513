"""Real-ESRGAN upscaling: ncnn weight conversion, own RRDBNet/SRVGGNetCompact, seam-free tiling.

``from localflux.upscale import upscale_pil`` is the entry point for the generate pipeline. See docs/upscale.md.
"""

from .stage import Upscaler, upscale_pil

__all__ = ["upscale_pil", "Upscaler"]
