"""The registry of tasks, in selection order: the first whose ``select`` says yes runs the render.

Order matters: model-bound tasks first (a Fill or Kontext model always runs its own task; a control
model, or --control with a control LoRA, runs control), then the tasks chosen by the inputs (Redux; inpaint
before img2img: a mask makes an img2img an inpaint), text last.
A family lists the tasks it runs (``Family.tasks``); asking another is one clear error.
"""

from __future__ import annotations

from ..errors import ConfigError
from .base import Prepared, Task
from .common import check_common
from .control import ControlTask
from .img2img import Img2ImgTask
from .inpaint import FillTask, InpaintTask
from .kontext import KontextTask
from .redux import ReduxTask
from .reference import ReferenceTask
from .text import TextTask


class TaskRegistry:
    def __init__(self) -> None:
        self._tasks: list[Task] = []

    def register(self, task: Task, *, before: str | None = None) -> Task:
        """Add ``task`` (at the end, or before the task named ``before``); a second task of a name is refused."""
        if any(t.name == task.name for t in self._tasks):
            raise ValueError(f"a task named {task.name!r} is already registered")
        at = next((i for i, t in enumerate(self._tasks) if t.name == before), len(self._tasks)) if before else len(self._tasks)
        self._tasks.insert(at, task)
        return task

    def __iter__(self):
        return iter(self._tasks)

    def by_name(self, name: str) -> Task:
        for task in self._tasks:
            if task.name == name:
                return task
        raise KeyError(name)

    def select(self, config, family, preset: str) -> Task:
        """The task for ``config`` on a model of ``family``/``preset`` (nothing read yet)."""
        check_common(config, preset, family)
        for task in self._tasks:
            if task.select(config, family, preset):
                if task.name not in family.tasks:
                    raise ConfigError(f"{family.label} models cannot run the {task.name!r} task; "
                                      f"they run: {', '.join(family.tasks)}")
                return task
        raise ValueError("no task selected")  # TextTask selects everything: a registry bug


TASKS = TaskRegistry()
for _task in (FillTask(), KontextTask(), ControlTask(), ReduxTask(), InpaintTask(), ReferenceTask(), Img2ImgTask(),
              TextTask()):
    TASKS.register(_task)

__all__ = ["TASKS", "Prepared", "Task", "TaskRegistry"]
