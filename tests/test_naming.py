""""plan" means one thing: a render plan is ``plan``, a memory plan is ``memory_plan`` (a ``MemoryPlan``)."""

import re
from pathlib import Path

import localflux


def test_no_the_plan_and_memory_plans_are_named_so():
    root = Path(localflux.__file__).parent
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py") if re.search(r"\bthe_plan\b", p.read_text())]
    assert offenders == []
    loading = (root / "families" / "flux1" / "loading.py").read_text()
    assert "memory_plan: MemoryPlan | None = None" in loading and not re.search(r"\bplan\b\s*[.=]", loading)
