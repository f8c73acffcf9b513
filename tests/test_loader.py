"""Model sources: diffusers folders, single-file checkpoints (diffusers and BFL keys, fp8-stored), offload."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from localflux import generate
from localflux.errors import ModelSourceError

from conftest import pixels
from flux_keys import diffusers_to_bfl

CFG = {"prompt": {"subject": "a red fox"}, "size": {"width": 64, "height": 64},
       "sampling": {"seed": 4, "steps": 3, "max_sequence_length": 32}}


def render(source, **model):
    return generate({**CFG, "model": {"source": str(source), **model}}, save=False, progress=False)[0]


def transformer_state(folder):
    return load_file(folder / "transformer" / "diffusion_pytorch_model.safetensors")


def test_single_file_in_diffusers_keys_with_a_base_folder(tiny_folders, tmp_path):
    folder = tiny_folders["dev"]
    single = tmp_path / "flux-tiny.safetensors"
    save_file(transformer_state(folder), single)
    ours = render(single, base=str(folder))
    assert np.array_equal(pixels(ours.image), pixels(render(folder).image))
    assert ours.recipe["model"]["kind"] == "single_file" and ours.recipe["model"]["preset"] == "dev"
    paths = [entry["path"] for entry in ours.recipe["model"]["files"]]
    assert str(single) in paths and not any("/transformer/" in p for p in paths)


def test_fp8_stored_single_file_is_upcast_on_load(tiny_folders, tmp_path):
    folder = tiny_folders["schnell"]
    state = transformer_state(folder)
    fp8 = {k: v.to(torch.float8_e4m3fn) if v.ndim == 2 else v for k, v in state.items()}
    single = tmp_path / "flux-fp8.safetensors"
    save_file(fp8, single)
    # the same weights rounded to fp8 and stored in float32: fp8 -> float32 is exact, so pixels must match
    rounded = tmp_path / "rounded"
    shutil.copytree(folder, rounded)
    save_file({k: v.to(torch.float32) for k, v in fp8.items()}, rounded / "transformer" / "diffusion_pytorch_model.safetensors")
    from localflux.device import Placement
    from localflux.families.flux1.loading import _load_single_file_transformer
    from localflux.loader import describe_source

    loaded = _load_single_file_transformer(describe_source(str(single), str(folder)), Placement("cpu", "float32"), "schnell")
    for key, value in load_file(rounded / "transformer" / "diffusion_pytorch_model.safetensors").items():
        assert loaded.state_dict()[key].dtype == torch.float32 and torch.equal(loaded.state_dict()[key], value), key
    ours = render(single, base=str(folder))
    assert ours.recipe["dtype"] == "float32"
    # in-memory and memory-mapped weights take different CPU kernel paths (~1e-6): allow one level
    assert np.abs(pixels(ours.image) - pixels(render(rounded).image)).max() <= 1


def test_bfl_keys_convert_to_a_real_width_model_on_the_meta_device():
    """diffusers' BFL conversion hard-codes width 3072: check it against FLUX's published config, shallow."""
    from diffusers import FluxTransformer2DModel
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    from localflux.families.flux1.loading import _transformer_config_root
    from localflux.loader import Source

    root = _transformer_config_root(Source("single_file", "x"), "dev")
    config = json.loads((root / "transformer" / "config.json").read_text())
    config.update(num_layers=1, num_single_layers=1)
    with torch.device("meta"):
        model = FluxTransformer2DModel.from_config(config)
    ours = model.state_dict()
    converted = convert_flux_transformer_checkpoint_to_diffusers(diffusers_to_bfl(dict(ours)))
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: tuple(v.shape) for k, v in ours.items()}


@pytest.mark.slow
def test_bfl_single_file_at_real_width_round_trips(tmp_path):
    """A shallow real-width model (1 double + 1 single block, ~0.5 B parameters) saved with BFL keys."""
    from diffusers import FluxTransformer2DModel

    from localflux.device import Placement
    from localflux.families.flux1.loading import _load_single_file_transformer
    from localflux.loader import describe_source

    base = tmp_path / "base"
    config = json.loads((_packaged("FLUX.1-dev") / "transformer" / "config.json").read_text())
    config.update(num_layers=1, num_single_layers=1)
    (base / "transformer").mkdir(parents=True)
    (base / "transformer" / "config.json").write_text(json.dumps(config))
    (base / "model_index.json").write_text("{}")
    (base / "vae").mkdir()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = FluxTransformer2DModel.from_config(config).to(torch.bfloat16)
    single = tmp_path / "flux1-dev-shallow.safetensors"
    save_file({f"model.diffusion_model.{k}": v for k, v in diffusers_to_bfl(model.state_dict()).items()}, single)
    source = describe_source(str(single), str(base))
    loaded = _load_single_file_transformer(source, Placement("cpu", "bfloat16"), "dev")
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def _packaged(name):
    from importlib import resources
    from pathlib import Path

    return Path(str(resources.files("localflux").joinpath("families", "flux1", "configs", name)))


def test_model_cpu_offload_wiring_gives_the_same_pixels(tiny_folders):
    plain = render(tiny_folders["schnell"])
    offloaded = generate({**CFG, "model": {"source": str(tiny_folders["schnell"])}, "memory": {"offload": "model"}},
                         save=False, progress=False)[0]
    assert offloaded.recipe["decisions"]["offload"] == "model"
    assert np.array_equal(pixels(plain.image), pixels(offloaded.image))


def test_vae_tiling_is_decided_by_size_and_recorded():
    small = generate({**CFG, "model": {"source": "tiny"}}, save=False, progress=False)[0]
    assert small.recipe["decisions"]["vae_tiling"] is False
    forced = generate({**CFG, "model": {"source": "tiny"}, "memory": {"vae_tiling": "on"}}, save=False, progress=False)[0]
    assert forced.recipe["decisions"]["vae_tiling"] is True


def _file(path, data):
    path.write_bytes(data)
    return path


def _folder(path):
    path.mkdir()
    return path


@pytest.mark.parametrize("make,needle", [
    (lambda d: d / "missing", "model folder .* does not exist"),
    (lambda d: d / "flux1-dev-Q8_0.gguf", "model file .* does not exist; check the path"),
    (lambda d: _folder(d / "empty"), "no model_index.json"),
    (lambda d: _file(d / "x.bin", b"x"), "is not a .safetensors or .gguf checkpoint"),
    (lambda d: _file(d / "trunc.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{"), "is not a readable .safetensors file"),
])
def test_bad_model_sources(tmp_path, tiny_folders, make, needle):
    with pytest.raises(ModelSourceError, match=needle):
        render(make(tmp_path), base=str(tiny_folders["dev"]))


def test_single_file_needs_a_base_and_must_be_a_transformer(tiny_folders, tmp_path):
    single = tmp_path / "t.safetensors"
    save_file(transformer_state(tiny_folders["dev"]), single)
    with pytest.raises(ModelSourceError, match="needs model.base"):
        render(single)
    vae = tiny_folders["dev"] / "vae" / "diffusion_pytorch_model.safetensors"
    with pytest.raises(ModelSourceError, match="is not a FLUX.1 transformer checkpoint"):
        render(vae, base=str(tiny_folders["dev"]))


def test_folder_missing_transformer_is_refused(tiny_folders, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_folders["dev"], broken)
    shutil.rmtree(broken / "transformer")
    with pytest.raises(ModelSourceError, match="has no transformer/ folder"):
        render(broken)
