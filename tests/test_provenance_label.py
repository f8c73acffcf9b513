"""The XMP AI-generation label: in every PNG localflux writes, readable by exiftool, deterministic."""

from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess

import numpy as np
import pytest
from PIL import Image
from upscale_common import DATA

from localflux import generate
from localflux.io import png, xmp
from localflux.upscale import pngio

MODEL = "realesr-animevideov3"  # the small upscaler, for the upscale cases


def cfg(**output):
    return {"model": {"source": "tiny"}, "prompt": {"subject": "a red fox"}, "size": {"width": 64, "height": 64},
            "sampling": {"seed": 3}, "output": {"sidecar": False, **output}}


def raw_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        chunks.append((data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]))
        pos += 12 + length
    return chunks


def xmp_chunk(data: bytes) -> bytes:
    found = [body for kind, body in raw_chunks(data) if kind == b"iTXt" and body.startswith(b"XML:com.adobe.xmp\0")]
    assert len(found) == 1
    return found[0]


def exiftool_json(path) -> dict:
    if shutil.which("exiftool") is None:
        pytest.skip("exiftool is not installed (apt-get install libimage-exiftool-perl; .ci/run installs it)")
    out = subprocess.run(["exiftool", "-j", "-XMP-iptcExt:DigitalSourceType", "-XMP-xmp:CreatorTool", str(path)],
                         capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)[0]


def test_render_carries_an_uncompressed_itxt_label_that_exiftool_reads(tmp_path):
    from localflux import __version__

    path = generate(cfg(), out_dir=tmp_path, progress=False)[0].path
    body = xmp_chunk(path.read_bytes())
    assert body[len(b"XML:com.adobe.xmp\0"):][:2] == b"\0\0"  # compression flag 0: uncompressed, as Adobe expects
    tags = exiftool_json(path)
    assert tags["DigitalSourceType"] == xmp.TRAINED
    assert tags["CreatorTool"] == f"localflux {__version__}"
    assert png.label_for(json.loads(Image.open(path).text["localflux"])) == xmp.TRAINED


def test_label_is_deterministic_and_can_be_turned_off(tmp_path):
    a = generate(cfg(), out_dir=tmp_path / "a", progress=False)[0]
    b = generate(cfg(), out_dir=tmp_path / "b", progress=False)[0]
    assert a.path.read_bytes() == b.path.read_bytes()
    off = generate(cfg(label=False), out_dir=tmp_path / "c", progress=False)[0]
    assert off.recipe["config"]["output"] == {"label": False}
    data = off.path.read_bytes()
    assert b"XML:com.adobe.xmp" not in data and b"DigitalSourceType" not in data


def test_png_bytes_takes_the_source_type_as_a_parameter():
    image = Image.new("RGB", (8, 8))
    data = png.png_bytes(image, None, label=xmp.COMPOSITE)
    assert xmp.COMPOSITE.encode() in xmp_chunk(data)
    assert b"XML:com.adobe.xmp" not in png.png_bytes(image, None, label=None)
    with pytest.raises(ValueError):
        xmp.packet("http://example.com/other")


def test_merge_keeps_a_photos_own_xmp_and_replaces_the_label_fields():
    photo = ('<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
             '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" '
             'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
             'xmp:CreatorTool="Camera 1.0"><dc:rights>(c) Anna</dc:rights></rdf:Description></rdf:RDF>'
             '</x:xmpmeta><?xpacket end="w"?>')
    merged = xmp.merge(photo, xmp.COMPOSITE)
    assert "(c) Anna" in merged and "Camera 1.0" not in merged and merged.count("CreatorTool>") == 2
    assert xmp.read_source_type(merged) == xmp.COMPOSITE
    assert xmp.merge("not xml at all", xmp.TRAINED) == xmp.packet(xmp.TRAINED)


@pytest.fixture
def upscaler_cpu(weights_dir, monkeypatch):
    from localflux.upscale.stage import Upscaler

    monkeypatch.setenv("LOCALFLUX_WEIGHTS", str(weights_dir))
    return Upscaler.load(MODEL, device="cpu")


@pytest.mark.parametrize("bits", [8, 16])
def test_upscaled_photo_is_composite_and_upscaled_render_stays_trained(tmp_path, upscaler_cpu, bits):
    from localflux.upscale.stage import upscale_file

    photo = tmp_path / "photo.png"
    image = Image.open(DATA / "astronaut-64.png").convert("RGB").crop((0, 0, 16, 12))
    if bits == 16:  # 48-bit RGB goes through localflux's own 16-bit PNG codec
        photo.write_bytes(pngio.encode_png16(np.asarray(image, dtype=np.uint16) * 257))
    else:
        image.save(photo)
    data, _ = upscale_file(photo, upscaler_cpu, 2, progress=False)
    assert xmp.COMPOSITE.encode() in xmp_chunk(data)
    out = tmp_path / "photo-x2.png"
    out.write_bytes(data)
    assert exiftool_json(out)["DigitalSourceType"] == xmp.COMPOSITE

    render = generate(cfg(), out_dir=tmp_path / "r", progress=False)[0].path
    data, _ = upscale_file(render, upscaler_cpu, 2, progress=False)
    body = xmp_chunk(data)
    assert xmp.TRAINED.encode() in body and body.count(b"DigitalSourceType>") == 2  # one element, open + close
    assert json.loads(Image.open(io.BytesIO(data)).text["localflux"])["upscale_steps"]


def test_contact_sheets_are_labelled_too(tmp_path):
    data = png.png_bytes(Image.new("RGB", (4, 4)), None, extra_text={"sheet": "{}"})
    assert xmp.TRAINED.encode() in xmp_chunk(data)
