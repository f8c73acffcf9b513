"""Exact resume after SIGKILL, atomic checkpoints, multi-process runs, memory options and their errors."""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest
import torch

from localflux.errors import TrainingError
from localflux.train.checkpoint import complete_checkpoints
from localflux.train.config import load_train_config
from localflux.train.trainer import KILL_ENV, train

from conftest import REPO, run_subprocess
from _train_helpers import lora_tensors, make_subject, write_config

# 8 optimizer steps of 2 micro-batches, a checkpoint every 3 steps, previews every 4.
SETS = ["training.gradient_accumulation=2", "samples.every=4", "lora.rank=4", "lora.alpha=2"]


def _sets(out):
    return SETS + [f'output.dir="{out}"']


def _cli_sets(out):
    return [arg for option in _sets(out) for arg in ("--set", option)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    path = write_config(tmp, steps=8, every=3)
    result = train(load_train_config(path, sets=_sets(tmp / "reference")), progress=False)
    return path, result


@pytest.mark.parametrize("kill_at, resumed_at", [("5", 3), ("7.1", 6)], ids=["mid-interval", "mid-accumulation"])
def test_sigkill_then_resume_is_bit_identical(reference, kill_at, resumed_at):
    path, expected = reference
    out = path.parent / f"killed-{kill_at}"
    proc = run_subprocess("train-lora", "--config", path, "--no-progress", *_cli_sets(out), env={KILL_ENV: kill_at})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert [p.name for p in complete_checkpoints(out)][-1] == f"step-{resumed_at:06d}"
    assert not (out / "zqx.safetensors").exists()
    # a checkpoint write killed before its rename leaves a hidden folder: ignored, then removed
    partial = out / "checkpoints" / f".step-{resumed_at + 3:06d}.x1y2"
    partial.mkdir()
    (partial / "lora.safetensors").write_bytes(b"half")

    resumed = train(load_train_config(path, sets=_sets(out)), resume=True, progress=False)
    assert resumed.resumed_from == resumed_at and resumed.steps == 8
    assert not partial.exists()
    got, want = lora_tensors(resumed.lora_path), lora_tensors(expected.lora_path)
    assert got.keys() == want.keys()
    for key in want:
        assert torch.equal(got[key], want[key]), key
    assert resumed.losses == expected.losses  # every step's loss, the ones before the kill included
    assert sorted(p.name for p in (out / "samples").iterdir() if p.is_dir()) == \
        ["step-000000", "step-000004", "step-000008"]


def test_resume_refuses_a_changed_config(reference, run_cli):
    path, _ = reference
    out = path.parent / "changed"
    proc = run_subprocess("train-lora", "--config", path, "--no-progress", *_cli_sets(out), env={KILL_ENV: "4"})
    assert proc.returncode == -signal.SIGKILL
    code, _, err = run_cli("train-lora", "--config", path, "--no-progress", *_cli_sets(out))
    assert code == 2 and "pass --resume" in err
    with pytest.raises(TrainingError, match="optimizer.lr differs"):
        train(load_train_config(path, sets=_sets(out) + ["optimizer.lr=0.5"]), resume=True, progress=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    """Two CPU processes (gloo, rendezvous on 127.0.0.1) with batch 1 each == one process with batch 2.

    ``accelerate launch --cpu`` starts a single process (its simple launcher); several CPU processes
    come from the multi-process launcher (``--multi_gpu``, which is torchrun) with model.device = "cpu".
    Same global batch -> the same items, noise and timesteps: every step's loss is equal and the LoRA
    tensors agree to 1e-5 (float32, values up to ~0.1; the batch is split across two forward passes and DDP sums the
    gradients in another order).
    """
    path = write_config(tmp_path, steps=4, every=2)
    sets = ["samples.every=2", "lora.rank=4", 'output.dtype="float32"']
    single = train(load_train_config(path, sets=sets + ["training.batch_size=2", f'output.dir="{tmp_path / "single"}"']),
                   progress=False)
    env = dict(os.environ, PYTHONPATH=str(REPO), GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port()),
               "-m", "localflux", "train-lora", "--config", str(path), "--no-progress"]
    for option in sets + ["training.batch_size=1", f'output.dir="{tmp_path / "multi"}"']:
        command += ["--set", option]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    multi = tmp_path / "multi"
    assert proc.stdout.strip().splitlines() == [str(multi / "zqx.safetensors")]  # printed once, not per process
    assert [p.name for p in complete_checkpoints(multi)] == ["step-000002", "step-000004"]
    assert (multi / "samples" / "step-000004" / "p01-s42.png").is_file()
    state = json.loads((multi / "checkpoints" / "step-000004" / "state.json").read_text())
    assert state["processes"] == 2
    assert state["losses"] == pytest.approx(single.losses, rel=1e-6)
    got, want = lora_tensors(multi / "zqx.safetensors"), lora_tensors(single.lora_path)
    assert got.keys() == want.keys()
    worst = max(float((got[k] - want[k]).abs().max()) for k in want)
    assert worst <= 1e-5, worst  # LoRA values are up to ~0.1: ~1e-4 relative, Adam amplifies float rounding


def test_fp8_base_weights_train_on_cpu(tmp_path):
    path = write_config(tmp_path, steps=3, every=5)
    result = train(load_train_config(path, sets=["memory.fp8_base=true", "lora.rank=4"]), progress=False)
    to_q = result.pipe.transformer.transformer_blocks[0].attn.to_q
    assert to_q.base_layer.weight.dtype == torch.float8_e4m3fn  # stored in fp8 between uses
    assert to_q.lora_A["default"].weight.dtype == torch.float32  # the LoRA itself trains in fp32
    assert all(map(lambda x: x == x, result.losses))
    b = [t for k, t in lora_tensors(result.lora_path).items() if ".lora_B." in k]
    assert any(float(t.abs().max()) > 0 for t in b)  # it trained


def test_adamw8bit_without_cuda_is_a_clear_error(tmp_path, run_cli):
    path = write_config(tmp_path)
    code, _, err = run_cli("train-lora", "--config", path, "--set", 'optimizer.name="adamw8bit"')
    assert code == 2 and "needs a CUDA GPU" in err and "optimizer.name = 'adamw'" in err
    assert not (tmp_path / "run").exists()


def test_kohya_copy_needs_the_lora_writer(tmp_path, run_cli):
    import importlib.util

    path = write_config(tmp_path, steps=1)
    code, out, err = run_cli("train-lora", "--config", path, "--no-progress", "--set", "output.kohya=true")
    if importlib.util.find_spec("localflux.lora") is None or importlib.util.find_spec("localflux.lora.kohya") is None:
        assert code == 2 and "kohya writer" in err and not (tmp_path / "run").exists()
    else:  # the LoRA feature is merged: the copy must exist and carry .alpha tensors
        assert code == 0, err
        kohya = tmp_path / "run" / "zqx.kohya.safetensors"
        assert any(k.endswith(".alpha") for k in lora_tensors(kohya))


def test_dry_run_checks_and_describes(tmp_path, run_cli):
    path = write_config(tmp_path, folder=make_subject(tmp_path / "data"))
    code, out, err = run_cli("train-lora", "--config", path, "--dry-run")
    assert code == 0, err
    assert "images: 4 subject, 0 regularization" in out and "64x64 (4)" in out and "dataset sha256:" in out
    assert not (tmp_path / "run").exists()
