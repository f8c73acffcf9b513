"""One benchmark invocation: the plain-diffusers baseline and one localflux mode, in the same process.

Each invocation builds the same seeded components twice (once per side, so hooks, compilation
and fused projections of one side never leak into the other), times warm-up and timed images
end to end, times every transformer call (one denoise step), tracks peak memory (PyTorch's
allocator and the driver's view through ``mem_get_info``), compares the two sides' first timed
image, prints a table and appends one record to the results file (schema: docs/speed.md).
"""

from __future__ import annotations

import gc
import importlib.metadata as md
import json
import platform
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from diffusers import FluxPipeline

from .. import __version__
from ..config import SpeedConfig
from ..device import Placement
from ..errors import ConfigError, LocalFluxError
from ..families.registry import FAMILIES
from ..families.flux1.presets import PRESETS
from ..families.flux2.presets import PRESETS as FLUX2_PRESETS
from ..families.flux2.presets import SIZED_MODELS
from ..families.flux1.tiny import build_tiny_components
from ..families.flux2.footprint import footprint_of_pipe as flux2_footprint_of_pipe
from ..families.flux2.tiny import build_tiny_components as build_flux2_tiny_components
from ..memory.footprint import footprint_of_pipe as flux1_footprint_of_pipe
from ..memory.formats import check_runnable
from ..memory.plan import MemoryPlan, Workload, auto_plan, probe_machine
from ..output import atomic_write_bytes
from ..render import RenderRequest, render
from ..speed import apply_speed
from .models import FLUX2_TINY, build_fullsize_components, build_fullsize_flux2, flux2_pipeline_class

GiB = 2**30
SCHEMA_VERSION = 1
PROMPT = "a red fox in fresh snow at sunrise, telephoto photograph, shallow depth of field"
DEFAULT_RESULTS = Path("benchmarks/results/results.json")


@dataclass(frozen=True)
class Mode:
    help: str
    speed: dict = field(default_factory=dict)  # SpeedConfig keys
    memory: dict = field(default_factory=dict)  # MemoryPlan keys, or {"plan": "auto"}
    cap_gib: float | None = None  # torch.cuda.set_per_process_memory_fraction, both sides
    baseline: str = "eager"  # eager | model-offload | group-offload (diffusers' own modes)


FAST = {"compile": "blocks", "fuse_qkv": True, "channels_last_vae": True}
MODES = {
    "eager": Mode("localflux's default path (no options): its overhead over diffusers"),
    "fast": Mode("lossless fast path: regional compile + fused QKV + channels-last VAE", FAST),
    "fast-cudnn": Mode("fast path with the cuDNN SDPA backend", {**FAST, "attention": "cudnn"}),
    "fast-flash": Mode("fast path with PyTorch's flash SDPA backend", {**FAST, "attention": "flash"}),
    "fast-efficient": Mode("fast path with PyTorch's memory-efficient SDPA backend", {**FAST, "attention": "efficient"}),
    "compile": Mode("regional compile only", {"compile": "blocks"}),
    "fp8-storage": Mode("fp8-stored transformer, bf16 compute, all resident", memory={"transformer": "fp8-storage"}),
    "fp8": Mode("torchao fp8 transformer (GPU, torchao wheel), all resident", memory={"transformer": "fp8"}),
    "fp8-fast": Mode("torchao fp8 transformer + regional compile", FAST | {"fuse_qkv": False},
                     memory={"transformer": "fp8"}),
    "cap24-model": Mode("24 GiB cap: localflux model offload (vs diffusers model offload)",
                        memory={"offload": "model"}, cap_gib=24, baseline="model-offload"),
    "cap24-resident": Mode("24 GiB cap: fp8-storage transformer + T5 resident, rest offloaded",
                           memory={"transformer": "fp8-storage", "t5": "fp8-storage", "offload": "resident"},
                           cap_gib=24, baseline="model-offload"),
    "cap24-auto": Mode("24 GiB cap: the automatic plan", memory={"plan": "auto"}, cap_gib=24,
                       baseline="model-offload"),
    "cap12-group": Mode("12 GiB cap: localflux group offload (vs diffusers group offload)",
                        memory={"offload": "group"}, cap_gib=12, baseline="group-offload"),
    "cap12-auto": Mode("12 GiB cap: the automatic plan", memory={"plan": "auto"}, cap_gib=12,
                       baseline="group-offload"),
}
TARGETS = {  # issue 6/7 goals (ratio to the baseline, or seconds); printed next to the figures
    ("dev", "fast"): "ratio <= 0.60",
    ("schnell", "fast"): "end to end <= 0.5 s",
    ("dev", "cap24-auto"): "ratio <= 0.5 vs diffusers model offload",
    ("dev", "cap12-auto"): "ratio <= 0.5 vs diffusers group offload",
    ("klein-4b", "eager"): "end to end ~0.57 s on an H100 (BFL / third parties, 1024², 4 steps)",
    ("klein-4b", "fast"): "end to end ~0.57 s on an H100 (BFL / third parties, 1024², 4 steps)",
}


@dataclass(frozen=True)
class Settings:
    preset: str
    mode: str
    width: int
    height: int
    steps: int
    guidance: float
    max_sequence_length: int
    warmup: int
    repeats: int
    tiny: bool
    device: str
    dtype: str
    seed: int = 0


def is_flux2(s: Settings) -> bool:
    """FLUX.2 runs are named by their model (``klein-4b``, ``flux2-dev``, ...: families/flux2/presets.py)."""
    return s.preset in SIZED_MODELS


def settings_from_args(args) -> Settings:
    if args.mode not in MODES:
        raise ConfigError(f"bench mode {args.mode!r} is not known; one of: {', '.join(MODES)}")
    preset = FLUX2_PRESETS[SIZED_MODELS[args.model][0]] if args.model in SIZED_MODELS else PRESETS[args.model]
    size = 64 if args.tiny else 1024
    return Settings(
        preset=args.model, mode=args.mode, width=args.width or size, height=args.height or size,
        steps=args.steps or (2 if args.tiny else preset.steps), guidance=preset.guidance,
        max_sequence_length=preset.max_sequence_length, warmup=args.warmup if args.warmup is not None else 1,
        repeats=args.repeats or (2 if args.tiny else 5), tiny=args.tiny,
        device="cpu" if args.tiny else "cuda", dtype="float32" if args.tiny else "bfloat16",
    )


# ---------------------------------------------------------------- building


def make_components(s: Settings, park_on_cpu: bool) -> dict:

    if is_flux2(s):
        if s.tiny:
            return build_flux2_tiny_components(FLUX2_TINY[s.preset])
        return build_fullsize_flux2(s.preset, s.device, getattr(torch, s.dtype), seed=s.seed,
                                    park_on="cpu" if park_on_cpu else None)
    if s.tiny:
        return build_tiny_components(s.preset)

    return build_fullsize_components(s.preset, s.device, getattr(torch, s.dtype), seed=s.seed,
                                     park_on="cpu" if park_on_cpu else None)


def free_components(components: dict) -> None:
    components.clear()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def place_baseline(pipe, kind: str, device: str) -> None:
    """diffusers' own placement, exactly as its docs show it."""

    if kind == "eager":
        pipe.to(device)
    elif kind == "model-offload":
        pipe.enable_model_cpu_offload(device=device)
    elif kind == "group-offload":
        pipe.enable_group_offload(onload_device=torch.device(device), offload_device=torch.device("cpu"),
                                  offload_type="block_level", num_blocks_per_group=1,
                                  use_stream=device.startswith("cuda"))
    else:
        raise ValueError(kind)


def place_localflux(pipe, s: Settings, mode: Mode, cap_bytes: int | None) -> tuple[dict, dict]:
    """localflux's own loading code on in-memory components: formats, placement, fast path."""


    footprint_of_pipe = flux2_footprint_of_pipe if is_flux2(s) else flux1_footprint_of_pipe
    placement = Placement(s.device, s.dtype)
    if mode.memory.get("plan") == "auto":
        machine = probe_machine(s.device)
        if cap_bytes is not None:  # what the cap leaves, as the allocator will enforce it
            machine = replace(machine, free_vram=min(machine.free_vram, cap_bytes), total_vram=cap_bytes)
        work = Workload(s.width, s.height, s.max_sequence_length, 4 if s.dtype == "float32" else 2)
        plan = auto_plan(footprint_of_pipe(pipe), work, machine)
    else:
        plan = MemoryPlan(**mode.memory)
    check_runnable(plan.transformer, s.device)
    FAMILIES.by_name("flux2" if is_flux2(s) else "flux1").place(pipe, placement, plan)
    speed = SpeedConfig(**({"compile_backend": "eager"} if s.tiny else {}), **mode.speed)
    return plan.to_dict(), apply_speed(pipe, speed, s.device)


# ---------------------------------------------------------------- timing


class StepTimer:
    """Times every transformer call (one denoise step each, without true CFG)."""

    def __init__(self, module, sync):
        self.sync, self.times, self._start = sync, [], None
        self.handles = [module.register_forward_pre_hook(self._pre), module.register_forward_hook(self._post)]

    def _pre(self, *_):
        self.sync()
        self._start = time.perf_counter()

    def _post(self, *_):
        self.sync()
        self.times.append(time.perf_counter() - self._start)

    def remove(self):
        for handle in self.handles:
            handle.remove()


class DevicePeak:
    """The driver's view of used memory (includes the CUDA context and non-PyTorch allocations)."""

    def __init__(self, device: str):
        self.device, self.peak, self._stop = device, 0, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True) if device.startswith("cuda") else None

    def _poll(self):

        while not self._stop.is_set():
            free, total = torch.cuda.mem_get_info()
            self.peak = max(self.peak, total - free)
            time.sleep(0.005)

    def __enter__(self):
        if self._thread:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread:
            self._thread.join()


def time_side(render_one, transformer, s: Settings) -> dict:
    """Warm-up images, then ``repeats`` timed images; per-image and per-step statistics."""

    cuda = s.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    seeds = [s.seed + k for k in range(s.warmup + s.repeats)]
    warmups = []
    for seed in seeds[: s.warmup]:
        start = time.perf_counter()
        render_one(seed)
        sync()
        warmups.append(time.perf_counter() - start)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    timer = StepTimer(transformer, sync)
    times, first = [], None
    with DevicePeak(s.device) as peak:
        for seed in seeds[s.warmup:]:
            start = time.perf_counter()
            image = render_one(seed)
            sync()
            times.append(time.perf_counter() - start)
            first = first if first is not None else np.asarray(image, dtype=np.int16)
    timer.remove()
    memory = None
    if cuda:
        memory = {"max_allocated_gib": torch.cuda.max_memory_allocated() / GiB,
                  "max_reserved_gib": torch.cuda.max_memory_reserved() / GiB,
                  "device_used_peak_gib": peak.peak / GiB}
    return {"end_to_end_s": stats(times), "step_s": stats(timer.times), "warmup_s": warmups, "peak_memory": memory,
            "_first_image": first}


def stats(values: list[float]) -> dict:
    if not values:
        return {"median": None, "runs": []}
    ordered = sorted(values)
    q = statistics.quantiles(ordered, n=4) if len(ordered) >= 2 else [ordered[0]] * 3
    return {"median": statistics.median(ordered), "min": ordered[0], "max": ordered[-1], "iqr": q[2] - q[0],
            "n": len(ordered), "runs": values if len(values) <= 64 else None}


def baseline_renderer(pipe, s: Settings):

    def render_one(seed):  # FluxPipeline, Flux2KleinPipeline and Flux2Pipeline take the same arguments here
        return pipe(prompt=PROMPT, height=s.height, width=s.width, num_inference_steps=s.steps,
                    guidance_scale=s.guidance, max_sequence_length=s.max_sequence_length,
                    generator=torch.Generator("cpu").manual_seed(seed)).images[0]

    return render_one


def localflux_renderer(pipe, s: Settings):

    prompts = {"text": PROMPT} if is_flux2(s) else {"clip": PROMPT, "t5": PROMPT}
    request = RenderRequest(prompts, None, s.width, s.height, s.steps, s.guidance, 1.0,
                            s.max_sequence_length, vae_tiling=False)
    family = FAMILIES.by_name("flux2" if is_flux2(s) else "flux1")

    def render_one(seed):
        images, _ = render(pipe, family, request, [seed], progress=False)
        return images[0]

    return render_one


# ---------------------------------------------------------------- one invocation


def run_bench(s: Settings, command: str, results_path: Path | None) -> dict:

    pipeline_class = FluxPipeline
    if is_flux2(s):
        pipeline_class = flux2_pipeline_class(s.preset)
    mode = MODES[s.mode]
    if not s.tiny and not torch.cuda.is_available():
        raise LocalFluxError("the full-size benchmark needs a CUDA GPU; use --tiny to run its code paths on the CPU")
    offloaded = mode.baseline != "eager" or mode.memory.get("offload", "none") != "none" or "plan" in mode.memory
    cap_bytes = int(mode.cap_gib * GiB) if mode.cap_gib and s.device.startswith("cuda") else None

    sides = {}
    for side in ("baseline", "localflux"):
        components = make_components(s, park_on_cpu=offloaded)
        if cap_bytes is not None:  # set after building: making the weights is not what is measured
            total = torch.cuda.get_device_properties(0).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, cap_bytes / total))
        pipe = pipeline_class(**components)
        pipe.set_progress_bar_config(disable=True)
        extra = {}
        if side == "baseline":
            place_baseline(pipe, mode.baseline, s.device)
            render_one = baseline_renderer(pipe, s)
            extra["kind"] = f"diffusers {pipeline_class.__name__} {s.dtype} eager" + (
                f", {mode.baseline}" if mode.baseline != "eager" else "")
        else:
            extra["plan"], extra["speed"] = place_localflux(pipe, s, mode, cap_bytes)
            render_one = localflux_renderer(pipe, s)
            extra["kind"] = f"localflux {s.mode}"
        sides[side] = {**extra, **time_side(render_one, pipe.transformer, s)}
        del pipe, render_one
        free_components(components)
        if cap_bytes is not None:
            torch.cuda.set_per_process_memory_fraction(1.0)

    a, b = sides["baseline"].pop("_first_image"), sides["localflux"].pop("_first_image")
    diff = np.abs(a - b) if a.shape == b.shape else None
    record = {
        "schema_version": SCHEMA_VERSION,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "mode": s.mode,
        "mode_help": mode.help,
        "device": device_facts(s.device, mode.cap_gib),
        "versions": version_facts(),
        "settings": {**s.__dict__, "prompt": PROMPT, "baseline": mode.baseline,
                     "random_weights": True, "seeds_timed": [s.seed + s.warmup + k for k in range(s.repeats)]},
        "baseline": sides["baseline"],
        "localflux": sides["localflux"],
        "ratio": {"end_to_end": _ratio(sides, "end_to_end_s"), "step": _ratio(sides, "step_s")},
        "difference": {"max_levels": int(diff.max()) if diff is not None else None,
                       "mean_levels": float(diff.mean()) if diff is not None else None,
                       "note": "first timed image, localflux vs baseline, 0-255 levels (random weights: a proxy)"},
        "target": None if s.tiny else TARGETS.get((s.preset, s.mode)),
    }
    if results_path is not None:
        append_result(results_path, record)
    return record


def _ratio(sides: dict, key: str):
    a, b = sides["baseline"][key]["median"], sides["localflux"][key]["median"]
    return b / a if a and b is not None else None


def device_facts(device: str, cap_gib) -> dict:

    if not device.startswith("cuda"):
        return {"name": platform.processor() or platform.machine(), "kind": "cpu", "cap_gib": None}
    props = torch.cuda.get_device_properties(0)
    return {"name": props.name, "kind": "cuda", "driver": _driver_version(),
            "capability": f"{props.major}.{props.minor}", "total_memory_gib": props.total_memory / GiB,
            "cap_gib": cap_gib}


def _driver_version():

    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def version_facts() -> dict:



    facts = {"localflux": __version__, "python": platform.python_version(), "torch": torch.__version__,
             "cuda": torch.version.cuda}
    for name in ("diffusers", "transformers", "accelerate", "torchao", "gguf"):
        try:
            facts[name] = md.version(name)
        except md.PackageNotFoundError:
            facts[name] = None
    return facts


def append_result(path: Path, record: dict) -> None:
    """Add one record to the JSON list in ``path`` (created if missing), replacing the file atomically."""

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    records = json.loads(path.read_text()) if path.is_file() else []
    records.append(record)
    atomic_write_bytes(path, (json.dumps(records, indent=1) + "\n").encode(), overwrite=True)


def format_table(record: dict) -> str:
    def secs(side, key):
        value = record[side][key]["median"]
        return f"{value:.3f}" if value is not None else "-"

    def peak(side):
        memory = record[side]["peak_memory"]
        return f"{memory['max_allocated_gib']:.1f}/{memory['device_used_peak_gib']:.1f}" if memory else "-"

    settings = record["settings"]
    if record["mode"] == "upscale":
        title = (f"{settings['upscaler']} {settings['width']}x{settings['height']} -> {settings['output'][0]}x"
                 f"{settings['output'][1]}, {settings['dtype']}")
    else:
        title = f"{settings['preset']} {settings['width']}x{settings['height']}, {settings['steps']} steps"
    rows = [f"{title}, mode {record['mode']} on {record['device']['name']}",
            f"{'':<10}{'image s':>10}{'step s':>10}{'warm-up s':>11}{'peak GiB (alloc/device)':>25}"]
    for side in ("baseline", "localflux"):
        warm = record[side]["warmup_s"]
        rows.append(f"{side:<10}{secs(side, 'end_to_end_s'):>10}{secs(side, 'step_s'):>10}"
                    f"{(f'{warm[0]:.1f}' if warm else '-'):>11}{peak(side):>25}")
    ratio = record["ratio"]
    rows.append(f"ratio localflux/baseline: image {_fmt(ratio['end_to_end'])}, step {_fmt(ratio['step'])}; "
                f"largest pixel difference {record['difference']['max_levels']} levels")
    if record.get("target"):
        rows.append(f"target: {record['target']}")
    return "\n".join(rows)


def _fmt(value):
    return f"{value:.3f}x" if value is not None else "-"


def print_record(record: dict, stream=None) -> None:
    print(format_table(record), file=stream or sys.stdout)
