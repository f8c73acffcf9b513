"""Train a subject LoRA on the FLUX transformer: peft adapters, accelerate, rectified-flow loss.

Order of work (each stage fails before the next costs anything):
1. ``preflight``: config rules, dataset scan, run-folder state, optimizer and kohya availability;
   no weights are loaded, so every user error comes before any training step;
2. load the base model on the CPU, cache latents and caption embeddings (main process first),
   then only the transformer goes to the accelerator;
3. add the LoRA (seeded init), optionally fp8 weight storage and gradient checkpointing;
4. the loop: one optimizer step = ``gradient_accumulation`` micro-batches; every random draw
   (timesteps, caption dropout, noise) comes from one private CPU generator, drawn for the whole
   global micro-batch on every process, each process training on its slice;
5. checkpoints, previews, and the final ``.safetensors``.

Exact resume: a checkpoint holds LoRA, optimizer, scheduler, the generator state and the data
position, and nothing else influences the next step, so resuming reproduces the uninterrupted
run bit for bit on the CPU. Library code never touches the global RNG (the LoRA's init runs
under a forked, seeded RNG).

Loss (diffusers' FLUX DreamBooth script, BFL's rectified flow): x_t = (1 - s) x0 + s noise,
the transformer predicts noise - x0 from packed x_t, timestep s and, for dev, a guidance value.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import torch
from accelerate import Accelerator
from diffusers import DiffusionPipeline
from diffusers.optimization import get_scheduler
from diffusers.training_utils import cast_training_params
from peft import LoraConfig as PeftLoraConfig

from .. import optional, schedule
from ..device import Placement, pick_device, pick_dtype
from ..errors import ConfigError, TrainingError
from ..families.flux1 import training
from ..loader import LoadedModel, load_model
from ..output import ensure_output_dir
from ..pipeline import identify
from ..progress import progress_bar
from . import checkpoint as ckpt
from .cache import EMPTY_CAPTION, TrainingCache, base_model_hash, build_cache
from .config import TrainConfig
from .dataset import DataOrder, Dataset, describe_dataset, scan_dataset
from .export import kohya_writer, lora_file_bytes, training_metadata, write_kohya_copy, write_lora
from .previews import discard_after, render_previews

log = logging.getLogger(__name__)

# tests: "STEP" or "STEP.MICRO" -> SIGKILL just before that micro-batch; "STEP:before_checkpoint" (that step's
# previews are written, its checkpoint is not) or "STEP:after_checkpoint" -> SIGKILL at that instant
KILL_ENV = "LOCALFLUX_TRAIN_KILL_AT"
KILL_POINTS = ("before_checkpoint", "after_checkpoint")
# Config keys that may change between a run and its resume: they do not touch the numbers.
RESUME_FREE = ("samples", "checkpoint", "output", "memory.gradient_checkpointing", "memory.cache_dir")


@dataclass
class Preflight:
    config: TrainConfig
    dataset: Dataset
    run_dir: Path
    lora_path: Path
    resume_from: Path | None


@dataclass
class TrainResult:
    run_dir: Path
    lora_path: Path
    kohya_path: Path | None
    steps: int
    losses: list[float] = field(default_factory=list)  # mean loss of every optimizer step, from step 1
    dataset_sha256: str = ""
    base_model_sha256: str = ""
    resumed_from: int | None = None
    previews: list[Path] = field(default_factory=list)
    main_process: bool = True  # False in the other processes of a multi-process run
    cache_computed: int = 0  # cache entries computed by this run (0 when a rerun found them all)
    pipe: DiffusionPipeline | None = None  # the training pipeline (with the adapter), for callers in the same process


# ---------------------------------------------------------------- before any weights


def preflight(config: TrainConfig, *, resume: bool = False) -> Preflight:
    """Everything that can be checked without loading a model; raises a LocalFluxError on the first problem."""
    if config.output.kohya:

        kohya_writer()
    _check_optimizer(config)
    _check_fp8(config)
    dataset = scan_dataset(config.dataset)
    run_dir = Path(config.output.dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise TrainingError(f"output.dir {str(run_dir)!r} is a file; choose a folder for the run")
    lora_path = run_dir / f"{config.output.name}.safetensors"
    if lora_path.exists():
        raise TrainingError(f"{str(lora_path)!r} already exists: this run is finished; choose another output.dir "
                            "or output.name to train again")
    latest = ckpt.latest_checkpoint(run_dir)
    if resume and latest is None:  # quietly starting over would hide a mistyped output.dir
        if not run_dir.is_dir():
            raise TrainingError(f"--resume: run folder {str(run_dir)!r} does not exist, so there is nothing to resume; "
                                "check output.dir, or run without --resume to start a new run")
        raise TrainingError(f"--resume: run folder {str(run_dir)!r} holds no complete checkpoint yet; "
                            "run without --resume to start it again from step 0")
    if latest is not None and not resume:
        raise TrainingError(f"run folder {str(run_dir)!r} already holds checkpoints (last: {latest.name}); "
                            "pass --resume to continue that run, or choose another output.dir")
    return Preflight(config, dataset, run_dir, lora_path, latest if resume else None)


def _check_optimizer(config: TrainConfig) -> None:
    if config.optimizer.name != "adamw8bit":
        return

    if config.model.device == "cpu" or not torch.cuda.is_available():
        raise TrainingError("optimizer.name = 'adamw8bit' uses bitsandbytes, which needs a CUDA GPU and none is in use "
                            "here; use optimizer.name = 'adamw'")
    optional.require("bitsandbytes", "optimizer.name = 'adamw8bit' (or use optimizer.name = 'adamw')", TrainingError)


def _check_fp8(config: TrainConfig) -> None:
    if not config.memory.fp8_base:
        return

    if not hasattr(torch, "float8_e4m3fn"):
        raise TrainingError(f"memory.fp8_base needs torch with float8 support (this is torch {torch.__version__}); "
                            "upgrade torch or set memory.fp8_base = false")


# ---------------------------------------------------------------- the run


@dataclass
class _Run:
    """What one training run holds between its stages: the accelerator, the model, its optimizer and data order."""

    config: TrainConfig
    pre: Preflight
    accelerator: Accelerator
    device: str
    dtype: str
    loaded: LoadedModel
    spec: ModuleType  # the family's training module (families/<name>/training.py)
    cache: TrainingCache
    model_sha: str
    named: dict
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    model: torch.nn.Module
    generator: torch.Generator
    order: DataOrder
    total: int

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def pipe(self):
        return self.loaded.pipe

    def metadata(self, step: int) -> dict[str, str]:
        return _metadata(self.config, self.pre.dataset.sha256, self.model_sha, step)


def train(config: TrainConfig, *, resume: bool = False, progress: bool = True) -> TrainResult:
    """Run (or resume) the training described by ``config``; returns where the LoRA went and the losses."""
    pre = preflight(config, resume=resume)
    run = _setup(config, pre, progress)
    accelerator, transformer = run.accelerator, run.pipe.transformer

    step, losses, resumed_from = 0, [], None
    state_base = {"config": config.to_dict(), "dataset_sha256": pre.dataset.sha256,
                  "base_model_sha256": run.model_sha, "processes": accelerator.num_processes}
    if pre.resume_from is not None:
        step, losses = _resume(pre.resume_from, state_base, run.named, run.optimizer, run.scheduler, run.generator,
                               run.order)
        resumed_from = step
    if run.main:
        ensure_output_dir(pre.run_dir)
        ckpt.remove_incomplete(pre.run_dir)
        discard_after(pre.run_dir, step if pre.resume_from is not None else -1)  # previews of an abandoned future
    accelerator.wait_for_everyone()

    previews = []
    if config.samples.every and config.samples.at_start and step == 0:
        previews += _previews(accelerator, config, run.loaded, transformer, 0, pre.run_dir, run.device,
                              run.metadata(0))
    kill_at = _kill_point()
    bar = _progress(run.total, step, progress and run.main)
    while step < run.total:
        step += 1
        losses.append(_train_step(run, step, kill_at))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}", lr=f"{run.scheduler.get_last_lr()[0]:.2e}")
        # previews before the checkpoint: a run killed in between resumes from the checkpoint before, which
        # discards this step's (maybe partial) previews and renders them again; never a step without previews
        if config.samples.every and (step % config.samples.every == 0 or step == run.total):
            previews += _previews(accelerator, config, run.loaded, transformer, step, pre.run_dir, run.device,
                                  run.metadata(step))
        if step % config.checkpoint.every == 0:
            _checkpoint(run, step, kill_at, dict(state_base, step=step, position=run.order.position(), losses=losses,
                                                 rng=ckpt.encode_rng(run.generator.get_state())))
    if bar is not None:
        bar.close()

    kohya_path = _export(run, step)
    accelerator.end_training()
    return TrainResult(pre.run_dir, pre.lora_path, kohya_path, step, losses, pre.dataset.sha256, run.model_sha,
                       resumed_from, previews, run.main, run.cache.computed, run.pipe)


def _setup(config: TrainConfig, pre: Preflight, progress: bool) -> _Run:
    """The accelerator, the base model with its adapter, the latent/text cache, the optimizer and the data order."""
    device_name = pick_device(config.model.device)
    mixed = config.training.mixed_precision
    if mixed == "auto":
        mixed = "no" if device_name == "cpu" else ("bf16" if pick_dtype(device_name) == "bfloat16" else "no")
    accelerator = Accelerator(mixed_precision=mixed, cpu=device_name == "cpu")
    device = str(accelerator.device)
    dtype = pick_dtype(device_name, config.model.dtype)

    # Loaded on the CPU: the text encoders visit the accelerator only to fill the cache. A private copy, never in
    # the model cache: training attaches adapters to it, which later renders in this process must not see.
    _, family, preset = identify(config.model)
    spec = family.training()
    if spec is None:
        raise ConfigError(f"LoRA training is not available for {family.label} models")
    loaded = load_model(config.model, Placement("cpu", dtype), family=family, preset=preset)
    pipe = loaded.pipe
    model_sha = base_model_hash(loaded)
    _check_buckets(pre.dataset, pipe.vae_scale_factor)
    max_len = family.presets[preset].max_sequence_length
    cache_dir = Path(config.memory.cache_dir or pre.run_dir / "cache")
    with accelerator.main_process_first():
        _helpers(pipe, device, spec)
        cache = build_cache(pipe, pre.dataset, cache_dir=cache_dir, model_hash=model_sha, device=device,
                            max_sequence_length=max_len, progress=progress and accelerator.is_main_process, spec=spec)
        _helpers(pipe, "cpu", spec)

    transformer = pipe.transformer
    add_lora(transformer, config, device=device, spec=spec)
    if config.memory.fp8_base:
        transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=getattr(torch, dtype))
    transformer.to(device)
    if config.memory.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    transformer.train()
    named = {n: p for n, p in transformer.named_parameters() if p.requires_grad}
    optimizer = make_optimizer(config, list(named.values()))
    order = DataOrder(pre.dataset.items, config.training.batch_size * accelerator.num_processes, config.training.seed)
    total = total_steps(config, order.batches_per_epoch)
    scheduler = make_scheduler(config, optimizer, total)
    model, optimizer = accelerator.prepare(transformer, optimizer)
    generator = torch.Generator("cpu").manual_seed(config.training.seed)
    return _Run(config, pre, accelerator, device, dtype, loaded, spec, cache, model_sha, named, optimizer, scheduler,
                model, generator, order, total)


def _train_step(run: _Run, step: int, kill_at) -> float:
    """One optimizer step over ``gradient_accumulation`` micro-batches; returns the step's mean loss."""
    config, accelerator, device = run.config, run.accelerator, run.device
    guidance_embeds = bool(run.pipe.transformer.config.guidance_embeds)
    local = slice(accelerator.process_index * config.training.batch_size,
                  (accelerator.process_index + 1) * config.training.batch_size)
    accum = config.training.gradient_accumulation
    loss_sum = torch.zeros((), device=device)
    for micro in range(accum):
        _die_at(kill_at, step, micro)
        batch = _draw_batch(run.order.next(), run.pre.dataset, run.cache, config, run.generator, run.pipe, run.spec)
        sync = contextlib.nullcontext() if micro == accum - 1 else accelerator.no_sync(run.model)
        with sync:
            with accelerator.autocast():
                loss = flow_loss(run.model, **_slice(batch, local), device=device, dtype=getattr(torch, run.dtype),
                                 guidance=config.training.guidance if guidance_embeds else None,
                                 vae_scale_factor=run.pipe.vae_scale_factor, spec=run.spec)
            accelerator.backward(loss / accum)
        loss_sum += loss.detach()
    if config.optimizer.max_grad_norm > 0:
        accelerator.clip_grad_norm_(list(run.named.values()), config.optimizer.max_grad_norm)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    step_loss = float(accelerator.reduce(loss_sum / accum, reduction="mean"))
    if not math.isfinite(step_loss):
        raise TrainingError(f"the loss became {step_loss} at step {step}; lower optimizer.lr "
                            "(or use mixed_precision = 'bf16' rather than fp16)")
    return step_loss


def _checkpoint(run: _Run, step: int, kill_at, state: dict) -> None:
    _die_at(kill_at, step, "before_checkpoint")
    if run.main:
        ckpt.save_checkpoint(run.pre.run_dir, step, lora={n: p.detach().float() for n, p in run.named.items()},
                             optimizer=run.optimizer.state_dict(), scheduler=run.scheduler.state_dict(),
                             state=state, keep=run.config.checkpoint.keep)
    run.accelerator.wait_for_everyone()
    _die_at(kill_at, step, "after_checkpoint")


def _export(run: _Run, step: int) -> Path | None:
    """The final LoRA file (and its kohya copy when asked for), written by the main process."""
    kohya_path = None
    if run.main:
        config, pre = run.config, run.pre
        write_lora(pre.lora_path, run.pipe.transformer, config.output.dtype, run.metadata(step))
        if config.output.kohya:
            kohya_path = write_kohya_copy(pre.lora_path, pre.run_dir / f"{config.output.name}.kohya.safetensors",
                                          metadata=run.metadata(step))
    run.accelerator.wait_for_everyone()
    return kohya_path


# ---------------------------------------------------------------- building blocks


def add_lora(transformer, config: TrainConfig, *, device: str = "cpu", spec=None) -> list[str]:
    """Freeze the transformer and add the ``default`` adapter on the configured modules; returns their names."""

    targets = lora_target_modules(transformer, config, spec)
    transformer.requires_grad_(False)
    peft_config = PeftLoraConfig(r=config.lora.rank, lora_alpha=config.lora.alpha, target_modules=targets,
                                 init_lora_weights=True)
    devices = [torch.device(device).index or 0] if device.startswith("cuda") else []
    with torch.random.fork_rng(devices=devices):  # seeded init without touching the caller's RNG
        torch.manual_seed(config.training.seed)
        transformer.add_adapter(peft_config)
    cast_training_params(transformer, dtype=torch.float32)  # LoRA in fp32 even on a bf16 base
    return targets


def lora_target_modules(transformer, config: TrainConfig, spec=None) -> list[str]:
    """Full module names for ``lora.targets`` inside the selected double and single blocks."""

    spec = spec or _flux1_spec()
    wanted = set(spec.default_targets(config.lora.targets))
    seen, names = set(), []
    for prefix, blocks, selected in (("transformer_blocks", transformer.transformer_blocks, config.lora.double_blocks),
                                     ("single_transformer_blocks", transformer.single_transformer_blocks,
                                      config.lora.single_blocks)):
        indices = range(len(blocks)) if selected is None else selected
        key = "double_blocks" if prefix == "transformer_blocks" else "single_blocks"
        bad = [i for i in indices if i >= len(blocks)]
        if bad:
            raise ConfigError(f"lora.{key} has {bad[0]}, but this model has {len(blocks)} such blocks "
                              f"(0 to {len(blocks) - 1})")
        for index, block in enumerate(blocks):
            for name, module in block.named_modules():
                if name in wanted and isinstance(module, torch.nn.Linear):
                    seen.add(name)
                    if index in indices:
                        names.append(f"{prefix}.{index}.{name}")
    # judged against what FLUX blocks contain, not what this model has: a model without single blocks
    # still accepts the default targets, which then simply adapt its double blocks
    unknown = sorted(wanted - seen - spec.block_linears())
    if unknown:
        raise ConfigError(f"lora.targets has {unknown[0]!r}, which names no linear layer in a FLUX block; "
                          "see configs/train-subject.toml (FLUX.2: configs/train-subject-klein.toml) for the names")
    if not names:
        raise ConfigError("lora.targets and the selected blocks leave no layer to train; select more blocks")
    return names


def _check_buckets(dataset: Dataset, vae_scale_factor: int) -> None:
    """Buckets sit on the 16-pixel grid (FLUX.1's VAE); a model with a coarser VAE needs a coarser grid."""
    multiple = 2 * vae_scale_factor
    for item in dataset.items:
        if item.bucket[0] % multiple or item.bucket[1] % multiple:
            raise ConfigError(f"bucket {item.bucket[0]}x{item.bucket[1]} does not fit this model, whose image sides "
                              f"must be multiples of {multiple} (its VAE downsamples {vae_scale_factor}x); "
                              f"use dataset.resolutions that are multiples of {multiple}")


def _flux1_spec():

    return training


def make_optimizer(config: TrainConfig, params: list):

    o = config.optimizer
    if o.name == "adamw8bit":
        import bitsandbytes as bnb  # optional: optional.require in preflight (_check_optimizer)

        cls = bnb.optim.AdamW8bit
    else:
        cls = torch.optim.AdamW
    return cls(params, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)


def make_scheduler(config: TrainConfig, optimizer, total: int):

    # Stepped once per optimizer step by the loop itself (not prepared by accelerate, which would
    # step it once per process).
    return get_scheduler(config.optimizer.scheduler, optimizer, num_warmup_steps=config.optimizer.warmup_steps,
                         num_training_steps=total)


def total_steps(config: TrainConfig, batches_per_epoch: int) -> int:
    if config.training.steps is not None:
        return config.training.steps
    return math.ceil(config.training.epochs * batches_per_epoch / config.training.gradient_accumulation)


def sample_sigmas(kind: str, generator, count: int, *, mean: float, std: float, seq_len: int, scheduler_config,
                  spec=None) -> "object":
    """Noise levels in (0, 1): uniform, logit-normal (SD3), or logit-normal shifted by image size as the family's
    sampler shifts it (``spec.mu``: FLUX.1 from the scheduler config, FLUX.2 diffusers' empirical mu)."""

    if kind == "uniform":
        return torch.rand(count, generator=generator)
    u = torch.sigmoid(torch.randn(count, generator=generator) * std + mean)
    if kind == "flux_shift":
        mu = (spec or _flux1_spec()).mu(seq_len, scheduler_config)
        u = schedule.time_shift(mu, u)
    return u


def _draw_batch(indices: list[int], dataset: Dataset, cache, config: TrainConfig, generator, pipe, spec) -> dict:
    """The global micro-batch and its random draws (same on every process, in a fixed order)."""


    items = [dataset.items[i] for i in indices]
    latents = torch.stack([cache.latents[(it.sample, it.bucket)] for it in items]).float()
    width, height = items[0].bucket
    t = config.training
    sigmas = sample_sigmas(t.timesteps, generator, len(items), mean=t.logit_mean, std=t.logit_std,
                           seq_len=schedule.image_seq_len(width, height, pipe.vae_scale_factor),
                           scheduler_config=pipe.scheduler.config, spec=spec)
    dropped = torch.rand(len(items), generator=generator) < config.dataset.caption_dropout
    noise = torch.randn(latents.shape, generator=generator)
    captions = [EMPTY_CAPTION if drop else dataset.samples[it.sample].caption for it, drop in zip(items, dropped.tolist())]
    weights = torch.tensor([config.dataset.regularization_weight if dataset.samples[it.sample].regularization else 1.0
                            for it in items])
    text = {key: torch.stack([cache.text[c][key] for c in captions]) for key in cache.text[captions[0]]}
    return {"latents": latents, "noise": noise, "sigmas": sigmas, "text": text, "weights": weights}


def _slice(batch: dict, local: slice) -> dict:
    return {k: ({n: t[local] for n, t in v.items()} if isinstance(v, dict) else v[local]) for k, v in batch.items()}


def flow_loss(model, *, latents, noise, sigmas, text: dict, weights, device: str, dtype, guidance: float | None,
              vae_scale_factor: int = 8, spec=None):
    """Weighted mean over items of the rectified-flow MSE between the prediction and noise - latents.

    The family's ``spec.predict`` packs the latents, builds the position ids and calls its transformer."""
    latents, noise = latents.to(device), noise.to(device)
    b = latents.shape[0]
    s = sigmas.to(device).view(b, 1, 1, 1)
    noisy = ((1 - s) * latents + s * noise).to(dtype)
    pred = (spec or _flux1_spec()).predict(model, noisy, sigmas, text, device=device, dtype=dtype, guidance=guidance,
                                           vae_scale_factor=vae_scale_factor)
    per_item = ((pred.float() - (noise - latents).float()) ** 2).mean(dim=(1, 2, 3))
    return (per_item * weights.to(device)).mean()


# ---------------------------------------------------------------- helpers


def _resume(path: Path, state_base: dict, named: dict, optimizer, scheduler, generator, order: DataOrder):

    found = ckpt.load_checkpoint(path)
    state = found.state
    for key in ("dataset_sha256", "base_model_sha256", "processes"):
        if state.get(key) != state_base[key]:
            what = {"dataset_sha256": "the dataset (images, captions or trigger) changed",
                    "base_model_sha256": "the base model changed",
                    "processes": f"it ran on {state.get(key)} process(es), this run has {state_base[key]}"}[key]
            raise TrainingError(f"cannot resume from {str(path)!r}: {what}; restore it or start a new run")
    changed = _changed_key(state.get("config", {}), state_base["config"])
    if changed:
        raise TrainingError(f"cannot resume from {str(path)!r}: {changed} differs from the checkpoint's config; "
                            "put it back or start a new run in another output.dir")
    missing = sorted(set(named) ^ set(found.lora))
    if missing:
        raise TrainingError(f"checkpoint {str(path)!r} does not match this LoRA ({missing[0]}); start a new run")
    with torch.no_grad():
        for name, param in named.items():
            param.copy_(found.lora[name])
    optimizer.load_state_dict(found.optimizer)
    scheduler.load_state_dict(found.scheduler)
    generator.set_state(ckpt.decode_rng(state["rng"]))
    order.seek(state["position"])
    return found.step, list(state.get("losses", []))


def _changed_key(old: dict, new: dict, prefix: str = "") -> str | None:
    for key in sorted(set(old) | set(new)):
        dotted = f"{prefix}{key}"
        if dotted in RESUME_FREE:
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found = _changed_key(a, b, dotted + ".")
            if found:
                return found
        elif a != b:
            return dotted
    return None


def _metadata(config: TrainConfig, dataset_sha: str, model_sha: str, step: int) -> dict[str, str]:

    return training_metadata(config=config, dataset_sha256=dataset_sha, base_model_sha256=model_sha, step=step)


def _previews(accelerator, config, loaded, transformer, step, run_dir, device, metadata) -> list[Path]:
    paths = []
    if accelerator.is_main_process:

        trainable = [p for p in transformer.parameters() if p.requires_grad]
        paths = render_previews(config, loaded, lora_file_bytes(transformer, config.output.dtype, metadata),
                                step, run_dir, device)
        for param in trainable:  # switching adapters must leave the training adapter trainable
            param.requires_grad_(True)
    accelerator.wait_for_everyone()
    return paths


def _helpers(pipe, device: str, spec) -> None:
    for name in spec.HELPERS:
        getattr(pipe, name).to(device)


def _kill_point() -> tuple[int, int | str] | None:
    """``KILL_ENV`` as (step, micro-batch index) or (step, "before_checkpoint" / "after_checkpoint")."""
    text = os.environ.get(KILL_ENV)
    if not text:
        return None
    if ":" in text:
        step, _, where = text.partition(":")
        if where not in KILL_POINTS:
            raise ValueError(f"{KILL_ENV}={text!r}: the point after ':' must be one of {', '.join(KILL_POINTS)}")
        return int(step), where
    step, _, micro = text.partition(".")
    return int(step), int(micro or 0)


def _die_at(kill_at, step: int, where: int | str) -> None:
    """SIGKILL this process when the tests asked for this instant (``KILL_ENV``)."""
    if kill_at == (step, where):
        os.kill(os.getpid(), signal.SIGKILL)


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return None

    return progress_bar(total, "training", "step", leave=True, initial=initial)


def describe_run(pre: Preflight) -> str:
    """What ``train-lora --dry-run`` prints: the dataset and the plan, checked, without loading weights."""

    c = pre.config
    per_step = c.training.batch_size * c.training.gradient_accumulation
    lines = [
        f"model: {c.model.source}",
        describe_dataset(pre.dataset),
        f"trigger: {c.dataset.trigger}",
        f"lora: rank {c.lora.rank}, alpha {c.lora.alpha:g}, {len(c.lora.targets)} target names",
        f"steps: {c.training.steps if c.training.steps is not None else str(c.training.epochs) + ' epoch(s)'}, "
        f"{per_step} image(s) per step per process, optimizer {c.optimizer.name} lr {c.optimizer.lr:g}",
        f"output: {pre.lora_path}" + (f" (resuming from {pre.resume_from.name})" if pre.resume_from else ""),
        "config: " + json.dumps(c.to_dict(), sort_keys=True),
    ]
    return "\n".join(lines)
