"""``localflux bench --mode upscale``: the Real-ESRGAN stage against its bare network, in one run.

The timed path is the upscale stage itself (``Upscaler.run``: reflect border, tiles with overlap
blending, finished bands streamed into 8-bit samples), fed a photograph; the baseline is one call
of the bare network on the same unpadded tensor, the floor any tiling scheme is measured against. The record has the
same top-level keys as the FLUX modes (docs/speed.md), so both live in one results file.
"""

from __future__ import annotations

import importlib.util
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import LocalFluxError
from ..upscale.images import picture_from_pil
from ..upscale.stage import Upscaler
from .run import SCHEMA_VERSION, DevicePeak, GiB, append_result, device_facts, stats, version_facts

TARGET = "end to end <= 0.2 s (x4plus, 1024 -> 4096, fp16)"
_TEST_CROP = Path(__file__).resolve().parents[2] / "tests" / "data" / "upscale" / "astronaut-96.png"


def photo(size: int):
    """(``size`` x ``size`` float RGB in [0, 1], what it is): scikit-image's astronaut if installed, else our crop, tiled."""

    source = None
    spec = importlib.util.find_spec("skimage")
    if spec and spec.submodule_search_locations:
        candidate = Path(list(spec.submodule_search_locations)[0]) / "data" / "astronaut.png"
        source = candidate if candidate.is_file() else None
    if source is None and _TEST_CROP.is_file():
        source = _TEST_CROP
    if source is None:  # an installed wheel without the tests folder: a smooth synthetic scene
        ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)
        scene = np.stack([np.outer(ramp, ramp), np.outer(ramp, 1 - ramp), np.outer(1 - ramp, ramp)], axis=-1)
        return scene, "synthetic gradients (no photograph found)"
    image = np.asarray(Image.open(source).convert("RGB"))
    reps = (size // image.shape[0] + 1, size // image.shape[1] + 1, 1)
    tiled = np.ascontiguousarray(np.tile(image, reps)[:size, :size]).astype(np.float32) / 255.0
    return tiled, f"photograph {source.name}, tiled"


def _time_calls(call, sync, device_type: str, warmup: int, repeats: int):
    """``warmup`` untimed-for-the-result calls, then ``repeats`` timed ones: (warm-up times, times, the first
    timed output, the CUDA peak memory or None)."""
    warmups = []
    for _ in range(warmup):  # allocator, cuDNN autotuning, and on CPU oneDNN's per-shape kernels
        start = time.perf_counter()
        call()
        sync()
        warmups.append(time.perf_counter() - start)
    if device_type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, first = [], None
    with DevicePeak(device_type) as peak:
        for _ in range(repeats):
            start = time.perf_counter()
            out = call()
            sync()
            times.append(time.perf_counter() - start)
            first = out if first is None else first
    memory = None
    if device_type == "cuda":
        memory = {"max_allocated_gib": torch.cuda.max_memory_allocated() / GiB,
                  "max_reserved_gib": torch.cuda.max_memory_reserved() / GiB,
                  "device_used_peak_gib": peak.peak / GiB}
    return warmups, times, first, memory


def run_upscale_bench(*, upscaler: str, size: int, tiny: bool, warmup: int, repeats: int, command: str,
                      results_path: Path | None) -> dict:
    if not tiny and not torch.cuda.is_available():
        raise LocalFluxError("the full-size upscale benchmark needs a CUDA GPU; use --tiny to run its code paths on the CPU")
    device = torch.device("cpu" if tiny else "cuda")
    dtype = torch.float32 if tiny else torch.float16
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    stage = Upscaler.load(upscaler, device=device.type, dtype="fp32" if tiny else "fp16")
    loaded, engine = stage.loaded, stage.engine
    image, described = photo(size)
    picture = picture_from_pil(Image.fromarray((image * 255).round().astype(np.uint8)), text={})
    x = torch.from_numpy(picture.color.transpose(2, 0, 1).copy())[None].to(device=device, dtype=dtype)
    x = x.contiguous(memory_format=engine.memory_format)
    info = {}

    def bare():
        with torch.inference_mode():
            y = engine.model(x)
        return (y[0].float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)

    def run_stage():
        # what `localflux upscale` does between decoding and encoding: bands streamed into 8-bit samples
        samples, info["record"] = stage.run(picture, loaded.spec.scale, progress=False)
        return samples

    sides = {}
    for side, call, kind in (("baseline", bare, "bare network, one untiled call"),
                             ("localflux", run_stage, "localflux upscale stage (border, tiles, blending, bands to 8-bit)")):
        warmups, times, first, memory = _time_calls(call, sync, device.type, warmup, repeats)
        sides[side] = {"kind": kind, "end_to_end_s": stats(times), "step_s": stats([]), "warmup_s": warmups,
                       "peak_memory": memory, "_first_image": first}

    a, b = (sides[s].pop("_first_image").astype(np.int16) for s in ("baseline", "localflux"))
    diff = np.abs(a - b)
    record_of_step = info["record"]
    sides["localflux"]["tiling"] = {key: record_of_step[key] for key in ("tile", "overlap", "tiles")}
    out_side = size * loaded.spec.scale
    record = {
        "schema_version": SCHEMA_VERSION,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "mode": "upscale",
        "mode_help": "Real-ESRGAN upscale stage vs its bare network (same input, same run)",
        "device": device_facts(device.type, None),
        "versions": version_facts(),
        "settings": {"upscaler": loaded.name, "architecture": loaded.spec.describe(), "weights_sha256": loaded.sha256,
                     "width": size, "height": size, "output": [out_side, out_side], "scale": loaded.spec.scale,
                     "dtype": str(dtype).replace("torch.", ""), "warmup": warmup, "repeats": repeats, "tiny": tiny,
                     "input": described},
        "baseline": sides["baseline"],
        "localflux": sides["localflux"],
        "ratio": {"end_to_end": sides["localflux"]["end_to_end_s"]["median"] / sides["baseline"]["end_to_end_s"]["median"],
                  "step": None},
        "difference": {"max_levels": int(diff.max()), "mean_levels": float(diff.mean()),
                       "note": "stage output vs bare network output, 0-255 levels (tiles and border vs one call)"},
        "target": None if tiny else TARGET,
    }
    if results_path is not None:
        append_result(results_path, record)
    return record
