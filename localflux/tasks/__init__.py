"""The registry of tasks, in selection order: the first whose ``select`` says yes runs the render.

Order matters: model-bound tasks first (a Fill or Kontext model always runs its own task), then the
tasks chosen by the inputs (inpaint before img2img: a mask makes an img2img an inpaint), text last.
"""

from __future__ import annotations

from .base import Prepared, Task
from .img2img import Img2ImgTask
from .inpaint import FillTask, InpaintTask
from .kontext import KontextTask
from .text import TextTask

TASKS: list[Task] = []


def register(task: Task, *, before: str | None = None) -> None:
    """Add ``task`` (at the end, or before the task named ``before``); a second task of a name is refused."""
    if any(existing.name == task.name for existing in TASKS):
        raise ValueError(f"a task named {task.name!r} is already registered")
    at = next((i for i, t in enumerate(TASKS) if t.name == before), len(TASKS)) if before else len(TASKS)
    TASKS.insert(at, task)


for _task in (FillTask(), KontextTask(), InpaintTask(), Img2ImgTask(), TextTask()):
    register(_task)


def select_task(config, family, preset: str) -> Task:
    """The task for ``config`` on a model of ``family``/``preset``, its inputs checked (nothing read yet)."""
    from .common import check_common

    check_common(config, preset)
    for task in TASKS:
        if task.select(config, family, preset):
            task.validate(config, family, preset)
            return task
    raise ValueError("no task selected")  # TextTask selects everything: a registry bug


def get_task(name: str) -> Task:
    for task in TASKS:
        if task.name == name:
            return task
    raise KeyError(name)


__all__ = ["Prepared", "Task", "TASKS", "register", "select_task", "get_task"]
