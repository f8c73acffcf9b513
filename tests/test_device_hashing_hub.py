"""Device policy, the weight-hash cache, the pipeline cache, and hub errors (mocked: no hub is reachable)."""

import hashlib
import os

import pytest

from localflux import device, hashing, loader
from localflux.errors import DeviceError, ModelSourceError


def test_device_policy_on_this_cpu_machine(monkeypatch):
    assert device.resolve_placement() == device.Placement("cpu", "float32")
    assert device.pick_dtype("cpu", "bfloat16") == "bfloat16"
    with pytest.raises(DeviceError, match="no CUDA GPU is visible"):
        device.pick_device("cuda")
    with pytest.raises(DeviceError, match="'tpu' is not known"):
        device.pick_device("tpu")


def test_gpus_get_bf16_or_float32_never_fp16_automatically(monkeypatch):
    monkeypatch.setattr(device, "bf16_supported", lambda dev: True)
    assert device.pick_dtype("cuda", "auto") == "bfloat16"
    monkeypatch.setattr(device, "bf16_supported", lambda dev: False)
    assert device.pick_dtype("cuda", "auto") == "float32"
    assert device.pick_dtype("mps", "auto") == "float32"
    with pytest.raises(DeviceError, match="bfloat16 is not supported on cuda"):
        device.pick_dtype("cuda", "bfloat16")


def test_hash_cache_reuses_and_rehashes_changed_files(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"a" * 1000)
    assert hashing.sha256_file(path) == hashlib.sha256(b"a" * 1000).hexdigest()
    calls = []
    real = hashing._hash_bytes
    monkeypatch.setattr(hashing, "_hash_bytes", lambda *a: calls.append(a) or real(*a))
    hashing.sha256_file(path)
    assert calls == []  # cached by path + size + mtime
    path.write_bytes(b"b" * 1000)  # same size, new mtime
    os.utime(path, ns=(1, 10**18))
    assert hashing.sha256_file(path) == hashlib.sha256(b"b" * 1000).hexdigest()
    assert len(calls) == 1


def test_hash_cache_is_shared_by_concurrent_processes(tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    files = []
    for i in range(4):
        files.append(tmp_path / f"f{i}.bin")
        files[-1].write_bytes(bytes([i]) * 5000)
    script = ("import sys\nfrom localflux.hashing import sha256_file\n"
              "for p in sys.argv[1:]: print(sha256_file(p))\n")
    env = dict(os.environ, PYTHONPATH=str(REPO), LOCALFLUX_CACHE=str(tmp_path / "cache"))
    procs = [subprocess.Popen([sys.executable, "-c", script, *map(str, files)], stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(3)]
    outputs = [p.communicate(timeout=60)[0].split() for p in procs]
    expected = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    assert all(out == expected for out in outputs)


def test_loaded_pipelines_are_reused_within_a_process():
    from localflux.config import ModelConfig

    from localflux.model_cache import MODELS

    placement = device.Placement("cpu", "float32")
    from localflux.families.registry import FAMILIES

    flux1 = FAMILIES.by_name("flux1")
    first = MODELS.load(ModelConfig(source="tiny"), placement, family=flux1, preset="schnell")
    assert MODELS.load(ModelConfig(source="tiny"), placement, family=flux1, preset="schnell") is first
    assert MODELS.load(ModelConfig(source="tiny-dev"), placement, family=flux1, preset="dev") is not first


def _raise(exc):
    def fail(*args, **kwargs):
        raise exc
    return fail


def test_hub_errors_are_one_clear_line(monkeypatch):
    import huggingface_hub
    from huggingface_hub import errors as hf_errors

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    calls = []

    def fake(repo_id, local_files_only=False, **kwargs):
        calls.append(local_files_only)
        if local_files_only:
            raise hf_errors.LocalEntryNotFoundError("not cached")
        # built without an HTTP response object: the response class differs between hub versions
        gated = hf_errors.GatedRepoError.__new__(hf_errors.GatedRepoError)
        Exception.__init__(gated, "401 gated")
        raise gated

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    with pytest.raises(ModelSourceError, match="is gated: accept its license.*HF_TOKEN"):
        loader.describe_source("black-forest-labs/FLUX.1-dev", download=True)
    assert calls == [True, False]  # the cache is checked first

    def unreachable(repo_id, local_files_only=False, **kwargs):
        if local_files_only:
            raise hf_errors.LocalEntryNotFoundError("not cached")
        raise OSError("Name or service not known")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    with pytest.raises(ModelSourceError, match="not cached and the hub cannot be reached"):
        loader.describe_source("black-forest-labs/FLUX.1-schnell", download=True)


def test_offline_and_not_cached_never_tries_the_network(monkeypatch):
    import huggingface_hub
    from huggingface_hub import errors as hf_errors

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    calls = []

    def fake(repo_id, local_files_only=False, **kwargs):
        calls.append(local_files_only)
        raise hf_errors.LocalEntryNotFoundError("not cached")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    with pytest.raises(ModelSourceError, match="HF_HUB_OFFLINE is set"):
        loader.describe_source("black-forest-labs/FLUX.1-dev", download=True)
    assert calls == [True]


def test_cached_hub_snapshot_is_used_as_a_folder(monkeypatch, tiny_folders):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **kw: str(tiny_folders["dev"]))
    source = loader.describe_source("black-forest-labs/FLUX.1-dev", download=True)
    assert source.kind == "hub" and source.path == tiny_folders["dev"]
    from localflux.families.registry import FAMILIES

    assert FAMILIES.detect(source).detect_preset(source) == "dev"
