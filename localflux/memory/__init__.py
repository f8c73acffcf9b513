"""Fitting FLUX into the memory a machine has: weight formats, offload modes and the automatic plan.

- ``footprint``: parameter counts and block sizes of a model, from its configs (meta device) or modules;
- ``plan``: candidate plans, their estimated peak memory, and the choice for ``memory.plan = "auto"``;
- ``formats``: fp8 storage, torchao fp8, NF4 and GGUF transformers; the T5 encoder's own format;
- ``offload``: none / model / group / sequential / resident placement through diffusers' hooks;
- ``text``: prompt embeddings computed apart from the pipeline (T5 on the CPU, cached across renders).
"""
