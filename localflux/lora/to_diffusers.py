"""A LoRA file's tensors in diffusers/PEFT keys: what the render stage loads and ``lora convert`` writes.

``convert`` runs diffusers' own converter (kohya, ComfyUI, XLabs, ...) on the layouts it gets right and
``layouts.py`` on the rest, adds the ``transformer.`` prefix diffusers 0.42 forgets on non-block layers,
and folds every strength into ``lora_A`` (``.alpha`` tensors in ``layouts.prepare``, the PEFT config of
diffusers-saved files here), so the result carries no alphas and no metadata and diffusers' loader
applies it at exactly the strength the file means. T5 parts are left out (diffusers cannot load them;
``verify`` counts them as not applied).

``trace_sources`` says which of the file's own tensors each converted tensor was made from, so
``verify.count_applied`` can report coverage in the file's terms.
"""

from __future__ import annotations

import logging

import torch
from diffusers import FluxPipeline

from ..errors import LoraError, first_line
from . import layouts
from .files import LoraFile, is_alpha_key, module_of, peft_metadata
from .kohya import peft_alphas
from .layouts import fold_strength

log = logging.getLogger(__name__)

COMPONENTS = ("transformer", "text_encoder")  # the pipeline parts diffusers loads LoRA tensors into


def convert(lora: LoraFile, tensors: dict | None = None, *, fold_metadata: bool = True, family=None) -> dict:
    """The LoRA in diffusers/PEFT keys (``component.module.lora_A/B.weight``), every alpha folded into lora_A.

    diffusers' own converter does the layouts it gets right; ``layouts`` does the rest (see there). The
    result carries no alphas and no metadata, so diffusers' loader applies it at exactly the strength the
    file means. T5 parts are left out (diffusers cannot load them; they count as not applied).
    ``family`` (the model's, ``families/``) may bring its own converter (FLUX.2: ``Family.lora_to_diffusers``).
    """
    own_family = family.lora_to_diffusers(lora, tensors if tensors is not None else lora.tensors) if family else None
    if own_family is not None:  # the family's converter, then the metadata strength as below
        config = peft_metadata(lora.metadata) if fold_metadata else None
        return fold_metadata_alphas(own_family, config) if config else own_family
    tensors = layouts.prepare(tensors if tensors is not None else lora.tensors)
    own, _t5, rest = layouts.split_own(tensors)  # T5 tensors stay out: nothing could load them
    state = {}
    # alphas diffusers still returns have no weights of their own (prepare() folded the rest): they count
    # as not applied. Keys already in diffusers names go through separately when kohya keys sit beside them
    # (a mixture file): diffusers' kohya converter keeps only the "transformer." keys of such a dict.
    for part in _by_naming(rest):
        converted = _diffusers_convert(lora, part)
        twice = converted.keys() & state.keys()
        if twice:  # the same layer under both namings: keep the diffusers-named copy, as diffusers does
            log.warning("LoRA %s holds %d tensors twice (diffusers and kohya names); the diffusers-named ones are used",
                        lora.path, len(twice))
        state.update({k: v for k, v in converted.items() if k not in twice})
    try:
        state.update(layouts.convert_own(own))
    except LoraError as exc:
        raise LoraError(f"LoRA {str(lora.path)!r} does not fit this model: {exc}") from None
    # diffusers 0.42's kohya converter names the non-block layers (img_in, txt_in, time_in, vector_in,
    # guidance_in, final_layer) without the "transformer." prefix, and load_lora_weights drops such keys
    state = {(k if k.partition(".")[0] in COMPONENTS else "transformer." + k): v for k, v in state.items()}
    config = peft_metadata(lora.metadata) if fold_metadata else None
    if config:
        state = fold_metadata_alphas(state, config)
    return state


def _by_naming(tensors: dict) -> list[dict]:
    """``tensors`` as one dict, or two when diffusers-named keys sit beside kohya/BFL ones."""
    named = {k: v for k, v in tensors.items() if k.partition(".")[0] in COMPONENTS}
    others = {k: v for k, v in tensors.items() if k not in named}
    if named and others:
        return [named, others]
    return [tensors] if tensors else []


def _diffusers_convert(lora: LoraFile, tensors: dict):
    try:
        state, _alphas = FluxPipeline.lora_state_dict(dict(tensors), return_alphas=True)
    except AssertionError:
        # diffusers' converters assert FLUX.1's real layer sizes in a few places
        raise LoraError(f"LoRA {str(lora.path)!r} does not fit this model: its layer sizes are not FLUX.1's; "
                        "it was made for another base model") from None
    except (ValueError, KeyError, NotImplementedError, IndexError, RuntimeError) as exc:
        raise LoraError(f"LoRA {str(lora.path)!r} is not a FLUX.1 LoRA diffusers can read "
                        f"({first_line(exc)}); it is for another model") from None
    return state


def fold_metadata_alphas(state: dict, config: dict) -> dict:
    """Fold the PEFT config's strength (lora_alpha / r, alpha and rank patterns, rsLoRA) into lora_A, as diffusers reads it."""
    alphas = peft_alphas(state, None, config)
    out = dict(state)
    for module, alpha in alphas.items():
        fold_strength(out, module, alpha / state[f"{module}.lora_A.weight"].shape[0])
    return out


def trace_sources(lora: LoraFile, family=None) -> dict[str, frozenset[str]]:
    """For each converted key, the keys of the file whose values it was made from.

    Runs diffusers' converter on a stand-in: tensor *i* is filled with the number *i* (float32, exact up
    to 2**24) and every alpha is set to its rank, so alpha/rank = 1 and splits, copies and reorders keep
    the numbers. The converter's choices (which keys it keeps, splits or drops) are the real ones.
    """
    stand_in, names = _numbered_stand_in(lora)
    converted = convert(lora, stand_in, fold_metadata=False, family=family)
    trace = {}
    for key, value in converted.items():
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            continue
        ids = torch.unique(value.float()).tolist()
        trace[key] = frozenset(names[int(i)] for i in ids if float(i).is_integer() and int(i) in names)
    return trace


def _numbered_stand_in(lora: LoraFile) -> tuple[dict, dict[int, str]]:
    """The file's tensors with tensor *i* filled with *i* and every alpha set to its rank; and *i* -> key."""
    ranks = {module_of(k): v.shape[0] for k, v in lora.tensors.items()
             if k.endswith((".lora_down.weight", ".lora_A.weight", ".down.weight")) and v.ndim >= 1}
    stand_in, names = {}, {}
    for index, (key, value) in enumerate(lora.tensors.items(), start=1):
        if is_alpha_key(key):
            stand_in[key] = torch.tensor(float(ranks.get(module_of(key), value.float().item())))
        elif value.is_floating_point():
            stand_in[key] = torch.full(tuple(value.shape), float(index), dtype=torch.float32)
            names[index] = key
        else:
            stand_in[key] = value
    return stand_in, names

