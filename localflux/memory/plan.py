"""Memory plans: what each way of placing FLUX needs at its peak, and the fastest one that fits.

A plan is a transformer weight format, a T5 format and placement, and an offload mode. Its peak is
estimated stage by stage (text encoding, denoising, VAE decoding) from the model's parameter counts
(``footprint``) and the render size: the weights on the accelerator during that stage plus that
stage's activations plus a fixed runtime reserve. ``choose`` walks ``CANDIDATES`` — ordered fastest
first within each class — and takes the first that fits with ``headroom`` to spare:

1. lossless plans that keep every transformer weight on the GPU for the whole denoise loop;
2. lossy plans (fp8, NF4) that do, only when ``allow_lossy`` (never silently: ``reason`` says so);
3. lossless plans that stream transformer weights every step (group, then sequential offload);
4. lossy streaming plans, when allowed.

The activation constants are estimates (stated below); ``localflux bench`` measures real peaks.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass, replace

import torch

from ..device import available_ram
from ..errors import DeviceError
from ..geometry import image_tokens
from .footprint import Footprint

GiB = 2**30

# Estimates, in bytes per element of the compute dtype (see docs/memory.md):
# a FLUX block keeps ~24 hidden-sized tensors alive per token at its peak (QKV, attention output,
# the 4x MLP and its activation, the concatenated single-block input, residuals); 32 leaves room.
DENOISE_ACTIVATION_FACTOR = 32
# T5's feed-forward is 2.5x wide and gated; 40 hidden-sized tensors per token covers it.
T5_ACTIVATION_FACTOR = 40
# The VAE decoder runs its last stages at full resolution with 128-256 channels; ~12 maps of
# 128 channels cover the upsampler's input, output and the GroupNorm temporaries.
VAE_ACTIVATION_FACTOR = 12
VAE_TILE_PIXELS = 512 * 512  # diffusers' default tile for the FLUX VAE
# CUDA context, cuBLAS workspaces and allocator fragmentation that no parameter count shows.
RUNTIME_RESERVE = int(0.75 * GiB)

# Bytes per parameter of each stored format (weights only).
FORMAT_BYTES = {"fp8": 1.02, "nf4": 0.56}  # torchao fp8 adds row scales; NF4 adds absmax blocks
LOSSLESS_FORMATS = ("full",)
STREAMING_OFFLOADS = ("group", "sequential")


@dataclass(frozen=True)
class Machine:
    """What the plan may use. Memory in bytes; ``None`` when unknown."""

    device: str  # "cuda" | "mps" | "cpu"
    free_vram: int | None = None
    total_vram: int | None = None
    free_ram: int | None = None
    fp8_compute: bool = False  # torchao installed and the GPU has fp8 tensor cores (sm_89+)
    nf4: bool = False  # bitsandbytes installed and a CUDA GPU
    name: str = ""


@dataclass(frozen=True)
class Workload:
    width: int = 1024
    height: int = 1024
    max_sequence_length: int = 512
    compute_bytes: int = 2  # bf16
    vae_tiling: bool = False
    # What an image task adds (``Task.workload``; all 0 for text to image):
    reference_tokens: int = 0  # image tokens that follow the noise tokens (Kontext: the reference's)
    condition_channels: int = 0  # channels concatenated to each noise token (Fill: masked-image latents + mask)
    encode_pixels: int = 0  # input pixels the VAE encodes before denoising (img2img, inpaint, Fill, Kontext, control)
    prior_params: int = 0  # a model that visits the accelerator before denoising (Redux: SigLIP + Redux embedder)

    def task_note(self, vae_factor: int = 8) -> str:
        """What the task adds, in words ("" for text to image): for ``--dry-run`` and ``doctor --task``."""
        parts = []
        if self.reference_tokens:
            noise = image_tokens(self.width, self.height, vae_factor)
            parts.append(f"+{self.reference_tokens} reference image tokens (sequence {noise} + {self.reference_tokens} "
                         f"+ {self.max_sequence_length} text)")
        if self.condition_channels:
            parts.append(f"transformer input widened by {self.condition_channels} channels per token")
        if self.encode_pixels:
            parts.append(f"VAE encode of {self.encode_pixels / 2**20:.2f} MP of input (1 MP = 1024²)")
        if self.prior_params:
            parts.append(f"a {self.prior_params / 1e9:.2f} B-parameter prior on the accelerator before denoising")
        return "; ".join(parts)


@dataclass(frozen=True)
class MemoryPlan:
    transformer: str = "full"  # full | fp8-storage | fp8 | nf4 | gguf:<type>
    t5: str = "full"  # full | fp8-storage
    offload: str = "none"
    t5_device: str = "auto"  # auto (where the pipeline runs, or offloaded with it) | cpu
    group_blocks: int = 1
    cache_t5: bool = False
    chosen_by: str = "manual"  # manual | auto
    peak_bytes: int | None = None  # estimated accelerator peak
    reason: str = ""

    @property
    def lossy(self) -> bool:
        return self.transformer not in LOSSLESS_FORMATS or self.t5 not in LOSSLESS_FORMATS

    @property
    def streaming(self) -> bool:
        return self.offload in STREAMING_OFFLOADS

    def label(self) -> str:
        t5 = f"T5 {self.t5}" + (" on cpu" if self.t5_device == "cpu" else "")
        return f"transformer {self.transformer}, {t5}, offload {self.offload}"

    def to_dict(self) -> dict:
        return dict(asdict(self), lossy=self.lossy)

    @classmethod
    def from_dict(cls, data: dict) -> "MemoryPlan":
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in names})


# (transformer, t5, offload) in order of preference; see the module docstring for the classes.
CANDIDATES: list[tuple[str, str, str]] = [
    ("full", "full", "none"),
    ("full", "full", "resident"),
    ("full", "full", "model"),
    ("fp8", "full", "none"),
    ("fp8-storage", "full", "none"),
    ("fp8", "full", "resident"),
    ("fp8-storage", "full", "resident"),
    ("fp8", "fp8-storage", "resident"),
    ("fp8-storage", "fp8-storage", "resident"),
    ("fp8", "full", "model"),
    ("fp8-storage", "full", "model"),
    ("nf4", "full", "resident"),
    ("nf4", "fp8-storage", "resident"),
    ("nf4", "full", "model"),
    ("full", "full", "group"),
    ("full", "full", "sequential"),
    ("fp8-storage", "full", "group"),
    ("fp8-storage", "fp8-storage", "sequential"),
]


# ---------------------------------------------------------------- arithmetic


def weight_bytes(params: int, skipped: int, fmt: str, compute_bytes: int, gguf_bytes: int | None = None) -> int:
    """Bytes of one component's weights in ``fmt``."""
    if fmt == "full":
        return params * compute_bytes
    if fmt == "fp8-storage":  # fp8 except the layers diffusers keeps in full precision
        return (params - skipped) + skipped * compute_bytes
    if fmt.startswith("gguf"):
        if gguf_bytes is None:
            raise ValueError("a GGUF plan needs the file's tensor bytes")
        return gguf_bytes
    return int(params * FORMAT_BYTES[fmt])


def activation_bytes(fp: Footprint, work: Workload) -> dict[str, int]:
    """Peak activations of each stage for one image.

    An image task adds to them (``Workload``): Kontext's reference tokens lengthen the denoise sequence
    (the reference's tokens follow the noise tokens, so a same-size reference doubles the image tokens);
    Fill's extra input channels add one tensor of that width per noise token; an input encoded by the
    VAE adds an ``encode`` stage (the encoder's full-resolution maps, like the decoder's; tiled alike).
    """
    cb = work.compute_bytes
    noise_tokens = image_tokens(work.width, work.height, fp.vae_scale_factor)
    tokens = noise_tokens + work.reference_tokens + work.max_sequence_length
    pixels = min(work.width * work.height, VAE_TILE_PIXELS) if work.vae_tiling else work.width * work.height
    act = {
        "text": work.max_sequence_length * fp.t5_width * cb * T5_ACTIVATION_FACTOR,
        "denoise": tokens * fp.hidden * cb * DENOISE_ACTIVATION_FACTOR + noise_tokens * work.condition_channels * cb,
        "decode": pixels * fp.vae_channels * cb * VAE_ACTIVATION_FACTOR,
    }
    if work.encode_pixels:
        encoded = min(work.encode_pixels, VAE_TILE_PIXELS) if work.vae_tiling else work.encode_pixels
        act["encode"] = encoded * fp.vae_channels * cb * VAE_ACTIVATION_FACTOR
    return act


def stage_peaks(plan: MemoryPlan, fp: Footprint, work: Workload, gguf_bytes: int | None = None) -> dict[str, int]:
    """Estimated accelerator bytes in use at the peak of each stage."""
    cb = work.compute_bytes
    transformer = weight_bytes(fp.transformer, fp.transformer_fp8_skipped, plan.transformer, cb, gguf_bytes)
    block = transformer * fp.transformer_block // max(fp.transformer, 1)
    t5 = 0 if plan.t5_device == "cpu" else weight_bytes(fp.t5, fp.t5_fp8_skipped, plan.t5, cb)
    t5_block = t5 * fp.t5_block // max(fp.t5, 1)
    clip, vae = fp.clip * cb, fp.vae * cb
    act = activation_bytes(fp, work)
    if plan.offload == "none":
        everything = transformer + t5 + clip + vae
        on = {"text": everything, "denoise": everything, "decode": everything}
    elif plan.offload == "resident":
        on = {"text": transformer + max(t5, clip), "denoise": transformer, "decode": transformer + vae}
    elif plan.offload == "model":
        on = {"text": max(t5, clip), "denoise": transformer, "decode": vae}
    elif plan.offload == "group":
        # the group running, the one prefetched on the side stream, and the top-level layers
        groups = 2 * plan.group_blocks
        on = {"text": (groups + 1) * t5_block, "denoise": (groups + 1) * block, "decode": vae}
    elif plan.offload == "sequential":
        on = {"text": t5_block, "denoise": block, "decode": vae}
    else:
        raise ValueError(f"unknown offload mode {plan.offload!r}")
    if "encode" in act:  # the input is encoded between text encoding and denoising: the VAE is on, as for decoding
        on["encode"] = on["decode"]
    if work.prior_params:  # the prior (Redux) runs with the text encoders, before denoising: its weights join them
        on["prior"] = on["text"] + work.prior_params * cb
        act["prior"] = act["text"]
    if plan.t5_device == "cpu":  # T5 encodes on the CPU: its activations never touch the accelerator
        act["text"] = 0
    return {stage: on[stage] + act[stage] + RUNTIME_RESERVE for stage in on}


def peak_bytes(plan: MemoryPlan, fp: Footprint, work: Workload, gguf_bytes: int | None = None) -> int:
    return max(stage_peaks(plan, fp, work, gguf_bytes).values())


def host_bytes(plan: MemoryPlan, fp: Footprint, work: Workload, gguf_bytes: int | None = None) -> int:
    """System memory that offloaded weights occupy while rendering (0 when nothing is offloaded)."""
    if plan.offload == "none" and plan.t5_device != "cpu":
        return 0
    cb = work.compute_bytes
    t5 = weight_bytes(fp.t5, fp.t5_fp8_skipped, plan.t5, cb)
    if plan.t5_device == "cpu" and plan.offload == "none":
        return fp.t5 * fp.text_cpu_bytes if plan.t5 == "full" else t5  # FLUX.1's T5 encodes in float32 there
    transformer = weight_bytes(fp.transformer, fp.transformer_fp8_skipped, plan.transformer, cb, gguf_bytes)
    resident = transformer if plan.offload == "resident" else 0
    return transformer + t5 + (fp.clip + fp.vae) * cb - resident


# ---------------------------------------------------------------- choosing


@dataclass(frozen=True)
class Candidate:
    plan: MemoryPlan
    peak: int
    host: int
    fits: bool
    runs: bool
    why_not: str = ""


def runnable(transformer: str, machine: Machine) -> str:
    """Why ``transformer`` cannot run on ``machine`` ("" when it can)."""
    if transformer == "fp8" and not machine.fp8_compute:
        return "needs torchao and a GPU with fp8 tensor cores (compute capability 8.9+)"
    if transformer == "nf4" and not machine.nf4:
        return "needs bitsandbytes and a CUDA GPU"
    return ""


def evaluate(fp: Footprint, work: Workload, machine: Machine, *, headroom: int = int(1.5 * GiB),
             gguf: tuple[str, int] | None = None, group_blocks: int = 1, t5_device: str = "auto",
             text_on_cpu: bool = False) -> list[Candidate]:
    """Every candidate with its estimated peak and whether it fits and runs here.

    ``text_on_cpu``: with ``t5_device = "auto"``, also weigh each candidate with the big text encoder kept
    in system memory (encoding on the CPU), after all of those that use the accelerator for it — so within
    a class of ``choose`` a plan that encodes on the GPU wins whenever one fits.
    """
    devices = [t5_device] + (["cpu"] if text_on_cpu and t5_device == "auto" else [])
    return [c for device in devices for c in _evaluate(fp, work, machine, headroom, gguf, group_blocks, device)]


def _evaluate(fp, work, machine, headroom, gguf, group_blocks, t5_device) -> list[Candidate]:
    results, seen = [], set()
    for transformer, t5, offload in CANDIDATES:
        if gguf is not None:  # the file fixes the transformer's format; the T5 and offload still vary
            if transformer not in ("full", "fp8-storage") or (transformer == "fp8-storage" and t5 == "full"):
                continue
            transformer = f"gguf:{gguf[0]}"
        if (transformer, t5, offload) in seen:
            continue
        seen.add((transformer, t5, offload))
        plan = MemoryPlan(transformer, t5, offload, t5_device, group_blocks, chosen_by="auto")
        gguf_bytes = gguf[1] if gguf else None
        peak, host = peak_bytes(plan, fp, work, gguf_bytes), host_bytes(plan, fp, work, gguf_bytes)
        why = runnable(transformer, machine)
        fits = machine.free_vram is None or peak + headroom <= machine.free_vram
        if fits and machine.free_ram is not None and host > machine.free_ram:
            fits, why = False, why or f"needs {host / GiB:.1f} GiB of free system memory for offloaded weights"
        results.append(Candidate(replace(plan, peak_bytes=peak), peak, host, fits, not why, why))
    return results


def choose(candidates: list[Candidate], *, allow_lossy: bool = True) -> Candidate:
    """The first usable candidate by class: lossless resident, lossy resident, lossless streaming, lossy streaming."""
    usable = [c for c in candidates if c.fits and c.runs]
    classes = [
        ("lossless, transformer resident", lambda p: not p.lossy and not p.streaming),
        ("lossy, transformer resident", lambda p: p.lossy and not p.streaming and allow_lossy),
        ("lossless, streams transformer weights every step", lambda p: not p.lossy and p.streaming),
        ("lossy, streams transformer weights every step", lambda p: p.lossy and p.streaming and allow_lossy),
    ]
    # a GGUF transformer is the user's own lossy choice: judge its plans by the T5 alone
    gguf = any(c.plan.transformer.startswith("gguf") for c in candidates)
    for title, accept in classes:
        for candidate in usable:
            plan = candidate.plan
            judged = replace(plan, transformer="full") if gguf else plan
            if accept(judged):
                return _explain(candidate, title, candidates, allow_lossy)
    smallest = min(candidates, key=lambda c: c.peak)
    raise DeviceError(f"no memory plan fits: the smallest ({smallest.plan.label()}) needs about "
                      f"{(smallest.peak) / GiB:.1f} GiB on the accelerator; free memory or render smaller")


def _explain(candidate: Candidate, title: str, candidates: list[Candidate], allow_lossy: bool) -> Candidate:
    reason = f"fastest plan that fits ({title})"
    if candidate.plan.lossy and not candidate.plan.transformer.startswith("gguf"):
        reason += "; LOSSY: no lossless plan fits without streaming weights every step (set memory.allow_lossy = false to refuse)"
    elif candidate.plan.streaming and not allow_lossy:
        reason += "; lossy formats are forbidden by memory.allow_lossy = false"
    plan = replace(candidate.plan, reason=reason)
    return replace(candidate, plan=plan)


def auto_plan(fp: Footprint, work: Workload, machine: Machine, *, allow_lossy: bool = True,
              headroom_gb: float = 1.5, gguf: tuple[str, int] | None = None, group_blocks: int = 1,
              cache_t5: bool = False, t5_device: str = "auto", text_on_cpu: bool = False) -> MemoryPlan:
    if machine.device == "cpu":  # offloading to where the weights already are gains nothing
        return MemoryPlan(f"gguf:{gguf[0]}" if gguf else "full", "full", "none", t5_device, cache_t5=cache_t5,
                          chosen_by="auto", reason="CPU: the weights live in system memory")
    candidates = evaluate(fp, work, machine, headroom=int(headroom_gb * GiB), gguf=gguf, group_blocks=group_blocks,
                          t5_device=t5_device, text_on_cpu=text_on_cpu)
    chosen = choose(candidates, allow_lossy=allow_lossy)
    return replace(chosen.plan, cache_t5=cache_t5)


# ---------------------------------------------------------------- this machine


def probe_machine(device: str) -> Machine:
    """Free accelerator and system memory, and which quantized formats can run here."""


    ram = available_ram()
    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        free, total = torch.cuda.mem_get_info(index)
        major, minor = torch.cuda.get_device_capability(index)
        return Machine(
            "cuda", free, total, ram,
            fp8_compute=(major, minor) >= (8, 9) and importlib.util.find_spec("torchao") is not None,
            nf4=importlib.util.find_spec("bitsandbytes") is not None,
            name=torch.cuda.get_device_name(index),
        )
    if device == "mps":
        total = torch.mps.recommended_max_memory()
        return Machine("mps", total - torch.mps.current_allocated_memory(), total, ram, name="Apple MPS")
    return Machine("cpu", None, None, ram, name="CPU")


def synthetic_machine(free_gib: float, *, ram_gib: float = 64.0, fp8_compute: bool = False, nf4: bool = False) -> Machine:
    """A CUDA card with ``free_gib`` free (for docs, tests and ``doctor --vram``)."""
    return Machine("cuda", int(free_gib * GiB), int(free_gib * GiB), int(ram_gib * GiB), fp8_compute, nf4,
                   name=f"{free_gib:g} GiB card")


def table(candidates: list[Candidate], chosen: MemoryPlan | None = None) -> list[str]:
    """Rows for ``localflux doctor``."""
    w = 16 if any(c.plan.t5_device == "cpu" for c in candidates) else 12
    rows = [f"{'':2}{'transformer':<13}{'T5':<{w}}{'offload':<11}{'peak GiB':>9}{'host GiB':>9}  class / why not"]
    for c in candidates:
        p = c.plan
        mark = "->" if chosen is not None and (p.transformer, p.t5, p.offload, p.t5_device) == (
            chosen.transformer, chosen.t5, chosen.offload, chosen.t5_device) else "  "
        kind = ("lossy" if p.lossy else "lossless") + (", streaming" if p.streaming else "")
        note = kind if c.fits and c.runs else (c.why_not or "does not fit")
        t5 = p.t5 + (" cpu" if p.t5_device == "cpu" else "")
        rows.append(f"{mark}{p.transformer:<13}{t5:<{w}}{p.offload:<11}{c.peak / GiB:>9.1f}{c.host / GiB:>9.1f}  {note}")
    return rows
