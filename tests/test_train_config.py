"""The training config: strict like the render config, plus the rules that tie its keys together."""

from pathlib import Path

import pytest

from localflux.config import load_config
from localflux.errors import ConfigError, DatasetError
from localflux.train.config import DEFAULT_TARGETS, load_train_config

from _train_helpers import write_config

REPO = Path(__file__).resolve().parents[1]


def test_shipped_train_configs_load():
    shipped = sorted((REPO / "configs").glob("train-*.toml"))
    assert shipped
    for path in shipped:
        config = load_train_config(path)
        assert config.dataset.trigger and config.samples.prompts
        # paths are relative to the config file
        assert Path(config.dataset.folder).is_absolute() and Path(config.output.dir).parent.parent == REPO


def test_train_config_is_not_a_render_config():
    with pytest.raises(ConfigError, match="'dataset' is not a config section"):
        load_config(REPO / "configs" / "train-subject.toml")


def test_unknown_key_and_section_name_the_key_and_file(tmp_path):
    path = write_config(tmp_path, extra="\n[trianing]\nsteps = 3\n")
    with pytest.raises(ConfigError, match=r"'trianing' is not a config section.*train-subject.toml"):
        load_train_config(path)
    path = write_config(tmp_path, name="b.toml", extra="\n[memory]\nfp8 = true\n")
    with pytest.raises(ConfigError) as info:
        load_train_config(path)
    assert "memory.fp8" in str(info.value) and "b.toml" in str(info.value)


def test_types_ranges_and_set_overrides(tmp_path):
    path = write_config(tmp_path)
    assert load_train_config(path, sets=["training.steps=9"]).training.steps == 9
    with pytest.raises(ConfigError, match=r"training.steps must be an integer"):
        load_train_config(path, sets=['training.steps="9"'])
    with pytest.raises(ConfigError, match=r"dataset.caption_dropout must be at most 1.0"):
        load_train_config(path, sets=["dataset.caption_dropout=1.5"])
    with pytest.raises(ConfigError, match=r"optimizer.name must be one of"):
        load_train_config(path, sets=['optimizer.name="sgd"'])


def test_bucket_not_multiple_of_16(tmp_path):
    with pytest.raises(ConfigError, match="dataset.resolutions has 500, which is not a multiple of 16"):
        load_train_config(write_config(tmp_path), sets=["dataset.resolutions=[512, 500]"])


def test_trigger_missing(tmp_path):
    with pytest.raises(DatasetError, match="dataset.trigger is empty"):
        load_train_config(write_config(tmp_path), sets=['dataset.trigger=""'])


def test_cross_key_rules(tmp_path):
    path = write_config(tmp_path)
    with pytest.raises(ConfigError, match="exactly one of training.steps and training.epochs"):
        load_train_config(path, sets=["training.epochs=2"])
    with pytest.raises(ConfigError, match=r"one prompt with \[trigger\] and one without"):
        load_train_config(path, sets=["samples.every=5", 'samples.prompts=["[trigger] at the beach"]'])
    with pytest.raises(ConfigError, match="warmup"):
        load_train_config(path, sets=["optimizer.warmup_steps=10"])
    with pytest.raises(ConfigError, match="samples.width must be a multiple of 16"):
        load_train_config(path, sets=["samples.width=100"])


def test_defaults_target_attention_and_mlp():
    assert {"attn.to_q", "attn.add_k_proj", "ff.net.2", "proj_mlp"} <= set(DEFAULT_TARGETS)
