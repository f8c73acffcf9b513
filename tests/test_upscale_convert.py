"""ncnn .param/.bin -> standard Real-ESRGAN state dicts."""

from __future__ import annotations

import shutil
import struct

import numpy as np
import pytest
from upscale_common import converted, ncnn_files

from localflux.errors import UpscaleError
from localflux.upscale.ncnn import TAG_FP16, convert_ncnn, parse_param

EXPECTED = {
    # stem: (arch, scale, params, details)
    "realesrgan-x4plus": ("RRDBNet", 4, 16_697_987, {"num_feat": 64, "num_block": 23, "num_grow_ch": 32}),
    "realesrgan-x4plus-anime": ("RRDBNet", 4, 4_467_779, {"num_feat": 64, "num_block": 6, "num_grow_ch": 32}),
    "realesr-animevideov3-x4": ("SRVGGNetCompact", 4, 621_424, {"num_feat": 64, "num_conv": 16}),
}


@pytest.mark.parametrize("stem", list(EXPECTED))
def test_conversion_counts_and_names(stem):
    arch, scale, params, details = EXPECTED[stem]
    model = converted(stem)
    assert (model.arch, model.scale, model.num_params, model.details) == (arch, scale, params, details)
    assert sum(v.size for v in model.state_dict.values()) == params
    if arch == "RRDBNet":
        assert model.state_dict["conv_first.weight"].shape == (64, 3, 3, 3)
        assert model.state_dict["body.0.rdb1.conv5.weight"].shape == (64, 64 + 4 * 32, 3, 3)
        assert model.state_dict["conv_last.weight"].shape == (3, 64, 3, 3)
        assert {"conv_body.bias", "conv_up1.weight", "conv_up2.weight", "conv_hr.weight"} <= set(model.state_dict)
    else:
        assert model.state_dict["body.1.weight"].shape == (64,)  # PReLU slopes
        assert model.state_dict["body.34.weight"].shape == (48, 64, 3, 3)


def test_param_arrays_and_fused_activations_are_parsed():
    param, _ = ncnn_files("realesrgan-x4plus")
    layers = parse_param(param)
    conv1 = next(layer for layer in layers if layer.type == "Convolution" and layer.get(9) == 2)
    assert conv1.get(10) == [pytest.approx(0.2)]  # -23310=1,0.2 -> id 10, one float
    eltwise = next(layer for layer in layers if layer.type == "Eltwise")
    assert eltwise.get(1) == [pytest.approx(0.2), 1.0]  # -23301=2,0.2,1.0 -> residual scaling


def test_x2_and_x3_animevideov3_files_are_the_x4_weights():
    base = converted("realesr-animevideov3-x4").state_dict
    for stem in ("realesr-animevideov3-x2", "realesr-animevideov3-x3"):
        other = converted(stem).state_dict
        assert other.keys() == base.keys() and all(np.array_equal(other[k], base[k]) for k in base)


def _copy(stem, tmp_path):
    param, weights = ncnn_files(stem)
    shutil.copy(param, tmp_path / param.name)
    shutil.copy(weights, tmp_path / weights.name)
    return tmp_path / param.name, tmp_path / weights.name


def test_bin_must_be_consumed_to_the_last_byte(tmp_path):
    param, weights = _copy("realesr-animevideov3-x4", tmp_path)
    data = weights.read_bytes()
    weights.write_bytes(data + b"\0\0\0\0")
    with pytest.raises(UpscaleError, match="4 bytes left"):
        convert_ncnn(param, weights)
    weights.write_bytes(data[:-4])
    with pytest.raises(UpscaleError, match="ends early"):
        convert_ncnn(param, weights)


def test_unknown_storage_tag_is_refused(tmp_path):
    param, weights = _copy("realesr-animevideov3-x4", tmp_path)
    data = bytearray(weights.read_bytes())
    assert struct.unpack("<I", data[:4])[0] == TAG_FP16
    data[:4] = struct.pack("<I", 0x000D4B38)  # int8 tag
    weights.write_bytes(bytes(data))
    with pytest.raises(UpscaleError, match="0x000D4B38"):
        convert_ncnn(param, weights)


def test_fp32_tagged_weights_convert_like_fp16(tmp_path):
    """Re-encode the fp16 file with fp32 tags (tag 0 + raw floats): same tensors must come out."""
    param, _ = ncnn_files("realesr-animevideov3-x4")
    fp16 = converted("realesr-animevideov3-x4").state_dict
    layers = parse_param(param)
    blob = bytearray()
    body = 0
    for layer in layers:
        if layer.type == "Convolution":
            blob += struct.pack("<I", 0) + fp16[f"body.{body}.weight"].astype("<f4").tobytes()
            blob += fp16[f"body.{body}.bias"].astype("<f4").tobytes()
            body += 1
        elif layer.type == "PReLU":
            blob += fp16[f"body.{body}.weight"].astype("<f4").tobytes()
            body += 1
    (tmp_path / "m.bin").write_bytes(bytes(blob))
    fp32 = convert_ncnn(param, tmp_path / "m.bin").state_dict
    assert all(np.array_equal(fp32[k], fp16[k]) for k in fp16)


def test_non_ncnn_param_is_refused(tmp_path):
    bad = tmp_path / "x.param"
    bad.write_text("hello\n")
    with pytest.raises(UpscaleError, match="not an ncnn"):
        parse_param(bad)
