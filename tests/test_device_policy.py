"""One device/dtype policy (localflux/device.py) for generation and upscaling, one set of dtype names."""

import pytest
import torch

from localflux import device
from localflux.cli import build_parser
from localflux.errors import DeviceError
from localflux.upscale import engine


def test_the_same_dtype_names_on_every_command():
    parser = build_parser()
    for name, short in (("bfloat16", "bf16"), ("float32", "fp32"), ("float16", "fp16"), ("auto", "auto")):
        assert parser.parse_args(["generate", "--dtype", short]).dtype == name
        assert parser.parse_args(["generate", "--dtype", name]).dtype == name
        assert parser.parse_args(["upscale", "x.png", "--dtype", name]).dtype == name  # long names: new on upscale
        assert parser.parse_args(["upscale", "x.png", "--dtype", short]).dtype == name
    with pytest.raises(SystemExit):
        parser.parse_args(["upscale", "x.png", "--dtype", "int8"])


def test_upscaling_uses_the_house_policy(monkeypatch):
    assert engine.pick_device("cpu") == torch.device("cpu")
    assert engine.pick_dtype(torch.device("cpu"), None) == torch.float32
    assert engine.pick_dtype(torch.device("cpu"), "fp32") == torch.float32
    with pytest.raises(DeviceError, match="device 'tpu' is not known"):  # the same words as generate's
        engine.pick_device("tpu")
    with pytest.raises(DeviceError, match="not supported on CPU for upscaling; use float32"):
        engine.pick_dtype(torch.device("cpu"), "float16")
    monkeypatch.setattr(device, "bf16_supported", lambda dev: False)
    assert engine.pick_dtype(torch.device("cuda"), "auto") == torch.float16  # upscalers run in fp16 on GPUs
    assert device.pick_dtype("cuda", "auto") == "float32"  # FLUX never does (T5 overflows)
    with pytest.raises(DeviceError, match="bfloat16 is not supported on cuda"):
        engine.pick_dtype(torch.device("cuda"), "bf16")


def test_unknown_dtype_names_are_one_clear_error():
    with pytest.raises(DeviceError, match="unknown dtype 'half'; use auto, bfloat16, float32, float16"):
        device.pick_dtype("cpu", "half")
