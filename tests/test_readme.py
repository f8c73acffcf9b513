"""README examples are part of the API: every `localflux ...` line in README.md runs here.

Examples that need real FLUX weights (hub ids, configs pointing at them) run with --dry-run; the
tiny-model ones run for real. `weights/FLUX.1-dev` is staged with the tiny dev model so that the
local-folder example resolves like it would on a user's machine.
"""

import glob
import re
import shlex
import shutil

import pytest

from conftest import REPO

REAL_WEIGHT_MARKERS = ("configs/schnell.toml", "configs/dev.toml", "configs/portrait.toml", "weights/FLUX.1-dev",
                       "configs/train-subject.toml", "configs/dev-12gb.toml", "FLUX.2-klein", "configs/klein.toml")


def readme_commands() -> list[list[str]]:
    return doc_commands(REPO / "README.md", fence="bash")


def doc_commands(path, fence: str = "") -> list[list[str]]:
    """Every ``localflux ...`` line of the page's code blocks (```bash in README, plain ``` in docs/)."""
    text = path.read_text()
    commands = []
    blocks = [body for language, body in re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)
              if language == fence]
    for block in blocks:
        for line in block.splitlines():
            if line.startswith("localflux "):
                commands.append(shlex.split(line, comments=True)[1:])
    return commands


def makefile_demo_commands() -> list[list[str]]:
    text = (REPO / "Makefile").read_text()
    recipe = text.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    return [shlex.split(line.strip().replace("$(BIN)/", ""))[1:] for line in recipe.splitlines()[1:] if line.strip()]


@pytest.fixture
def workspace(tmp_path, tiny_folders):
    from lora_files import write_diffusers, write_kohya_file

    shutil.copytree(REPO / "configs", tmp_path / "configs")
    shutil.copytree(REPO / "jobs", tmp_path / "jobs")
    shutil.copytree(tiny_folders["dev"], tmp_path / "weights" / "FLUX.1-dev")
    from safetensors.torch import load_file

    from gguf_tiny import write_q8_gguf

    # stands in for a real quantized FLUX.1-dev transformer (configs/dev-12gb.toml): the tiny one as Q8_0
    transformer = tiny_folders["dev"] / "transformer" / "diffusion_pytorch_model.safetensors"
    write_q8_gguf(load_file(transformer), tmp_path / "weights" / "flux1-dev-Q4_K_S.gguf")
    shutil.copy(tmp_path / "weights" / "flux1-dev-Q4_K_S.gguf", tmp_path / "weights" / "flux1-dev-Q8_0.gguf")  # docs/memory.md
    (tmp_path / "loras").mkdir()
    write_diffusers(tmp_path / "loras" / "anna.safetensors", metadata_alpha=4)
    write_kohya_file(tmp_path / "loras" / "film.safetensors")
    from PIL import Image

    from _train_helpers import make_subject

    anna = make_subject(tmp_path / "datasets" / "anna")
    for path in anna.glob("*.png"):  # configs/train-subject.toml trains at 512 and 768: photo-sized, not 64 px
        Image.open(path).resize((384, 384), Image.Resampling.NEAREST).save(path)
    with Image.open(REPO / "tests" / "data" / "upscale" / "astronaut-64.png") as photo:  # a real photo crop
        photo.convert("RGB").crop((0, 0, 48, 48)).save(tmp_path / "photo.png")
    mask = Image.new("L", (48, 48), 0)  # docs/images.md: a mask over the middle of photo.png
    mask.paste(255, (12, 16, 36, 32))
    mask.save(tmp_path / "mask.png")
    for name, colour in (("anna.png", (200, 150, 120)), ("light.png", (240, 230, 200)), ("fox.png", (210, 90, 30))):
        Image.new("RGB", (96, 80), colour).save(tmp_path / name)  # docs/flux2.md and README: FLUX.2 references
    return tmp_path


def test_readme_has_the_documented_examples():
    commands = [" ".join(c) for c in readme_commands()]
    assert any(c.startswith("generate --config configs/demo.toml") for c in commands)
    assert any(c.startswith("replay renders/demo/0001-s42.png --verify") for c in commands)
    assert any(c.startswith("doctor") for c in commands)


def run_example(args: list[str], workspace, run_cli) -> str:
    """Run one documented command in the workspace, as a dry run where it needs real FLUX weights; its stdout."""
    needs_weights = args[0] in ("generate", "sweep", "train-lora") and any(m in " ".join(args)
                                                                           for m in REAL_WEIGHT_MARKERS)
    if needs_weights:
        args = args + ["--dry-run"]
    trained = workspace / "runs" / "anna" / "anna.safetensors"
    checkpoint = workspace / "runs" / "anna" / "checkpoints" / "step-000250"
    if args[0] == "train-lora" and "--resume" in args and not checkpoint.exists():
        checkpoint.mkdir(parents=True)  # stands in for a checkpoint of the (dry-run) training above
        (checkpoint / "state.json").write_text("{}")
    if args[0] == "generate" and "runs/anna/anna.safetensors" in " ".join(args) and not trained.exists():
        from lora_files import write_diffusers

        trained.parent.mkdir(parents=True, exist_ok=True)  # stands in for the output of the (dry-run) training above
        write_diffusers(trained, seed=5)
    args = [expanded for arg in args for expanded in (sorted(glob.glob(arg, root_dir=workspace)) or [arg])]
    code, out, err = run_cli(*args, cwd=workspace)
    assert code == 0, f"`localflux {' '.join(args)}` exited {code}: {err}"
    if args[0] in ("generate", "batch") and "--dry-run" not in args and "--status" not in args:
        assert all((workspace / line).is_file() for line in out.split()), out
    if args[0] == "generate" and "--dry-run" not in args:
        assert out.strip(), f"`localflux {' '.join(args)}` printed no path"
    return out


def test_every_readme_example_runs(workspace, run_cli):
    for args in makefile_demo_commands() + readme_commands():
        run_example(args, workspace, run_cli)
    assert (workspace / "renders" / "demo" / "0001-s42.png").is_file()
    assert (workspace / "out.safetensors").is_file()  # lora convert ran for real
    assert (workspace / "upscaled" / "photo-x2.png").is_file()
    assert len(list((workspace / "big").glob("*.png"))) == 2


def test_readme_python_example_runs(workspace, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    assert blocks
    monkeypatch.chdir(workspace)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 4 and printed[0].split()[1] == "42"
