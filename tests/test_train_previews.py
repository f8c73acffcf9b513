"""Training previews: every preview step survives a kill, and every preview replays like any render."""

import signal

import pytest

from localflux.recipe import read_recipe
from localflux.train.checkpoint import complete_checkpoints
from localflux.train.config import load_train_config
from localflux.train.trainer import KILL_ENV, train

from conftest import pixels, run_subprocess
from _train_helpers import write_config

# 6 steps, a checkpoint and previews every 2: steps 2 and 4 have both
SETS = ["samples.every=2", "lora.rank=4"]


def _sets(out):
    return SETS + [f'output.dir="{out}"']


def _previews(run):
    return sorted(str(p.relative_to(run / "samples")) for p in (run / "samples").rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("previews")
    path = write_config(tmp, steps=6, every=2)
    return path, train(load_train_config(path, sets=_sets(tmp / "reference")), progress=False)


@pytest.mark.parametrize("point, resumed_at", [("before_checkpoint", 2), ("after_checkpoint", 4)])
def test_a_kill_around_a_checkpoint_keeps_that_steps_previews(reference, point, resumed_at):
    """Killed between a step's checkpoint and its previews (either side), the resumed run ends with the same
    preview folders and pixels as the uninterrupted one."""
    path, expected = reference
    out = path.parent / f"killed-{point}"
    proc = run_subprocess("train-lora", "--config", path, "--no-progress",
                          *[a for s in _sets(out) for a in ("--set", s)], env={KILL_ENV: f"4:{point}"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert complete_checkpoints(out)[-1].name == f"step-{resumed_at:06d}"

    resumed = train(load_train_config(path, sets=_sets(out)), resume=True, progress=False)
    assert resumed.resumed_from == resumed_at
    assert _previews(out) == _previews(expected.run_dir)
    assert "step-000004/p01-s42.png" in _previews(out)
    for name in _previews(out):
        if name.endswith(".png") and name.startswith("step-"):
            assert (pixels(out / "samples" / name) == pixels(expected.run_dir / "samples" / name)).all(), name


def test_a_preview_after_step_0_replays_identical(reference, run_cli):
    _, result = reference
    preview = result.run_dir / "samples" / "step-000004" / "p01-s42.png"
    recipe = read_recipe(preview)
    lora = result.run_dir / "samples" / "step-000004" / "lora.safetensors"
    assert [(e["path"], e["scale"], e["fuse"]) for e in recipe["loras"]] == [(str(lora.resolve()), 1.0, "unfused")]
    assert recipe["extensions"]["training_preview"]["step"] == 4
    code, _, err = run_cli("replay", str(preview), "--verify", "--no-progress")
    assert code == 0 and "identical" in err, err


def test_a_preview_that_cannot_replay_says_why(reference, run_cli, tmp_path):
    """fp8-stored training weights: the recipe says it cannot be replayed, and replay says so in one line."""
    from localflux.io.png import save_png

    _, result = reference
    preview = result.run_dir / "samples" / "step-000002" / "p01-s42.png"
    recipe = read_recipe(preview)
    recipe["extensions"]["training_preview"]["not_replayable"] = "it was rendered on fp8-stored base weights"
    from PIL import Image

    with Image.open(preview) as image:
        altered = save_png(image.copy(), tmp_path / "p.png", recipe, sidecar=False)
    code, _, err = run_cli("replay", str(altered), "--verify", "--no-progress")
    assert code == 2 and "cannot be replayed: it was rendered on fp8-stored base weights" in err, err
    assert len(err.strip().splitlines()) == 1


def test_flux_shift_timesteps_use_the_schedules_time_shift(monkeypatch):
    import torch

    from localflux import schedule
    from localflux.train.trainer import sample_sigmas

    calls = []
    real = schedule.time_shift
    monkeypatch.setattr(schedule, "time_shift", lambda mu, s: calls.append(mu) or real(mu, s))
    config = {"base_image_seq_len": 256, "max_image_seq_len": 4096, "base_shift": 0.5, "max_shift": 1.15}
    got = sample_sigmas("flux_shift", torch.Generator().manual_seed(0), 4, mean=0.0, std=1.0, seq_len=1024,
                        scheduler_config=config)
    u = torch.sigmoid(torch.randn(4, generator=torch.Generator().manual_seed(0)))
    mu = schedule.mu_for(1024, config)
    assert calls == [mu]
    assert torch.allclose(got, torch.tensor([real(mu, float(x)) for x in u]), rtol=0, atol=1e-6)
