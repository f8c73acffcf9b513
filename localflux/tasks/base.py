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
