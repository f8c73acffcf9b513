"""Property-based tests of every user-facing parser: for any input they succeed or raise a LocalFluxError.

Each test keeps its examples few and small (max_examples <= 100, no deadline), so the file runs in seconds.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from localflux import config as config_mod
from localflux.errors import LocalFluxError

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SMALL = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SECTIONS = [f.name for f in dataclasses.fields(config_mod.Config)]


def _field_names() -> list[str]:
    names = set()
    for section in dataclasses.fields(config_mod.Config):
        value = getattr(config_mod.Config(), section.name)
        items = value if isinstance(value, list) else [value]
        for item in items:
            names |= {f.name for f in dataclasses.fields(item)}
    names |= {"path", "scale", "name", "strict"}  # [[lora]] entries
    return sorted(names)


FIELD_NAMES = _field_names()

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
                    st.sampled_from(["tiny", "auto", "cpu", "3:4", "bfloat16", "none", "fused", "schnell", "-1", ""]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=8),
                                                                       inner, max_size=3)), max_leaves=8)
tables = st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=6), values, max_size=5)
configs = st.dictionaries(st.sampled_from(SECTIONS) | st.text(max_size=6),
                          st.one_of(tables, st.lists(tables, max_size=2), scalars), max_size=5)


def toml_value(value) -> str:
    """A TOML literal for a JSON-like value (None becomes an empty inline table: TOML has no null)."""
    if value is None:
        return "{}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(str(k), ensure_ascii=False)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_document(data: dict) -> str:
    return "".join(f"{json.dumps(str(k), ensure_ascii=False)} = {toml_value(v)}\n" for k, v in data.items())


def _expect_typed(call, *args, **kwargs):
    try:
        return call(*args, **kwargs)
    except LocalFluxError:
        return None


def _write(folder: Path, name: str, data: bytes | str) -> Path:
    path = folder / name
    path.write_bytes(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
    return path


# ---------------------------------------------------------------- config


@SETTINGS
@given(configs)
def test_config_from_any_dict(data):
    _expect_typed(config_mod.config_from_dict, data)


@SETTINGS
@given(configs)
def test_config_file_from_any_toml_table(data):
    with tempfile.TemporaryDirectory() as folder:
        _expect_typed(config_mod.load_config, _write(Path(folder), "c.toml", toml_document(data)))


@SMALL
@given(st.text(max_size=200) | st.binary(max_size=200))
def test_config_file_from_any_text_or_bytes(text):
    with tempfile.TemporaryDirectory() as folder:
        _expect_typed(config_mod.load_config, _write(Path(folder), "c.toml", text))


@SETTINGS
@given(st.lists(st.one_of(st.text(max_size=40),
                          st.builds(lambda k, f, v: f"{k}.{f}={toml_value(v)}", st.sampled_from(SECTIONS),
                                    st.sampled_from(FIELD_NAMES), values),
                          st.builds(lambda f, v: f"lora[0].{f}={toml_value(v)}", st.sampled_from(FIELD_NAMES), values)),
                max_size=4))
def test_set_options(options):
    for option in options:
        _expect_typed(config_mod.parse_set_option, option)
    _expect_typed(config_mod.load_config, None, sets=options)


# ---------------------------------------------------------------- LoRA file headers


def _safetensors(header, tail: bytes, length_delta: int = 0) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", max(0, len(raw) + length_delta)) + raw + tail


tensor_entries = st.fixed_dictionaries({
    "dtype": st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "F8_E4M3", "X9"]) | st.text(max_size=4),
    "shape": st.lists(st.integers(min_value=-2, max_value=5), max_size=3) | scalars,
    "data_offsets": st.lists(st.integers(min_value=-4, max_value=64), min_size=0, max_size=3) | scalars,
})
headers = st.dictionaries(
    st.sampled_from(["__metadata__", "transformer.x.lora_A.weight", "lora_unet_a.lora_down.weight", "a.alpha"])
    | st.text(max_size=10),
    st.one_of(tensor_entries, st.dictionaries(st.sampled_from(["lora_adapter_metadata", "format", "ss_network_alpha"])
                                              | st.text(max_size=6),
                                              st.text(max_size=30) | st.just('{"transformer.r": 4}') | st.just("[1]"),
                                              max_size=3), scalars),
    max_size=4)


@SETTINGS
@given(st.one_of(st.binary(max_size=120),
                 st.builds(_safetensors, headers, st.binary(max_size=64), st.integers(min_value=-3, max_value=3))))
def test_lora_reader_any_bytes(data):
    from localflux.lora.files import peft_metadata, read_lora, refuse_unsupported

    with tempfile.TemporaryDirectory() as folder:
        path = _write(Path(folder), "x.safetensors", data)
        lora = _expect_typed(read_lora, path)
        if lora is not None:
            _expect_typed(refuse_unsupported, lora)
            peft_metadata(lora.metadata)


@SETTINGS
@given(st.dictionaries(st.sampled_from(["lora_adapter_metadata", "format"]),
                       st.one_of(st.text(max_size=30), st.builds(json.dumps, values)), max_size=2))
def test_peft_metadata_of_any_header(metadata):
    from localflux.lora.files import peft_metadata

    assert isinstance(peft_metadata(metadata), dict)
    assert isinstance(peft_metadata(metadata, "transformer"), dict)


lora_keys = st.sampled_from(["transformer.single_transformer_blocks.0.proj_out.lora_A.weight",
                             "transformer.single_transformer_blocks.0.proj_out.lora_B.weight",
                             "lora_unet_single_blocks_0_linear2.lora_down.weight", "lora_unet_single_blocks_0_linear2.alpha",
                             "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight", "x.dora_scale",
                             "diffusion_model.double_blocks.0.img_attn.proj.lora_A.weight", "a.diff"]) | st.text(max_size=12)


@SMALL
@given(st.dictionaries(lora_keys, st.lists(st.integers(min_value=0, max_value=3), max_size=2), min_size=1, max_size=4),
       st.dictionaries(st.sampled_from(["lora_adapter_metadata", "format", "ss_network_alpha", "software"])
                       | st.text(max_size=6), st.text(max_size=20) | st.builds(json.dumps, values), max_size=3))
def test_lora_inspect_of_any_well_formed_file(shapes, metadata):
    """Real safetensors files with arbitrary keys, shapes and metadata: inspect reports or refuses in one sentence."""
    import torch
    from safetensors.torch import save_file

    from localflux.lora.files import detect_format, read_lora
    from localflux.lora.inspect import inspect_lora

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.safetensors"
        save_file({k: torch.ones(tuple(v)) for k, v in shapes.items()}, str(path), metadata=metadata)
        lora = _expect_typed(read_lora, path)
        if lora is not None:
            detect_format(lora)
        _expect_typed(inspect_lora, path)


# ---------------------------------------------------------------- job files


JOB_KEYS = ["prompts", "prompt_file", "seeds", "variants", "config", "name", "out", "dir"]
jobs = st.fixed_dictionaries(
    {"job": st.dictionaries(st.sampled_from(JOB_KEYS) | st.text(max_size=5),
                            st.one_of(values, st.lists(st.integers(min_value=-3, max_value=2**64), max_size=3),
                                      st.lists(st.text(max_size=10), max_size=3),
                                      st.lists(st.dictionaries(st.sampled_from(SECTIONS + ["name"]), tables | scalars,
                                                               max_size=2), max_size=2)),
                            max_size=4) | scalars},
    optional={"model": st.just({"source": "tiny", "device": "cpu"}), "size": tables, "sampling": tables})


@SETTINGS
@given(jobs)
def test_job_file_from_any_table(data):
    from localflux.batch.jobs import load_job

    with tempfile.TemporaryDirectory() as folder:
        _expect_typed(load_job, _write(Path(folder), "job.toml", toml_document(data)), out=Path(folder) / "out")


@SMALL
@given(st.text(max_size=200))
def test_job_file_from_any_text(text):
    from localflux.batch.jobs import load_job

    with tempfile.TemporaryDirectory() as folder:
        _expect_typed(load_job, _write(Path(folder), "job.toml", text), out=Path(folder) / "out")


# ---------------------------------------------------------------- recipes, as inspect reads them


@SETTINGS
@given(st.fixed_dictionaries({key: values for key in ("localflux_version", "config", "seed", "index", "size", "prompt",
                                                        "sigmas", "model", "versions", "device", "dtype", "decisions",
                                                        "warnings", "upscale_steps")},
                             optional={"loras": values, "inputs": values}))
def test_inspect_any_recipe_values(recipe):
    from PIL import Image

    from localflux.inspect import format_text, inspect_image
    from localflux.io.png import pnginfo

    recipe["schema_version"] = 1
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "r.png"
        Image.new("RGB", (2, 2)).save(path, pnginfo=pnginfo({"localflux": json.dumps(recipe)}))
        info = _expect_typed(inspect_image, path)
        if info is not None:
            format_text(info)
