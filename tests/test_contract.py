"""The contract every registered (family, task) keeps, checked on tiny random-weight models.

- parity: localflux renders the pixels the family's diffusers pipeline class renders (exactly);
- seeds: item k of a run is the single render of seed s+k (batch size 1), for every task;
- replay: a saved PNG replays identical;
- determinism across processes and a bad input -> exit 2 with one line: once per family (costly).
"""

from __future__ import annotations

import hashlib
import importlib
import json

import numpy as np
import pytest

from localflux import generate
from localflux.families.registry import FAMILIES
from localflux.replay import replay
from localflux.tasks import TASKS

from conftest import pixels, run_subprocess
from contract_cases import CASES, Workspace


def _once_per_family():
    seen, chosen = set(), []
    for case in CASES:
        if case.family not in seen and case.task == "text":
            seen.add(case.family)
            chosen.append(case)
    return chosen


def _by_id(case_list):
    return pytest.mark.parametrize("case", case_list, ids=[c.id for c in case_list])


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return Workspace(tmp_path_factory.mktemp("contract"))


@pytest.fixture
def built(case, workspace, monkeypatch):
    for (module, attribute), value in case.patches.items():
        monkeypatch.setattr(importlib.import_module(module), attribute, value)
    return case.build(workspace)


def test_every_registered_family_and_task_has_a_case():
    covered = {(c.family, c.task) for c in CASES}
    registered = {(f.name, t.name) for f in FAMILIES for t in TASKS if t.name in f.tasks}
    assert registered <= covered, f"no contract case for {sorted(registered - covered)}"


@_by_id(CASES)
def test_parity_with_the_diffusers_pipeline(case, built):
    config, reference = built
    ours = generate(config, save=False, progress=False)[0]
    theirs = reference(config["sampling"]["seed"])
    assert ours.image.size == theirs.size
    assert np.array_equal(pixels(ours.image), pixels(theirs)), "localflux differs from diffusers"
    assert ours.recipe["model"]["family"] == case.family and ours.recipe["task"]["name"] == case.task


@_by_id(CASES)
def test_item_k_is_the_single_render_of_seed_s_plus_k(case, built):
    config, _ = built
    seed = config["sampling"]["seed"]
    run = generate({**config, "sampling": {**config["sampling"], "count": 2}}, save=False, progress=False)
    single = generate({**config, "sampling": {**config["sampling"], "seed": seed + 1}}, save=False, progress=False)[0]
    assert [r.seed for r in run] == [seed, seed + 1]
    assert np.array_equal(pixels(run[1].image), pixels(single.image))


@_by_id(CASES)
def test_saved_png_replays_identical(case, built, tmp_path):
    config, _ = built
    (result,) = generate(config, out_dir=tmp_path, progress=False)
    replayed = replay(result.path, progress=False)
    assert replayed.identical and replayed.max_difference == 0


@_by_id(_once_per_family())
def test_same_png_bytes_in_another_process(case, built, tmp_path):
    config, _ = built
    (result,) = generate(config, out_dir=tmp_path / "here", progress=False)
    flags = [flag for section, table in config.items() for key, value in table.items()
             for flag in ("--set", f"{section}.{key}={json.dumps(value)}")]
    proc = run_subprocess("generate", *flags, "--out", tmp_path / "there", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (other,) = (tmp_path / "there").glob("*.png")
    assert hashlib.sha256(other.read_bytes()).digest() == hashlib.sha256(result.path.read_bytes()).digest()


@_by_id(_once_per_family())
def test_a_bad_input_is_one_line_and_exit_2(case, tmp_path):
    proc = run_subprocess("generate", *case.bad_flags, "--out", tmp_path / "out", cwd=tmp_path)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stdout + proc.stderr
    assert not (tmp_path / "out").exists()
