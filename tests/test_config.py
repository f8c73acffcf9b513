import pytest

from localflux.config import load_config, parse_set_value, with_preset
from localflux.errors import ConfigError
from localflux.families.flux1.presets import PRESETS


def write(tmp_path, text, name="c.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_precedence_preset_file_flags_set(tmp_path):
    path = write(tmp_path, "[sampling]\nsteps = 10\nguidance = 2.0\n[size]\nwidth = 512\nheight = 512\n")
    config = load_config(path, flags={"sampling.steps": 12, "size.width": None}, sets=["sampling.steps=14"])
    config = with_preset(config, PRESETS["dev"])
    assert config.sampling.steps == 14  # --set beats the flag, the flag beats the file
    assert config.sampling.guidance == 2.0  # the file beats the preset
    assert config.sampling.max_sequence_length == 512  # nobody set it: the preset fills it
    assert config.size.width == 512  # a flag left unset (None) does not override the file


def test_unknown_key_names_dotted_key_and_file(tmp_path):
    path = write(tmp_path, "[sampling]\nstepz = 4\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "sampling.stepz" in str(info.value) and str(path) in str(info.value)


def test_unknown_section(tmp_path):
    with pytest.raises(ConfigError, match="'sampler' is not a config section"):
        load_config(write(tmp_path, "[sampler]\nsteps = 4\n"))


def test_wrong_type_and_range(tmp_path):
    with pytest.raises(ConfigError, match=r"sampling\.steps must be an integer, got '4'"):
        load_config(write(tmp_path, '[sampling]\nsteps = "4"\n'))
    with pytest.raises(ConfigError, match=r"sampling\.steps must be at least 1, got -3"):
        load_config(write(tmp_path, "[sampling]\nsteps = -3\n"))
    with pytest.raises(ConfigError, match=r"size\.width must be at least 16, got 0"):
        load_config(None, sets=["size.width=0"])
    with pytest.raises(ConfigError, match=r"memory\.offload must be one of"):
        load_config(None, sets=["memory.offload=sometimes"])
    with pytest.raises(ConfigError, match=r"sampling\.guidance must be a number, got True"):
        load_config(None, sets=["sampling.guidance=true"])


def test_set_errors_name_the_option():
    with pytest.raises(ConfigError, match="--set sampling.stepz=3"):
        load_config(None, sets=["sampling.stepz=3"])
    with pytest.raises(ConfigError, match="must look like KEY=VALUE"):
        load_config(None, sets=["sampling.steps"])


def test_malformed_and_missing_files(tmp_path):
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(write(tmp_path, "[sampling\nsteps = 4\n"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'[prompt]\nsubject = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(bad)


def test_paths_are_relative_to_the_config_file(tmp_path):
    sub = tmp_path / "configs"
    sub.mkdir()
    (tmp_path / "models" / "mine").mkdir(parents=True)
    path = write(sub, '[model]\nsource = "../models/mine"\n[output]\ndir = "../renders"\n')
    config = load_config(path)
    assert config.model.source == str((tmp_path / "models" / "mine").resolve())
    assert config.output.dir == str((tmp_path / "renders").resolve())


def test_hub_ids_and_tiny_are_not_paths(tmp_path):
    path = write(tmp_path, '[model]\nsource = "black-forest-labs/FLUX.1-dev"\n')
    assert load_config(path).model.source == "black-forest-labs/FLUX.1-dev"
    assert load_config(write(tmp_path, '[model]\nsource = "tiny-dev"\n')).model.source == "tiny-dev"


def test_set_values_are_toml_values():
    assert parse_set_value("8") == 8
    assert parse_set_value("3.5") == 3.5
    assert parse_set_value('["a", "b"]') == ["a", "b"]
    assert parse_set_value("a red fox") == "a red fox"
    config = load_config(None, sets=["prompt.styling=[\"tri-x\", \"grain\"]", "prompt.subject=a fox, at dusk"])
    assert config.prompt.styling == ["tri-x", "grain"] and config.prompt.subject == "a fox, at dusk"


def test_shipped_configs_load():
    from pathlib import Path

    for path in sorted((Path(__file__).parents[1] / "configs").glob("*.toml")):
        if path.name.startswith("train-"):
            continue  # training configs have their own schema (tests/test_train_config.py)
        load_config(path)


def test_set_addresses_one_array_entry(tmp_path):
    path = write(tmp_path, '[[lora]]\npath = "a.safetensors"\nscale = 0.5\n[[lora]]\npath = "b.safetensors"\n')
    config = load_config(path, sets=["lora[1].scale=-0.25"])
    assert [entry.scale for entry in config.lora] == [0.5, -0.25]
    assert config.lora[0].path == str(tmp_path / "a.safetensors")
    with pytest.raises(ConfigError, match=r"only 2 \[\[lora\]\] entries, so lora\[2\] does not exist"):
        load_config(path, sets=["lora[2].scale=1"])
    with pytest.raises(ConfigError, match=r"lora\[0\]\.scael is not a known key"):
        load_config(path, sets=["lora[0].scael=1"])
    with pytest.raises(ConfigError, match=r"lora\[0\]\.scale must be a number"):
        load_config(path, sets=["lora[0].scale=big"])
    with pytest.raises(ConfigError, match="'sampling' is not an array of tables"):
        load_config(path, sets=["sampling[0].steps=2"])
