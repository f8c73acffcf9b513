"""CLI behaviour: help without torch, paths on stdout, dry runs, and user errors as one line with exit 2."""

import sys
import time

import pytest

from conftest import REPO, run_subprocess


def test_help_is_fast_and_does_not_import_torch():
    import subprocess

    code = ("import sys, io, contextlib\nfrom localflux.cli import main\n"
            "buf = io.StringIO()\n"
            "with contextlib.redirect_stdout(buf):\n"
            "    try:\n        main(['--help'])\n    except SystemExit:\n        pass\n"
            "    try:\n        main(['generate', '--help'])\n    except SystemExit:\n        pass\n"
            "assert 'torch' not in sys.modules and 'diffusers' not in sys.modules, 'heavy import'\n"
            "assert '--megapixels' in buf.getvalue()\n")
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert time.perf_counter() - start < 1.0


def test_generate_prints_one_path_per_line(run_cli, tmp_path):
    code, out, err = run_cli("generate", "--model", "tiny", "--prompt", "a fox", "--width", "32", "--height", "32",
                             "--seed", "5", "--count", "2", "--steps", "1", "--out", tmp_path, "--no-progress")
    assert code == 0, err
    assert out.splitlines() == [str(tmp_path / "0001-s5.png"), str(tmp_path / "0002-s6.png")]


def test_random_seed_is_shown_and_recorded(run_cli, tmp_path):
    from localflux.recipe import read_recipe

    code, out, err = run_cli("generate", "--model", "tiny", "--prompt", "a fox", "--width", "32", "--height", "32",
                             "--steps", "1", "--out", tmp_path, "--no-progress")
    assert code == 0
    seed = read_recipe(out.strip())["seed"]
    assert f"seed {seed} (random" in err and out.strip().endswith(f"-s{seed}.png")


def test_dry_run_renders_nothing_and_shows_the_resolved_config(run_cli, tmp_path):
    code, out, err = run_cli("generate", "--config", REPO / "configs" / "dev.toml", "--seed", "42", "--count", "4",
                             "--megapixels", "2", "--aspect", "3:4", "--out", tmp_path / "r", "--dry-run")
    assert code == 0, err
    assert "size: 1248x1680" in out and "seeds: 42, 43, 44, 45" in out and "preset dev" in out
    assert '"guidance": 3.5' in out and '"steps": 28' in out
    assert not (tmp_path / "r").exists()


def test_set_wins_over_flags(run_cli):
    code, out, err = run_cli("generate", "--model", "tiny", "--prompt", "x", "--steps", "3", "--set", "sampling.steps=7",
                             "--dry-run")
    assert code == 0 and "steps: 7," in out


@pytest.mark.parametrize("args,needle", [
    (["--config", "missing.toml"], "config file 'missing.toml' does not exist"),
    (["--set", "sampling.stepz=3"], "'sampling.stepz' is not a known key"),
    (["--set", "sampling.steps=many"], "sampling.steps must be an integer, got 'many'"),
    (["--steps", "0"], "sampling.steps must be at least 1, got 0"),
    (["--width", "0", "--height", "64"], "size.width must be at least 16, got 0"),
    (["--model", "no/such/folder"], "model 'no/such/folder' was not found"),
    (["--model", "nobody-here/not-a-model"], "not in the Hugging Face cache and HF_HUB_OFFLINE is set"),
    (["--aspect", "wide", "--megapixels", "1"], "aspect 'wide' is not a ratio"),
])
def test_user_errors_are_one_line_exit_2_and_write_nothing(run_cli, tmp_path, args, needle):
    out_dir = tmp_path / "out"
    code, out, err = run_cli("generate", "--model", "tiny", "--prompt", "a fox", "--out", out_dir, *args)
    assert code == 2
    assert needle in err
    assert err.startswith("localflux: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert out == "" and not out_dir.exists()


def test_config_errors_name_the_file_in_a_real_process(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[sampling]\nsteps = 'four'\n")
    result = run_subprocess("generate", "--config", bad, "--out", tmp_path / "o")
    assert result.returncode == 2
    assert result.stderr.strip() == f"localflux: error: {bad}: sampling.steps must be an integer, got 'four'"
    assert not (tmp_path / "o").exists()


def test_output_folder_under_a_file_is_refused(run_cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    code, out, err = run_cli("generate", "--model", "tiny", "--prompt", "x", "--steps", "1", "--width", "32",
                             "--height", "32", "--out", blocker / "renders")
    assert code == 2 and "is a file" in err and blocker.read_text() == "keep me"


def test_empty_prompt_is_refused(run_cli):
    code, out, err = run_cli("generate", "--model", "tiny", "--dry-run")
    assert code == 2 and "the prompt is empty" in err


def test_doctor_runs(run_cli):
    code, out, err = run_cli("doctor")
    assert code == 0 and "default device" in out and "cpu" in out and "hugging face cache" in out


def test_dry_run_shows_device_and_the_shifted_schedule(run_cli, tiny_folders):
    code, out, err = run_cli("generate", "--model", tiny_folders["dev"], "--prompt", "x", "--steps", "4",
                             "--width", "64", "--height", "64", "--dry-run")
    assert code == 0 and "device: cpu, float32" in out
    # dev's schedule is shifted by image token count (diffusers' default shift parameters)
    from localflux.schedule import flux_sigmas

    expected = flux_sigmas({"use_dynamic_shifting": True}, 4, 64, 64)
    assert "sigmas: " + ", ".join(f"{x:.4f}" for x in expected) in out


def test_generate_prints_each_path_as_it_is_written(run_cli, tmp_path, stop_render_at):
    # a run stopped by Ctrl-C has listed every image it saved (the paths are not held back to the end)
    stop_render_at(2)
    code, out, err = run_cli("generate", "--model", "tiny", "--prompt", "a fox", "--width", "32", "--height", "32",
                             "--seed", "5", "--count", "3", "--steps", "1", "--out", tmp_path, "--no-progress")
    assert (code, err) == (130, "localflux: interrupted\n")
    assert out.splitlines() == [str(tmp_path / "0001-s5.png")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0001-s5.json", "0001-s5.png"]


@pytest.mark.parametrize("checkpoint", [True, False])
def test_ctrl_c_in_train_lora_says_how_to_go_on(run_cli, tmp_path, monkeypatch, checkpoint):
    from _train_helpers import write_config

    from localflux.train import trainer

    config = write_config(tmp_path)

    def interrupted(*args, **kwargs):
        if checkpoint:  # a checkpoint was written before the Ctrl-C
            (tmp_path / "run" / "checkpoints" / "step-000003").mkdir(parents=True)
            (tmp_path / "run" / "checkpoints" / "step-000003" / "state.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "train", interrupted)
    code, out, err = run_cli("train-lora", "--config", config, "--no-progress")
    assert code == 130 and out == ""
    if checkpoint:
        assert err == (f"localflux: interrupted; step-000003 is kept; add --resume to continue from it: "
                       f"localflux train-lora --config {config} --resume\n")
    else:
        assert err.startswith("localflux: interrupted; no checkpoint was written yet; run the same command again")


@pytest.mark.parametrize("stop_at", ["fsync", "link"])
def test_an_interrupted_write_leaves_no_temp_file(tmp_path, monkeypatch, stop_at):
    # Ctrl-C while a PNG is being written (or just after it is linked into place) must leave no hidden
    # .tmp file behind, and never a partial image under the real name
    import os

    from localflux import output

    real = getattr(os, stop_at)

    def interrupted(*args):
        if stop_at == "link":
            real(*args)  # the image is in place; the temp name is still there
        raise KeyboardInterrupt

    monkeypatch.setattr(os, stop_at, interrupted)
    with pytest.raises(KeyboardInterrupt):
        output.atomic_write_bytes(tmp_path / "a.png", b"\x89PNG data")
    monkeypatch.undo()
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ([] if stop_at == "fsync" else ["a.png"])
    if left:
        assert (tmp_path / "a.png").read_bytes() == b"\x89PNG data"
