"""What a render is conditioned on: one ``Task`` per kind of input (BFL's ``prepare_*`` idea).

A task is chosen from the config's ``[input]`` table and the model (``select``), checks its
inputs before anything loads (``validate``), reads its input images once (``prepare``), turns
them into the keyword arguments of its diffusers pipeline (``call_kwargs``) and writes its part
of the recipe (``Prepared.record``). The one ``pipe(...)`` call lives in ``render.py``; a family
says which diffusers class runs which task (``Family.pipeline_class``).

Adding a task: a module here with a ``Task`` subclass, registered in ``tasks/__init__.py``,
the pipeline class in each family that supports it, and an entry in the contract suite.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from ..config import Config
    from ..families.base import Family
    from ..resolution import Size


@dataclass
class Prepared:
    """A task's inputs, read and preprocessed once per run (shared by every seed of the run)."""

    task: str
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra pipeline keyword arguments (image=, mask_image=, …)
    inputs: list[dict] = field(default_factory=list)  # recipe records: role, path, sha256, size, steps, source, license
    record: dict[str, Any] = field(default_factory=dict)  # the task's other recipe facts (strength used, …)
    size: "Size | None" = None  # when the task decides the output size (e.g. the input image's size)
    role: str = "text"  # which diffusers class runs it (a family maps it to a diffusers class: Family.task_pipeline)
    per_image: tuple[str, ...] = ()  # kwargs repeated once per image of a pass (each seed's generator draws its own)
    finish: "Callable | None" = None  # image -> image after decoding (paste-back); None: unchanged
    # (pipe, request) -> more pipeline kwargs, computed with the loaded model once per run and shared by every
    # seed (Redux: the prior's prompt embeddings; it draws nothing from the generators)
    encode: "Callable | None" = None
    # the task's kwargs stand in for the prompt text (Redux's prompt_embeds): the family's prompt-text keywords
    # (Family.prompt_text_keys) are then not passed; guidance, lengths and the rest still are
    replaces_prompt: bool = False
    _encoded: dict = field(default_factory=dict, repr=False, compare=False)  # id(pipe) -> encode's result

    def encoded(self, pipe, request) -> dict:
        """``encode(pipe, request)``, once per loaded pipeline."""
        if self.encode is None:
            return {}
        key = id(pipe)
        if key not in self._encoded:
            self._encoded.clear()  # one model at a time: a run never switches back
            self._encoded[key] = self.encode(pipe, request)
        return self._encoded[key]
    # what the task adds to the memory estimate (memory.plan.Workload fields: reference_tokens,
    # condition_channels, encode_pixels); filled by ``Task.workload``
    workload: dict[str, int] = field(default_factory=dict)


class Task:
    name: str = ""
    role: str = "text"  # the diffusers pipeline role this task needs

    def select(self, config: "Config", family: "Family", preset: str) -> bool:
        """Whether this task is what ``config`` asks of a model of ``family``/``preset``."""
        raise NotImplementedError

    def validate(self, config: "Config", family: "Family", preset: str) -> None:
        """Raise ``ConfigError`` (one line: the bad value and the fix) before any weight loads."""

    def prepare(self, config: "Config", family: "Family", preset: str, size: "Size") -> Prepared:
        return Prepared(self.name)

    def workload(self, width: int, height: int, multiple: int, reference: tuple[int, int] | None = None) -> dict[str, int]:
        """What this task adds to the memory estimate of a ``width`` x ``height`` render (``Workload`` fields).

        ``reference``: the size of a reference image as the pipeline uses it (Kontext); ``None``: one at the
        output's aspect (``doctor --task``). Text to image adds nothing.
        """
        return {}
