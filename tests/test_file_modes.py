"""Every file localflux writes gets the mode a plain open() would: the umask is honoured (0644 / 0640)."""

from __future__ import annotations

import contextlib
import os
import stat

import pytest

from localflux import generate
from localflux.output import atomic_write_bytes, plain_mode


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize(("mask", "file_mode"), [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_atomic_writes_and_manifests_honour_the_umask(tmp_path, mask, file_mode):
    from localflux.batch.manifest import ManifestWriter

    with umask(mask):
        assert plain_mode() == file_mode and plain_mode(directory=True) == 0o777 & ~mask
        path = atomic_write_bytes(tmp_path / "a.bin", b"x")
        replaced = atomic_write_bytes(tmp_path / "a.bin", b"y", overwrite=True)
        private = atomic_write_bytes(tmp_path / "key.pem", b"k", mode=0o600)
        writer = ManifestWriter(tmp_path, 0)
        with open(tmp_path / "plain.bin", "wb"):
            pass
    assert mode(path) == mode(replaced) == mode(writer.path) == mode(tmp_path / "plain.bin") == file_mode
    assert mode(private) == 0o600


@pytest.mark.parametrize(("mask", "file_mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_renders_sidecars_and_checkpoints_honour_the_umask(tmp_path, mask, file_mode):
    import torch

    from localflux.train.checkpoint import save_checkpoint

    config = {"model": {"source": "tiny"}, "prompt": {"subject": "a fox"}, "size": {"width": 64, "height": 64},
              "sampling": {"seed": 1}}
    with umask(mask):
        png = generate(config, out_dir=tmp_path / "r", progress=False)[0].path
        folder = save_checkpoint(tmp_path / "run", 1, lora={"a": torch.zeros(2)}, optimizer={}, scheduler={},
                                 state={"step": 1}, keep=2)
    assert mode(png) == mode(png.with_suffix(".json")) == file_mode
    assert mode(folder) == 0o777 & ~mask
    assert {mode(p) for p in folder.iterdir()} == {file_mode}
