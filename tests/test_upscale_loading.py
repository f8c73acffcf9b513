"""Weight files: layouts, wrappers, safe unpickling, architecture detection."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from upscale_common import converted, load_rgb

from localflux.errors import UpscaleError
from localflux.upscale.arch import RRDBNet, SRVGGNetCompact
from localflux.upscale.engine import Engine
from localflux.upscale.loading import build_model, detect_arch, load_upscaler, old_to_new_keys


def _to_old_layout(state: dict) -> dict:
    """The old ESRGAN names, written out independently of the loader's mapping."""
    fixed = {"conv_first": "model.0", "conv_body": None, "conv_up1": "model.3", "conv_up2": "model.6", "conv_hr": "model.8", "conv_last": "model.10"}
    num_block = len({k.split(".")[1] for k in state if k.startswith("body.")})
    old = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "body":  # body.N.rdbM.convK.weight -> model.1.sub.N.RDBM.convK.0.weight
            old[f"model.1.sub.{parts[1]}.RDB{parts[2][3:]}.{parts[3]}.0.{parts[4]}"] = value
        elif parts[0] == "conv_body":
            old[f"model.1.sub.{num_block}.{parts[1]}"] = value
        else:
            old[f"{fixed[parts[0]]}.{parts[1]}"] = value
    return old


def _anime_state() -> dict:
    return {k: torch.from_numpy(v.copy()) for k, v in converted("realesrgan-x4plus-anime").state_dict.items()}


def test_old_esrgan_layout_round_trip(tmp_path):
    state = _anime_state()
    old = _to_old_layout(state)
    assert "model.1.sub.0.RDB1.conv1.0.weight" in old and "model.1.sub.6.weight" in old
    back = old_to_new_keys(old)
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)

    torch.save(old, tmp_path / "old.pth")
    loaded = load_upscaler(tmp_path / "old.pth")
    assert (loaded.spec.arch, loaded.spec.scale, loaded.spec.num_block) == ("RRDBNet", 4, 6)
    reference, _ = build_model(state)
    x = torch.from_numpy(load_rgb("astronaut-64.png")[:12, :12]).permute(2, 0, 1)[None]
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model(x), reference(x), rtol=0, atol=0)


def test_params_ema_wrapper_and_safetensors(tmp_path):
    from safetensors.torch import save_file

    state = _anime_state()
    torch.save({"params_ema": state, "params": {k: v * 0 for k, v in state.items()}}, tmp_path / "w.pth")
    loaded = load_upscaler(tmp_path / "w.pth")
    assert torch.equal(loaded.model.conv_first.weight, state["conv_first.weight"])  # params_ema wins

    save_file(state, str(tmp_path / "w.safetensors"), metadata={"name": "anime"})
    loaded = load_upscaler(tmp_path / "w.safetensors")
    assert loaded.name == "anime" and len(loaded.sha256) == 64


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-pickle",))


def test_pickle_with_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"conv_first.weight": _Exploit()}, tmp_path / "evil.pth")  # zip .pth, as real ones are
    with pytest.raises(UpscaleError, match=r"contains Python objects or code \(posix.system\).*refusing to unpickle"):
        load_upscaler(tmp_path / "evil.pth")
    with open(tmp_path / "evil-raw.pth", "wb") as handle:  # bare pickle stream, protocol 4
        pickle.dump({"conv_first.weight": _Exploit()}, handle, protocol=4)
    with pytest.raises(UpscaleError):
        load_upscaler(tmp_path / "evil-raw.pth")
    assert not (tmp_path / "pwned-by-pickle").exists()


@pytest.mark.parametrize("content, match", [(None, "not found"), (b"garbage" * 10, "not a readable")])
def test_missing_or_corrupt_files(tmp_path, content, match):
    for suffix in (".safetensors", ".pth"):
        path = tmp_path / f"m{suffix}"
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(UpscaleError, match=match):
            load_upscaler(path)


def test_srvgg_detection_and_forward():
    state = {k: torch.from_numpy(v.copy()) for k, v in converted("realesr-animevideov3-x4").state_dict.items()}
    spec = detect_arch(state)
    assert (spec.arch, spec.scale, spec.num_conv, spec.num_feat, spec.num_params) == ("SRVGGNetCompact", 4, 16, 64, 621_424)
    model, _ = build_model(state)
    assert isinstance(model, SRVGGNetCompact)
    # A different SRVGG size (general-x4v3 has 32 convs) is detected from the keys alone.
    general = SRVGGNetCompact(num_conv=32, upscale=4).state_dict()
    assert detect_arch(general).num_conv == 32 and detect_arch(general).num_params == 1_213_296


def test_x2plus_layout_pixel_unshuffle_and_odd_sizes():
    torch.manual_seed(0)
    small = RRDBNet(scale=2, num_feat=8, num_block=1, num_grow_ch=4)
    spec = detect_arch(small.state_dict())
    assert (spec.arch, spec.scale) == ("RRDBNet", 2)
    assert small.state_dict()["conv_first.weight"].shape[1] == 12
    model, _ = build_model(small.state_dict())
    engine = Engine(model, 2, torch.device("cpu"), torch.float32, pad_multiple=model.unshuffle)
    out, _ = engine.upscale(np.random.rand(13, 11, 3).astype(np.float32), tile=1000, progress=False)
    assert out.shape == (26, 22, 3)


def test_unknown_architecture_is_refused():
    with pytest.raises(UpscaleError, match="neither RRDBNet"):
        detect_arch({"encoder.weight": torch.zeros(3, 3)})
    wrong = _anime_state()
    wrong["conv_last.weight"] = torch.zeros(3, 32, 3, 3)
    with pytest.raises(UpscaleError, match="do not fit"):
        build_model(wrong)
