"""Batch jobs: expansion and ids, crash safety (kill -9 at named and random points), failures,
Ctrl-C, the folder lock and a two-process sharded run, all on the tiny model at 64x64.

The subprocess tests share one workspace: a 20-item job whose output folder is always the same
path (the recipe records the output folder, so byte-for-byte comparisons need the same path);
the uninterrupted reference run is rendered once and moved aside.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, pixels, run_subprocess
from localflux import faults
from localflux.batch.jobs import load_job, slug
from localflux.batch.lock import LOCK_NAME, FolderLock
from localflux.batch.manifest import read_states
from localflux.recipe import read_recipe

JOB_20 = """
[job]
prompts = ["a red fox in snow", "a lighthouse at dusk", "an old tram, rain", "a bowl of plums"]
seeds = { start = 7, count = 5 }
output = "out"

[model]
source = "tiny"
device = "cpu"

[size]
width = 64
height = 64
"""
BOOKKEEPING = {LOCK_NAME, "manifest-rank0.jsonl", "manifest-rank1.jsonl"}


def write_job(folder: Path, text: str, name: str = "job.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def image_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name not in BOOKKEEPING}


def assert_consistent(folder: Path) -> dict:
    """Every manifest record is whole and its file is there with the recorded sha256."""
    states = read_states(folder)
    for entry in states.values():
        if entry.state == "done":
            data = (folder / entry.file).read_bytes()
            assert hashlib.sha256(data).hexdigest() == entry.sha256, entry.file
    return states


def assert_same_as_reference(folder: Path, reference: dict[str, bytes]) -> None:
    names = {p.name for p in folder.iterdir()}
    leftovers = sorted(n for n in names if n.endswith(".tmp"))
    assert not leftovers, leftovers
    files = image_files(folder)
    assert sorted(files) == sorted(reference)
    different = [name for name in files if files[name] != reference[name]]
    assert not different, different
    states = assert_consistent(folder)
    assert sum(e.state == "done" for e in states.values()) == len(reference) // 2  # PNG + sidecar per item


def start(*args, env: dict | None = None) -> subprocess.Popen:
    full_env = dict(os.environ, **(env or {}))
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    return subprocess.Popen([sys.executable, "-m", "localflux", *map(str, args)], env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return write_job(tmp_path_factory.mktemp("batchjob"), JOB_20)


@pytest.fixture(scope="module")
def reference(workspace) -> dict[str, bytes]:
    """The files an uninterrupted run makes (rendered once, then moved aside)."""
    out = workspace.parent / "out"
    proc = run_subprocess("batch", workspace, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.split()) == 20
    files = image_files(out)
    assert len(files) == 40 and all(name.endswith((".png", ".json")) for name in files)
    shutil.rmtree(out)
    return files


def fresh_out(workspace) -> Path:
    out = workspace.parent / "out"
    shutil.rmtree(out, ignore_errors=True)
    return out


# ---------------------------------------------------------------- jobs and ids


def test_items_are_ordered_named_and_identified_by_their_pixel_inputs(tmp_path, tiny_folders):
    model = tmp_path / "models" / "m1"
    shutil.copytree(tiny_folders["schnell"], model)
    (tmp_path / "prompts.txt").write_text("# catalog\na red fox\n\nÜber / café\\x\n")
    text = f"""
[job]
prompts = ["a lighthouse"]
prompt_file = "prompts.txt"
seeds = [3, 1]
[[job.variants]]
name = "small"
[[job.variants]]
name = "tall"
size = {{ height = 96 }}
[model]
source = "{model}"
device = "cpu"
[size]
width = 64
height = 64
"""
    job = load_job(write_job(tmp_path, text))
    assert [(i.prompt, i.variant, i.seed) for i in job.items[:5]] == [
        ("a lighthouse", "small", 3), ("a lighthouse", "small", 1), ("a lighthouse", "tall", 3),
        ("a lighthouse", "tall", 1), ("a red fox", "small", 3)]
    assert len(job.items) == 12 and job.folder == (Path("renders") / "job").resolve()
    assert job.items[2].plan.size.height == 96 and job.items[0].plan.size.height == 64
    last = job.items[-1]
    assert last.filename == f"0012-tall-s1-uber-cafe-x-{last.item_id[:10]}.png"
    assert "/" not in slug("../../etc/passwd " * 10, 40) and len(slug("x" * 500, 40)) == 40
    assert len({i.item_id for i in job.items}) == 12

    # The id ignores where the job writes and where the model lives ...
    moved = tmp_path / "elsewhere" / "m2"
    shutil.copytree(model, moved)
    again = load_job(write_job(tmp_path, text.replace(str(model), str(moved)), "job2.toml"), out=tmp_path / "x")
    assert [i.item_id for i in again.items] == [i.item_id for i in job.items]
    # ... but not what makes the pixels: the weights' bytes, the steps.
    weights = next((moved / "transformer").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-4] + b"\x00\x00\x80\x3f")
    changed = load_job(tmp_path / "job2.toml")
    assert changed.items[0].item_id != job.items[0].item_id
    steps = load_job(tmp_path / "job.toml", sets=["sampling.steps=2"])
    assert steps.items[0].item_id != job.items[0].item_id


def test_every_bad_item_is_listed_before_anything_renders(tmp_path, run_cli):
    text = JOB_20 + """
[[job.variants]]
name = "ok"
[[job.variants]]
name = "huge"
size = { width = 50000 }
[[job.variants]]
name = "nosteps"
sampling = { steps = 0 }
"""
    code, out, err = run_cli("batch", write_job(tmp_path, text), "--no-progress")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "40 of 60 items are invalid" in err and "'huge'" in err and "'nosteps'" in err
    assert "size.width must be at most 8192" in err and "sampling.steps must be at least 1" in err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- crash safety


def kill_randomly(job: Path, rng: random.Random) -> None:
    proc = start("batch", job, "--no-progress")
    for _ in range(rng.randint(1, 3)):
        assert proc.stdout.readline(), proc.stderr.read()
    time.sleep(rng.uniform(0.0, 0.12))
    proc.kill()
    proc.communicate(timeout=60)


def test_kill_at_every_named_point_and_at_random_then_restart_is_byte_identical(workspace, reference):
    out = fresh_out(workspace)
    expected_damage = {  # what each window leaves behind for the restart to repair
        "after_temp_write:3": "temp",
        "after_rename:2": "temp+unrecorded",
        "before_manifest_append:2": "unrecorded",
        "after_manifest_append:1": "none",
    }
    assert {spec.split(":")[0] for spec in expected_damage} == set(faults.KILL_POINTS)
    for spec, damage in expected_damage.items():
        proc = run_subprocess("batch", workspace, "--no-progress", env={faults.KILL_ENV: spec})
        assert proc.returncode == -signal.SIGKILL, (spec, proc.stderr)
        states = assert_consistent(out)
        temps = list(out.glob(".*.tmp"))
        recorded = {e.file for e in states.values()}
        unrecorded = [p for p in out.glob("*.png") if p.name not in recorded]
        assert bool(temps) == ("temp" in damage), (spec, temps)
        assert bool(unrecorded) == ("unrecorded" in damage), (spec, unrecorded)
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    for _ in range(2):
        kill_randomly(workspace, rng)
        assert_consistent(out)
    proc = run_subprocess("batch", workspace, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    try:
        assert_same_as_reference(out, reference)
    except AssertionError as exc:
        raise AssertionError(f"random kills with seed {seed}: {exc}") from None


def test_ctrl_c_stops_after_the_current_image_and_twice_stops_at_once(workspace, reference):
    out = fresh_out(workspace)
    proc = start("batch", workspace, "--no-progress")
    assert proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "stopping after the current image" in err and "run `localflux batch" in err
    states = assert_consistent(out)
    assert 1 <= len(states) < 20 and not list(out.glob(".*.tmp"))
    assert len(list(out.glob("*.png"))) == len(states)  # stopped cleanly: every image is recorded

    proc = start("batch", workspace, "--no-progress")
    assert proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert_consistent(out)
    assert not list(out.glob(".*.tmp"))

    status = run_subprocess("batch", workspace, "--status")
    done = len(assert_consistent(out))
    assert f"done: {done}\n" in status.stdout and f"pending: {20 - done}" in status.stdout
    proc = run_subprocess("batch", workspace, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert_same_as_reference(out, reference)


def test_two_processes_share_the_job_and_make_the_same_files(workspace, reference, tmp_path):
    out = fresh_out(workspace)
    with socket.socket() as probe:  # a free port for the rendezvous, on loopback only
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", HF_HOME=str(tmp_path / "hf"),
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # --multi_gpu selects torchrun's launcher; on a CPU-only machine the processes join over gloo.
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
               "-m", "localflux", "batch", str(workspace), "--no-progress"]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):  # index modulo world size: each process rendered and recorded its half
        lines = (out / f"manifest-rank{rank}.jsonl").read_text().splitlines()
        assert sorted(json.loads(line)["index"] % 2 for line in lines) == [rank] * 10
    assert_same_as_reference(out, reference)

    status = run_subprocess("batch", workspace, "--status")
    assert "done: 20\n" in status.stdout and "pending: 0" in status.stdout
    again = run_subprocess("batch", workspace, "--no-progress")
    assert again.returncode == 0 and again.stdout == "" and "0 rendered" in again.stderr


# ---------------------------------------------------------------- failures, lock, foreign files

SMALL_JOB = """
[job]
prompts = ["a red fox", "a blue boat"]
seeds = [1, 2, 3]
output = "{out}"
[model]
source = "tiny"
device = "cpu"
[size]
width = 64
height = 64
"""


def test_failures_are_recorded_retried_and_counted(tmp_path, run_cli, monkeypatch):
    job = write_job(tmp_path, SMALL_JOB.format(out="out"))
    monkeypatch.setenv(faults.OOM_ENV, "1,3:always")
    monkeypatch.setenv(faults.NAN_ENV, "4")
    code, out, err = run_cli("batch", job, "--no-progress")
    assert code == 1 and len(out.split()) == 4
    assert "4 done, 2 failed, 0 pending" in err and "--retry-failed" in err
    folder = tmp_path / "out"
    items = load_job(job).items
    recipe = read_recipe(folder / items[1].filename)
    assert recipe["extensions"]["batch"]["item_id"] == items[1].item_id
    assert recipe["decisions"]["offload"] == "model" and recipe["decisions"]["vae_tiling"] is True
    assert "out of memory on the first attempt" in recipe["extensions"]["batch"]["low_memory"]
    assert read_states(folder)[items[1].item_id].low_memory == recipe["extensions"]["batch"]["low_memory"]

    code, out, _ = run_cli("batch", job, "--status")
    assert code == 0 and "done: 4\nfailed: 2\npending: 0" in out
    assert "item 4 (seed 1)" in out and "out of memory, also with model offload" in out
    assert "item 5 (seed 2)" in out and "NaN" in out

    monkeypatch.delenv(faults.OOM_ENV)
    monkeypatch.delenv(faults.NAN_ENV)
    code, out, err = run_cli("batch", job, "--no-progress")  # a plain rerun leaves recorded failures alone
    assert code == 1 and out == "" and "0 rendered" in err
    code, out, err = run_cli("batch", job, "--retry-failed", "--no-progress")
    assert code == 0 and len(out.split()) == 2, err
    code, out, _ = run_cli("batch", job, "--status")
    assert "done: 6\nfailed: 0\npending: 0" in out

    # The low-memory retry rendered the same item (same seed and prompt; exact on the CPU at this size).
    clean = write_job(tmp_path / "clean", SMALL_JOB.format(out="out"))
    assert run_cli("batch", clean, "--no-progress")[0] == 0
    for item in items:
        assert (pixels(folder / item.filename) == pixels(tmp_path / "clean" / "out" / item.filename)).all()


def test_a_second_run_on_the_same_folder_is_refused(tmp_path, run_cli):
    job = write_job(tmp_path, SMALL_JOB.format(out="out"))
    (tmp_path / "out").mkdir()
    lock = FolderLock(tmp_path / "out").acquire()
    try:
        code, out, err = run_cli("batch", job, "--no-progress")
    finally:
        lock.release()
    assert code == 2 and out == "" and f"another localflux batch (pid {os.getpid()})" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [LOCK_NAME]


def test_a_foreign_file_where_an_item_goes_is_never_overwritten(tmp_path, run_cli):
    from PIL import Image

    job = write_job(tmp_path, SMALL_JOB.format(out="out"))
    first = load_job(job).items[0]
    (tmp_path / "out").mkdir()
    Image.new("RGB", (8, 8), "red").save(tmp_path / "out" / first.filename)
    before = (tmp_path / "out" / first.filename).read_bytes()
    code, out, err = run_cli("batch", job, "--no-progress")
    assert code == 2 and first.filename in err and "is not item 1" in err
    assert (tmp_path / "out" / first.filename).read_bytes() == before


def test_shipped_demo_job_expands():
    demo = load_job(REPO / "jobs" / "demo.toml")
    assert len(demo.items) == 12 and demo.folder == (REPO / "renders" / "demo-batch").resolve()
    assert demo.items[3].plan.size.width == 192 and "Portra 400" in demo.items[0].plan.request.prompts["t5"]
