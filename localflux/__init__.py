"""localflux: FLUX.1 [schnell] and [dev] on your own GPU, through diffusers."""

__version__ = "0.1.0"
