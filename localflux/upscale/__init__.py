"""Real-ESRGAN upscaling: ncnn weight conversion, own RRDBNet/SRVGGNetCompact, seam-free tiling.

``from localflux.upscale import upscale_pil`` is the entry point for the generate pipeline; it is
imported lazily so that ``import localflux.upscale.registry`` (``weights list``) needs no torch.
See docs/upscale.md.
"""

__all__ = ["upscale_pil", "Upscaler"]


def __getattr__(name):
    if name in __all__:
        from . import stage

        return getattr(stage, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
