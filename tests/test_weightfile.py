"""The one .safetensors writer: equal inputs give byte-identical files (recipes record their sha256)."""

import hashlib

import pytest
import torch
from safetensors import safe_open

from localflux.errors import OutputError
from localflux.weightfile import safetensors_bytes, save_safetensors

import lora_files as lf

METADATA = {f"key{i:02d}": f"value {i}" for i in range(12)} | {"ünïcode": "naïve \"quoted\"\n"}


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("kind", ["torch", "numpy"])
def test_equal_inputs_give_equal_bytes_and_the_file_reads_back(tmp_path, kind):
    gen = torch.Generator().manual_seed(0)
    tensors = {"b.weight": torch.randn(3, 4, generator=gen), "a.bias": torch.randn(4, generator=gen).half()}
    if kind == "numpy":
        tensors = {k: v.numpy() for k, v in tensors.items()}
    first = save_safetensors(tensors, tmp_path / "1.safetensors", METADATA)
    datas = {safetensors_bytes(tensors, dict(reversed(METADATA.items()))) for _ in range(5)}
    assert datas == {first.read_bytes()}
    with safe_open(str(first), framework="pt") as handle:
        assert handle.metadata() == METADATA
        for key, value in tensors.items():
            assert torch.equal(handle.get_tensor(key), torch.as_tensor(value))
    with pytest.raises(OutputError):  # never replaces a file unless asked
        save_safetensors(tensors, first, METADATA)
    save_safetensors(tensors, first, METADATA, overwrite=True)


def test_two_installs_of_an_upscaler_are_the_same_file(tmp_path, monkeypatch, run_cli):
    paths = []
    for n in range(2):
        monkeypatch.setenv("LOCALFLUX_WEIGHTS", str(tmp_path / f"w{n}"))
        code, _, err = run_cli("weights", "install", "realesr-animevideov3")
        assert code == 0, err
        paths.append(tmp_path / f"w{n}" / "realesr-animevideov3.safetensors")
    assert _sha(paths[0]) == _sha(paths[1])


@pytest.mark.parametrize("to", ["kohya", "diffusers"])
def test_two_lora_converts_are_the_same_bytes(tmp_path, run_cli, to):
    source = lf.write_kohya_file(tmp_path / "film.safetensors")  # kohya metadata: several ss_* keys
    outs = [tmp_path / f"out{n}" / "film.safetensors" for n in range(2)]  # kohya records the file's name
    for out in outs:
        out.parent.mkdir()
        code, _, err = run_cli("lora", "convert", source, out, "--to", to)
        assert code == 0, err
    assert outs[0].read_bytes() == outs[1].read_bytes()
