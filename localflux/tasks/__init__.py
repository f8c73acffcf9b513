"""The registry of tasks, asked in order; the first that ``select``s a config runs it (see ``base.py``)."""

from __future__ import annotations

from ..errors import ConfigError
from .base import Prepared, Task
from .text import TextToImage


class TaskRegistry:
    def __init__(self) -> None:
        self._tasks: list[Task] = []

    def register(self, task: Task) -> Task:
        if any(t.name == task.name for t in self._tasks):
            raise ValueError(f"task {task.name!r} is registered twice")
        self._tasks.append(task)
        return task

    def __iter__(self):
        return iter(self._tasks)

    def by_name(self, name: str) -> Task:
        for task in self._tasks:
            if task.name == name:
                return task
        raise KeyError(name)

    def select(self, config, family, preset: str) -> Task:
        for task in self._tasks:
            if task.select(config, family, preset):
                if task.name not in family.tasks:
                    raise ConfigError(f"{family.label} models cannot run the {task.name!r} task; "
                                      f"they run: {', '.join(family.tasks)}")
                return task
        raise ConfigError("no task fits these inputs")  # unreachable while text is registered last


TASKS = TaskRegistry()
TASKS.register(TextToImage())  # last: the fallback when no image input is given

__all__ = ["TASKS", "Prepared", "Task", "TaskRegistry"]
