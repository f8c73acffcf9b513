"""FLUX.2 [dev] through localflux: presets from the folder, no negative prompt, reference counts, single file.

Parity with Flux2Pipeline (text and two references) is in the contract suite (tests/contract_cases.py,
``-k flux2-dev``); these are the dev-only rules around it.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def dev_folder(tmp_path_factory):
    from localflux.families.flux2.tiny import save_tiny_model

    return save_tiny_model("tiny-flux2-dev", tmp_path_factory.mktemp("dev") / "some-klein-name")


def _pictures(tmp_path, count):
    paths = []
    for i in range(count):
        path = tmp_path / f"ref{i}.png"
        Image.new("RGB", (64, 64), (i * 20 % 255, 90, 160)).save(path)
        paths += ["--reference", str(path)]
    return paths


def test_negative_prompt_is_refused_in_one_line(run_cli, tmp_path):
    code, out, err = run_cli("generate", "--model", "tiny-flux2-dev", "--prompt", "x", "--negative-prompt", "blurry",
                             "--out", tmp_path / "never")
    assert code == 2 and "FLUX.2 [dev] has no negative prompt" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "never").exists()


def test_presets_come_from_the_folder_not_its_name(run_cli, dev_folder):
    code, out, err = run_cli("generate", "--model", dev_folder, "--prompt", "a fox", "--dry-run")
    assert code == 0, err
    assert "flux2-dev" in out + err and "50" in out + err  # Flux2Pipeline's defaults: 50 steps, guidance 4.0
    from localflux import pipeline

    planned = pipeline.plan(pipeline.coerce_config({"model": {"source": str(dev_folder)}, "prompt": {"subject": "x"}}))
    assert planned.preset == "flux2-dev"
    assert (planned.request.steps, planned.request.guidance) == (50, 4.0)


def test_text_encoder_layers_are_devs(dev_folder):
    from localflux.families.flux2.loading import default_text_layers, kind_of_folder

    assert kind_of_folder(dev_folder) == "dev" and default_text_layers("dev") == (10, 20, 30)


def test_more_references_than_bfl_recommends_warn_and_above_the_cap_refuse(run_cli, tmp_path):
    common = ("generate", "--model", "tiny-flux2-dev", "--prompt", "a fox", "--steps", "1", "--seed", "1",
              "--width", "64", "--height", "64", "--no-progress", "--device", "cpu")
    code, out, err = run_cli(*common, *_pictures(tmp_path, 7), "--out", tmp_path / "seven")
    assert code == 0, err
    assert "BFL recommends up to 6" in err
    code, out, err = run_cli(*common, *_pictures(tmp_path, 11), "--out", tmp_path / "eleven")
    assert code == 2 and "11 references" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "eleven").exists()


def test_dev_single_file_with_its_base_folder(run_cli, dev_folder, tmp_path):
    from safetensors.torch import save_file

    from localflux.families.flux2.tiny import build_tiny_components

    state = build_tiny_components("tiny-flux2-dev")["transformer"].state_dict()
    path = tmp_path / "flux2-dev.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    args = ("--prompt", "a fox", "--steps", "2", "--seed", "3", "--width", "64", "--height", "48", "--no-progress",
            "--device", "cpu")
    code, out_file, err = run_cli("generate", "--model", path, "--base", dev_folder, *args, "--out", tmp_path / "a")
    assert code == 0, err
    code, out_folder, err = run_cli("generate", "--model", dev_folder, *args, "--out", tmp_path / "b")
    assert code == 0, err
    assert Image.open(out_file.strip()).tobytes() == Image.open(out_folder.strip()).tobytes()
