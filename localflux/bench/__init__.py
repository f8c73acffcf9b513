"""``localflux bench``: localflux against plain diffusers, full-size FLUX on random weights.

- ``models``: full-size FLUX.1-dev/schnell from the packaged configs, built on the meta device and
  materialized on the GPU (``to_empty`` + seeded init), with synthetic tokenizers of the real
  sequence lengths; the meta-device dry run;
- ``run``: the modes, the timing, the baseline, the results file (schema in docs/speed.md).
"""
