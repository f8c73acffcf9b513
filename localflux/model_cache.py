"""The process-wide model cache: loaded pipelines kept per key, handed out with clean base weights.

``MODELS`` (the one ``ModelCache``) owns loading, discarding and reloading; ``loader.load_model`` only
loads. What a render gets never depends on the render before it:

- ``get(key, load_fn)`` returns the cached model for ``key`` (``load_fn()`` loads and keeps it on a
  miss) with clean base weights. A cached model that still carries LoRAs (``model.lora_state``) is
  cleaned first, through the LoRA stage's handle (``lora.state``): unfused adapters are unloaded
  (``remove_loras`` → ``True``: the base weights were never touched); fused LoRAs changed the base
  weights (``remove_loras`` → ``False``: un-fusing restores them only up to rounding), so the model is
  discarded and ``load_fn()`` loads it again. The cache decides; the LoRA stage never loads or discards.
- ``get(key, load_fn, loras=request)``, for a render about to apply ``request`` (a ``lora.LoraRequest``):
  before cleaning, the cache asks ``lora.state.can_keep(model, request)``. When the adapters in the
  model can become the request's in place — the same files and mode (only unfused scales change), or a
  hot-swap into the same adapter slots of a compiled model prepared with ``speed.lora_hotswap_rank`` —
  the model is handed out as it is and ``lora.apply_loras(model, request)`` re-scales or swaps, so a
  compiled model does not recompile and a fused LoRA is not fused again for every image of a batch.
  Otherwise the model is cleaned as above.
- ``load(model_config, placement, ...)``: ``get`` keyed by everything that changes the loaded weights
  (``loader.model_key``), loading with ``loader.load_model``.
- ``discard(model)`` forgets one model (the next ``get`` loads it afresh); ``clear()`` forgets all
  (the batch runner frees memory this way after running out of it).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

from .loader import LoadedModel, load_model, model_key
from .lora.state import LoraRequest, can_keep, remove_loras
from .memory.plan import MemoryPlan


class ModelCache:
    """Loaded models by key; every model handed out is a clean base (or one the LoRA request can keep)."""

    def __init__(self) -> None:
        self._models: dict[Hashable, LoadedModel] = {}

    def get(self, key: Hashable, load_fn: Callable[[], LoadedModel], *, loras: LoraRequest | None = None) -> LoadedModel:
        model = self._models.get(key)
        if model is not None and not self._clean(model, loras):
            self.discard(model)
            model = None
        if model is None:
            model = load_fn()
            self._models[key] = model
        return model

    def load(self, model, placement, *, family, preset: str, memory_plan=None, speed=None,
             loras: LoraRequest | None = None) -> LoadedModel:
        """The model for ``model`` (a ``ModelConfig``) of ``family``/``preset`` on ``placement``; see ``loader.load_model``."""
        plan = memory_plan or MemoryPlan()
        return self.get(model_key(model, placement, preset, plan, speed),
                        lambda: load_model(model, placement, family=family, preset=preset, memory_plan=plan, speed=speed),
                        loras=loras)

    def discard(self, model: LoadedModel) -> None:
        """Forget ``model`` (its weights were changed): the next ``get`` of its key loads it afresh."""
        for key, cached in list(self._models.items()):
            if cached is model:
                del self._models[key]

    def clear(self) -> None:
        self._models.clear()

    def __contains__(self, model: LoadedModel) -> bool:
        return any(cached is model for cached in self._models.values())

    @staticmethod
    def _clean(model: LoadedModel, loras: LoraRequest | None) -> bool:
        """Make ``model`` a clean base (or keep what ``loras`` can reuse); ``False``: only a reload cleans it."""
        if model.lora_state is None or (loras is not None and can_keep(model, loras)):
            return True
        return remove_loras(model)


MODELS = ModelCache()
