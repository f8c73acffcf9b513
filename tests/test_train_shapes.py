"""train-lora on FLUX-shaped models of other shapes (tests/shape_models.py): no single blocks at all,
three single blocks at another width, a factor-4 VAE. A few steps each; the exported files (diffusers
and kohya) render through --lora exactly what the last preview shows."""

import numpy as np
import pytest

from localflux import generate
from localflux.errors import ConfigError
from localflux.recipe import read_recipe
from localflux.train.config import load_train_config
from localflux.train.trainer import train

from _train_helpers import write_config
from conftest import pixels


@pytest.mark.parametrize("name", ["schnell-named-dev", "dev-named-schnell"])
def test_trains_and_the_lora_renders_like_its_preview(shape_folders, tmp_path, monkeypatch, name):
    from localflux.train import trainer

    seen = []
    original = trainer.sample_sigmas
    monkeypatch.setattr(trainer, "sample_sigmas", lambda *a, **k: seen.append(k["seq_len"]) or original(*a, **k))
    config = load_train_config(write_config(tmp_path, source=str(shape_folders[name]), steps=3, every=3),
                               sets=["dataset.resolutions=[48]", "samples.every=3", "output.kohya=true",
                                     'training.timesteps="flux_shift"'])
    result = train(config, progress=False)
    assert len(result.losses) == 3 and all(np.isfinite(result.losses))
    factor = 4 if name == "schnell-named-dev" else 8
    assert set(seen) == {(48 // (2 * factor)) ** 2}  # the flux_shift token count is this model's

    preview = result.run_dir / "samples" / "step-000003" / "p01-s42.png"
    recipe = read_recipe(preview)
    for lora in (result.lora_path, result.kohya_path):
        ours = generate({**recipe["config"], "lora": [{"path": str(lora), "scale": 1.0}]}, save=False, progress=False)[0]
        assert np.array_equal(pixels(ours.image), pixels(preview)), lora.name
    base = generate({**recipe["config"], "lora": []}, save=False, progress=False)[0]
    assert not np.array_equal(pixels(base.image), pixels(preview))  # the LoRA acted


def test_default_targets_fit_a_model_without_single_blocks(shape_folders):
    from diffusers import FluxTransformer2DModel

    from localflux.train.trainer import lora_target_modules

    transformer = FluxTransformer2DModel.from_pretrained(shape_folders["schnell-named-dev"], subfolder="transformer")
    config = load_train_config_from({})
    names = lora_target_modules(transformer, config)
    assert names and all(n.startswith("transformer_blocks.") for n in names)
    with pytest.raises(ConfigError, match="'attn.to_x', which names no linear layer"):
        lora_target_modules(transformer, load_train_config_from({"targets": ["attn.to_q", "attn.to_x"]}))
    with pytest.raises(ConfigError, match="leave no layer to train"):
        lora_target_modules(transformer, load_train_config_from({"targets": ["proj_mlp"]}))


def load_train_config_from(lora: dict):
    return load_train_config(data={"model": {"source": "tiny"}, "dataset": {"folder": ".", "trigger": "zqx"},
                                   "training": {"steps": 1}, "lora": lora,
                                   "samples": {"prompts": ["photo of [trigger]", "a lake"]}, "output": {"dir": "run"}})


def test_buckets_off_the_models_grid_are_refused_in_one_sentence():
    from types import SimpleNamespace

    from localflux.train.trainer import _check_buckets

    dataset = SimpleNamespace(items=[SimpleNamespace(bucket=(64, 64)), SimpleNamespace(bucket=(48, 80))])
    _check_buckets(dataset, 8)  # FLUX.1's VAE: the 16-pixel grid holds
    with pytest.raises(ConfigError, match="bucket 48x80 does not fit this model, whose image sides must be multiples of 32"):
        _check_buckets(dataset, 16)  # a VAE that downsamples 16x
