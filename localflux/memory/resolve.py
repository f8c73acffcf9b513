"""From a config to the ``MemoryPlan`` a render uses: the user's own keys, or the automatic choice.

Replay never comes here with ``plan = "auto"``: the recipe's recorded plan is written back into
the config as manual keys (``replay.recipe_config``), so a replay does not re-decide.
"""

from __future__ import annotations

import logging

from ..errors import ConfigError
from ..render import vae_tiling_enabled
from ..resolution import resolve_size
from .formats import inspect_gguf, is_gguf
from .plan import MemoryPlan, Workload, auto_plan, probe_machine

log = logging.getLogger(__name__)

def gguf_of(source) -> tuple[str, int] | None:
    """(quantization type, tensor bytes) when the model source is a GGUF transformer."""

    if source.kind == "single_file" and is_gguf(source.path):
        return inspect_gguf(source.path)
    return None


def workload(config, placement, multiple: int = 16, *, size=None, task: dict | None = None) -> Workload:
    """The work of one image: ``size`` (the plan's final size; default: from the config) and what the task
    adds (``Prepared.workload``: reference tokens, input channels, VAE-encoded pixels)."""

    if size is None:
        size = resolve_size(config.size.width, config.size.height, config.size.megapixels, config.size.aspect,
                            multiple=multiple)
    return Workload(size.width, size.height, config.sampling.max_sequence_length or 512,
                    4 if placement.dtype == "float32" else 2,
                    vae_tiling_enabled(config.memory.vae_tiling, size.width, size.height), **(task or {}))


def resolve_plan(config, source, family, preset: str, placement, multiple: int, *, size=None,
                 task: dict | None = None) -> MemoryPlan:
    """The memory plan for a run: the config's own keys, or the automatic choice for this machine.

    ``size`` and ``task`` (the plan's final size and ``Prepared.workload``) make the automatic choice
    count what an image task adds; without them it plans text to image at the config's size."""
    memory = config.memory
    gguf = gguf_of(source)
    if gguf is not None and memory.transformer != "full":
        raise ConfigError(f"memory.transformer = {memory.transformer!r} cannot apply to the GGUF file "
                          f"{str(source.path)!r}, which brings its own format ({gguf[0]}); leave it 'full'")
    if memory.plan == "auto":
        # the user's placement of T5 stands (and is estimated as such); the rest is chosen
        return auto_plan(family.footprint(source, preset), workload(config, placement, multiple, size=size, task=task),
                         probe_machine(placement.device),
                         allow_lossy=memory.allow_lossy, headroom_gb=memory.headroom_gb, gguf=gguf,
                         group_blocks=memory.group_blocks, cache_t5=memory.cache_t5, t5_device=memory.t5_device,
                         text_on_cpu=family.auto_text_on_cpu)
    transformer = f"gguf:{gguf[0]}" if gguf else memory.transformer
    return MemoryPlan(transformer, memory.t5, memory.offload, memory.t5_device, memory.group_blocks, memory.cache_t5,
                      chosen_by="manual")


def plan_to_config_keys(plan: dict) -> dict:
    """The manual config keys that reproduce a recorded plan (for replay)."""
    transformer = plan.get("transformer", "full")
    return {
        "memory.plan": "manual",
        "memory.transformer": "full" if transformer.startswith("gguf") else transformer,
        "memory.t5": plan.get("t5", "full"),
        "memory.offload": plan.get("offload", "none"),
        "memory.t5_device": plan.get("t5_device", "auto"),
        "memory.group_blocks": plan.get("group_blocks", 1),
        "memory.cache_t5": plan.get("cache_t5", False),
    }
