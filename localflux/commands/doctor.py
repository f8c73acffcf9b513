"""``localflux doctor``: what this machine can run, and where weights are looked for."""

from __future__ import annotations

from ..families import catalog


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "doctor", help="show device, memory, dtype support and weight locations",
        description="Show what this machine can run (device, memory, dtype support), where weights and caches are "
                    "looked for, and the candidate memory plans for a model at 1024x1024 (docs/memory.md).")
    parser.add_argument("--model", choices=_preset_names(), default="dev", metavar="PRESET",
                        help="which model's memory-plan table to show: " + ", ".join(_preset_names())
                             + " (default dev: FLUX.1 [dev])")
    parser.add_argument("--vram", type=float, metavar="GIB",
                        help="show the memory plans for a CUDA card with this much free memory instead of this machine's")
    parser.add_argument("--task", choices=["text", "img2img", "inpaint", "fill", "kontext", "control", "redux"],
                        default="text",
                        help="plan for this task at 1024x1024 (fill and kontext: FLUX.1 Fill / Kontext [dev]); "
                             "it adds a VAE encode of the input, Kontext also a reference's tokens, Fill and control "
                             "a wider input, Redux its prior")
    parser.set_defaults(func=run)


def run(args) -> int:
    import math
    import os

    from ..errors import ConfigError

    if args.vram is not None and not (math.isfinite(args.vram) and args.vram > 0):
        raise ConfigError(f"--vram must be a positive number of GiB, e.g. --vram 24, got {args.vram:g}")

    from ..device import memory_summary, resolve_placement
    from ..hashing import cache_dir

    rows = memory_summary()
    placement = resolve_placement()
    rows.append(("default device", f"{placement.device}, {placement.dtype}"))
    try:
        from huggingface_hub import constants

        rows.append(("hugging face cache", str(constants.HF_HUB_CACHE)))
        rows.append(("hub offline", str(constants.HF_HUB_OFFLINE)))
    except ImportError:  # huggingface_hub is a dependency; this only guards odd installs
        pass
    rows.append(("HF_TOKEN set", "yes" if os.environ.get("HF_TOKEN") else "no (needed for FLUX.1-dev downloads)"))
    rows.append(("hash cache", str(cache_dir())))
    rows += _upscaler_rows()
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    _print_memory_plans(args, placement.device)
    return 0


def _preset_names() -> list[str]:
    """Every family's presets and full-size model names (FLUX.2: klein-4b, klein-9b, flux2-dev ...)."""
    return catalog.preset_names()


def _print_memory_plans(args, device: str) -> None:
    """The candidate memory plans for a preset's model at 1024x1024 on this card (or a --vram one), best first.

    FLUX.2's one text encoder (Qwen3 / Mistral) is sized in the plan's T5 column (families/flux2/footprint.py).
    """
    from ..families.registry import FAMILIES
    from ..memory.plan import Workload, choose, evaluate, probe_machine, synthetic_machine, table

    vram = getattr(args, "vram", None)
    preset = getattr(args, "model", "dev")
    task = getattr(args, "task", "text")
    if task in ("fill", "kontext"):  # these tasks run their own models (FLUX.1 [dev] derivatives)
        if preset != "dev":
            from ..errors import ConfigError

            raise ConfigError(f"--task {task} runs FLUX.1 {task.capitalize()} [dev]; drop --model {preset}")
        preset = task
    if vram is None and not device.startswith("cuda"):
        print("\nmemory plans: no CUDA GPU here; `localflux doctor --vram 24` shows the plans for a 24 GiB card")
        return
    from ..tasks import TASKS

    machine = synthetic_machine(vram) if vram is not None else probe_machine(device)
    family = next(f for f in FAMILIES if preset in f.presets or preset in f.sized_models())
    spec = family.presets[family.sized_models().get(preset, preset)]
    footprint = family.sized_footprint(preset)  # the packaged (published) configs
    size = Workload()  # 1024x1024
    work = Workload(max_sequence_length=spec.max_sequence_length,
                    **TASKS.by_name(task).workload(size.width, size.height, 2 * footprint.vae_scale_factor))
    candidates = evaluate(footprint, work, machine, text_on_cpu=family.auto_text_on_cpu)
    try:
        chosen = choose(candidates).plan
    except Exception:  # nothing fits: the table still shows what each plan needs
        chosen = None
    text_note = "" if family.name == "flux1" else " (the T5 column is its text encoder; cpu: it encodes from system memory)"
    note = work.task_note(footprint.vae_scale_factor)
    name = family.model_name(preset)
    print(f"\nmemory plans for {name} 1024x1024{f', task {task}' if task != 'text' else ''}{text_note} "
          f"on {machine.name} "
          f"({machine.free_vram / 2**30:.1f} GiB free; estimates, docs/memory.md):")
    if note:
        print(f"the task adds: {note}")
    for row in table(candidates, chosen):
        print(row)
    if chosen is not None:
        print(f"memory = \"auto\" picks: {chosen.label()} ({chosen.reason})")


def _upscaler_rows() -> list[tuple[str, str]]:
    try:
        from ..upscale.registry import weights_dir
    except ImportError:  # the upscale stage is optional
        return []
    return [("upscaler weights", str(weights_dir()))]
