"""Recipes are untrusted data: damaged ones stop replay in one line (exit 2) before anything renders,
every older schema migrates, and the reader never raises anything but a ``RecipeError``."""

from __future__ import annotations

import json
import math
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from localflux.errors import RecipeError
from localflux.recipe_schema import SCHEMA_VERSION, Recipe, migrate


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    from localflux import generate

    folder = tmp_path_factory.mktemp("render")
    (result,) = generate({"model": {"source": "tiny"}, "prompt": {"subject": "a fox"},
                          "size": {"width": 32, "height": 32}, "sampling": {"seed": 3, "steps": 1}},
                         out_dir=folder, progress=False)
    return result


def _png_with(path, source_png, text: str, compressed: bool = False):
    """A copy of ``source_png`` whose ``localflux`` chunk holds ``text`` (tEXt, or zTXt when compressed)."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    if compressed:
        info.add_text("localflux", text, zip=True)
    else:
        info.add_text("localflux", text)
    with Image.open(source_png) as image:
        image.save(path, pnginfo=info)
    return path


def _edited(recipe: dict, **changes) -> str:
    return json.dumps({**recipe, **changes}, allow_nan=True)


DAMAGED = {
    "truncated JSON": lambda r: json.dumps(r)[:200],
    "a 2 MB prompt": lambda r: _edited(r, prompt={**r["prompt"], "final": "x" * (2 << 20)}),
    "nesting 10 000 deep": lambda r: _edited(r, config="[" * 10_000 + "]" * 10_000).replace('"[[[', "[[[").replace(']]]"', "]]]"),
    "NaN seed": lambda r: _edited(r, seed=math.nan),
    "infinite sigma": lambda r: _edited(r, sigmas=[math.inf]),
    "seed as a string": lambda r: _edited(r, seed="7"),
    "warnings as a number": lambda r: _edited(r, warnings=5),
    "schema_version 0": lambda r: _edited(r, schema_version=0),
    "schema_version -1": lambda r: _edited(r, schema_version=-1),
    "schema_version true": lambda r: _edited(r, schema_version=True),
    "unknown key": lambda r: _edited(r, surprise=1),
    "negative seed": lambda r: _edited(r, seed=-4),
    "files not a list": lambda r: _edited(r, model={**r["model"], "files": {"a": 1}}),
}


@pytest.mark.parametrize("name", list(DAMAGED))
def test_a_damaged_recipe_is_one_line_and_exit_2_before_rendering(name, rendered, tmp_path, run_cli, monkeypatch):
    from localflux import pipeline

    monkeypatch.setattr(pipeline, "render_batch", lambda *a, **k: pytest.fail("rendered a damaged recipe"))
    png = _png_with(tmp_path / "damaged.png", rendered.path, DAMAGED[name](rendered.recipe))
    code, out, err = run_cli("replay", png, "--verify", "--out", tmp_path / "out", "--no-progress")
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, (out, err)
    assert "Traceback" not in err and "damaged.png" in lines[0]
    assert not (tmp_path / "out").exists()


def test_a_huge_compressed_chunk_is_refused_without_inflating_it(rendered, tmp_path, run_cli):
    # 50 MB of prompt packed into a ~50 kB zTXt chunk: Pillow's text-chunk limit stops it, as one line
    text = _edited(rendered.recipe, prompt={**rendered.recipe["prompt"], "final": "x" * (50 << 20)})
    assert len(zlib.compress(text.encode())) < 1 << 20
    png = _png_with(tmp_path / "bomb.png", rendered.path, text, compressed=True)
    code, out, err = run_cli("replay", png, "--no-progress")
    assert code == 2 and len((out + err).strip().splitlines()) == 1, (out, err)


def test_schema_1_recipes_migrate_keeping_every_key(rendered):
    old = json.loads(json.dumps(rendered.recipe))
    old["schema_version"] = 1
    old["sweep"] = old["extensions"].pop("sweep", {"key": "sampling.guidance", "value": 2.5, "row": 0, "column": 1})
    for key in ("task", "inputs", "extensions"):
        old.pop(key)
    old["model"].pop("family")
    migrated = Recipe.from_dict(migrate(old)).to_dict()
    assert migrated["schema_version"] == SCHEMA_VERSION
    assert migrated["extensions"]["sweep"] == old["sweep"] and "sweep" not in migrated
    assert migrated["task"] == {"name": "text"} and migrated["inputs"] == [] and migrated["model"]["family"] == "flux1"
    for key in old:
        if key not in ("schema_version", "sweep", "model"):
            assert migrated[key] == old[key], key


def test_the_current_schema_round_trips(rendered):
    assert Recipe.from_dict(migrate(rendered.recipe)).to_dict() == rendered.recipe


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                     max_leaves=20)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_json)
def test_any_json_is_accepted_or_a_recipe_error(data):
    try:
        Recipe.from_dict(migrate(data))
    except RecipeError:
        pass


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["seed", "index", "size", "prompt", "sigmas", "model", "versions", "device", "decisions",
                            "warnings", "upscale_steps", "loras", "task", "inputs", "extensions", "config"]),
       value=_json)
def test_any_value_in_any_field_is_accepted_or_a_recipe_error(rendered, key, value):
    try:
        Recipe.from_dict(migrate({**rendered.recipe, key: value}))
    except RecipeError:
        pass
