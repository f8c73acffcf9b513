"""Pure predictions of what diffusers' FLUX.2 pipelines (0.42.1) do, for recipes, warnings and --dry-run.

Each function mirrors a few lines of ``diffusers/pipelines/flux2/`` and is checked against the pipeline's
own code in ``tests/test_flux2_family.py``:

* ``reference_geometry``: what Flux2KleinPipeline / Flux2Pipeline do to one ``image=`` reference;
* ``inpaint_image_geometry``: what Flux2KleinInpaintPipeline does to ``image=`` (the picture to repaint);
* ``output_size``: the render size when the caller gives none, or gives one that is not a multiple of 16;
* ``expected_sigmas``: the schedule (empirical mu, exponential shift) for a size and step count;
* ``count_prompt_tokens``: tokens after the chat template, for a "prompt too long" warning.
"""

from __future__ import annotations

import math

import numpy as np
from diffusers.pipelines.flux2.pipeline_flux2 import format_input
from diffusers.pipelines.flux2.system_messages import SYSTEM_MESSAGE

MAX_AREA = 1024 * 1024  # references above this area are scaled down to about it
MIN_SIDE = 64
MAX_ASPECT = 8
MULTIPLE = 16  # 2 x the VAE factor 8 (2x2 latent patches)
DEFAULT_SIZE = 1024  # default_sample_size 128 x VAE factor 8
MAX_SEQUENCE_LENGTH = 512


def check_reference(w: int, h: int) -> str | None:
    """diffusers' ``Flux2ImageProcessor.check_image_input`` as a message (None = accepted)."""
    if w < MIN_SIDE or h < MIN_SIDE:
        return f"Image too small: {w}×{h}. Both dimensions must be at least {MIN_SIDE}px"
    ratio = max(w / h, h / w)
    if ratio > MAX_ASPECT:
        return f"Aspect ratio too extreme: {w}×{h} (ratio: {ratio:.1f}:1). Maximum allowed ratio is {MAX_ASPECT}:1"
    return None


def _scaled(w: int, h: int) -> tuple[int, int]:
    s = math.sqrt(MAX_AREA / (w * h))
    return int(w * s), int(h * s)


def _capped(w: int, h: int) -> tuple[list, tuple[int, int]]:
    """(steps, size): the Lanczos resize to about 1024² both pipelines apply above that area, if any."""
    if w * h <= MAX_AREA:
        return [], (w, h)
    new = _scaled(w, h)
    return [("resize", {"from": (w, h), "to": new, "filter": "lanczos"})], new


def reference_geometry(w: int, h: int, multiple: int = MULTIPLE) -> dict:
    """What the text/reference pipelines do to a W×H reference (PIL image), in order.

    ``steps``: ``("resize", {"from": (w, h), "to": (w', h'), "filter": "lanczos"})`` when w·h > 1024²
    (scale ``s = sqrt(1024²/(w·h))``, sizes truncated with ``int``), then ``("crop", {"box": (l, t, r, b)})``
    when a side is not a multiple of 16 (a centred crop, no resize: left = (W − W16)//2, top = (H − H16)//2),
    then ``("rgb", {})`` (alpha dropped; EXIF orientation is not applied). ``size`` is the final (w, h).
    Raises ValueError with diffusers' message for references it refuses (side < 64 px, aspect > 8).
    """
    problem = check_reference(w, h)
    if problem:
        raise ValueError(problem)
    steps, (w, h) = _capped(w, h)
    fw, fh = (w // multiple) * multiple, (h // multiple) * multiple
    if (fw, fh) != (w, h):
        left, top = (w - fw) // 2, (h - fh) // 2
        steps.append(("crop", {"box": (left, top, left + fw, top + fh)}))
    steps.append(("rgb", {}))
    return {"size": (fw, fh), "steps": steps}


def inpaint_image_geometry(w: int, h: int, multiple: int = MULTIPLE) -> dict:
    """What Flux2KleinInpaintPipeline does to ``image=`` (and the mask follows it): a resize, never a crop.

    Above 1024² it is resized to ``(int(w·s), int(h·s))`` (Lanczos), then *stretched* (Lanczos) to the
    sizes floored to multiples of 16; that floored size is the output size (``height``/``width``
    arguments are overwritten). No 64 px / aspect check here (that is for references).
    """
    steps, (w, h) = _capped(w, h)  # the inpaint pipeline computes int(raw_h * s), int(raw_w * s) with the same s
    fw, fh = (w // multiple) * multiple, (h // multiple) * multiple
    if (fw, fh) != (w, h):
        steps.append(("resize", {"from": (w, h), "to": (fw, fh), "filter": "lanczos"}))
    steps.append(("rgb", {}))
    return {"size": (fw, fh), "steps": steps}


def output_size(width: int | None, height: int | None, references: list[tuple[int, int]] = (),
                multiple: int = MULTIPLE) -> tuple[int, int]:
    """The (w, h) the text/reference pipelines render.

    Each side independently: the given value, else the first reference's processed side, else 1024; then
    floored to a multiple of 16 (diffusers only logs a warning about it).
    """
    ref = reference_geometry(*references[0], multiple=multiple)["size"] if references else None
    w = width or (ref[0] if ref else DEFAULT_SIZE)
    h = height or (ref[1] if ref else DEFAULT_SIZE)
    return (w // multiple) * multiple, (h // multiple) * multiple


def image_tokens(width: int, height: int, multiple: int = MULTIPLE) -> int:
    return (height // multiple) * (width // multiple)


def empirical_mu(image_seq_len: int, num_steps: int) -> float:
    """diffusers' ``compute_empirical_mu`` (FLUX.2): output tokens only, references not counted."""
    a1, b1 = 8.73809524e-05, 1.89833333
    a2, b2 = 0.00016927, 0.45666666
    if image_seq_len > 4300:
        return float(a2 * image_seq_len + b2)
    m_200 = a2 * image_seq_len + b2
    m_10 = a1 * image_seq_len + b1
    a = (m_200 - m_10) / 190.0
    return float(a * num_steps + (m_200 - 200.0 * a))


def expected_sigmas(width: int, height: int, steps: int, strength: float | None = None) -> list[float]:
    """The sigmas the sampler steps through (the final 0 included), as the scheduler computes them.

    ``sigmas = linspace(1, 1/N, N)``, shifted ``e^mu / (e^mu + 1/σ − 1)`` with ``mu = empirical_mu(tokens, N)``;
    with inpaint ``strength`` the first ``int(N − min(N·strength, N))`` are skipped.
    """

    mu = empirical_mu(image_tokens(width, height), steps)
    base = np.linspace(1.0, 1 / steps, steps).astype(np.float32)  # the scheduler works in float32
    shifted = math.exp(mu) / (math.exp(mu) + (1 / base - 1) ** 1.0)
    sigmas = [float(s) for s in shifted.astype(np.float32)] + [0.0]
    if strength is not None:
        start = int(max(steps - min(steps * strength, steps), 0))
        sigmas = sigmas[start:]
    return sigmas


def used_sigmas(pipe) -> list[float]:
    """The sigmas the last call stepped through (terminal 0 included), read from the pipeline's scheduler."""
    begin = getattr(pipe.scheduler, "begin_index", None) or 0
    return [float(s) for s in pipe.scheduler.sigmas[begin:]]


def count_prompt_tokens(tokenizer, prompt: str, kind: str = "klein") -> int:
    """Tokens the text encoder would see before padding/truncation (the chat template included).

    klein: the Qwen3 template ``<|im_start|>user\\n{p}<|im_end|>\\n<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n``;
    dev: ``<s>[SYSTEM_PROMPT]{diffusers' SYSTEM_MESSAGE}[/SYSTEM_PROMPT][INST]{p}[/INST]`` (``[IMG]`` removed from
    the prompt) - the system message uses part of the 512-token budget. Above ``MAX_SEQUENCE_LENGTH`` the
    pipeline truncates silently.
    """
    if kind == "dev":

        messages = format_input(prompts=[prompt], system_message=SYSTEM_MESSAGE)
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=False, tokenize=True, return_dict=True)
        return len(ids["input_ids"][0])
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True, enable_thinking=False)
    return len(tokenizer(text)["input_ids"])
