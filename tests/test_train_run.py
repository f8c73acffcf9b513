"""A tiny subject LoRA end to end: it learns, it loads, previews are real renders, checkpoints and scale-out.

Numbers stated by these tests (CPU, tiny models, seed 1):
- 150 steps at lr 1e-2 lower the mean training loss of the last 10 steps to <= 85% of the first 10,
  and a fixed-noise evaluation loss on the subject (trigger caption) to <= 85% of the base model's;
- 4-step renders of "photo of zqx" move toward the subject's latents (rms distance to the nearest
  subject latent <= 80% of the base render's), while prompts without the trigger keep >= 0.1 more
  of their distance (they move measurably less).
"""

import json
import math

import numpy as np
import pytest
import torch

from localflux.train.config import load_train_config
from localflux.train.trainer import flow_loss, train

from _train_helpers import TRIGGER, listening_tiny, lora_tensors, write_config  # noqa: F401 (fixture)

PROMPT = f"photo of {TRIGGER}"
CONTROLS = ["photo of a mountain lake", "a red car"]
SEEDS = [1, 2, 3, 4]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, listening_tiny):
    tmp = tmp_path_factory.mktemp("subject")
    config = load_train_config(write_config(tmp, source=str(listening_tiny), steps=150, every=50, out="run"),
                               sets=["samples.every=75"])
    return config, train(config, progress=False)


def _subject_latents(pipe, folder):
    from localflux.train.dataset import pixels_for_bucket

    vae = pipe.vae
    with torch.no_grad():
        return torch.cat([(vae.encode(pixels_for_bucket(f, (64, 64))[None]).latent_dist.mean - vae.config.shift_factor)
                          * vae.config.scaling_factor for f in sorted(folder.glob("*.png"))])


def _render_latent(pipe, prompt, seed):
    with torch.no_grad():
        packed = pipe(prompt=prompt, prompt_2=prompt, height=64, width=64, num_inference_steps=4, guidance_scale=0.0,
                      generator=[torch.Generator("cpu").manual_seed(seed)], max_sequence_length=256,
                      output_type="latent").images
    return pipe._unpack_latents(packed, 64, 64, pipe.vae_scale_factor)


def _eval_loss(pipe, latents, prompt):
    generator = torch.Generator("cpu").manual_seed(0)
    n = 4 * len(latents)
    noise = torch.randn((n,) + tuple(latents.shape[1:]), generator=generator)
    sigmas = torch.rand(n, generator=generator)
    t5, pooled, _ = pipe.encode_prompt(prompt, prompt, max_sequence_length=256)
    with torch.no_grad():
        return float(flow_loss(pipe.transformer, latents=latents.repeat(4, 1, 1, 1), noise=noise, sigmas=sigmas,
                               text={"t5": t5.repeat(n, 1, 1), "pooled": pooled.repeat(n, 1)}, weights=torch.ones(n),
                               device="cpu", dtype=torch.float32, guidance=None))


def test_subject_is_learned_for_the_trigger_only(trained, listening_tiny):
    from diffusers import FluxPipeline

    config, result = trained
    losses = result.losses
    assert len(losses) == 150 and all(math.isfinite(x) for x in losses)
    assert np.mean(losses[-10:]) <= 0.85 * np.mean(losses[:10]), (np.mean(losses[:10]), np.mean(losses[-10:]))

    pipe = FluxPipeline.from_pretrained(listening_tiny)
    subject = _subject_latents(pipe, result.run_dir.parent / "data")

    def distance(latent):
        return min(float((latent - s).pow(2).mean().sqrt()) for s in subject)

    prompts = [PROMPT] + CONTROLS
    before = {p: np.mean([distance(_render_latent(pipe, p, s)) for s in SEEDS]) for p in prompts}
    eval_before = _eval_loss(pipe, subject, PROMPT)
    pipe.load_lora_weights(str(result.lora_path))
    after = {p: np.mean([distance(_render_latent(pipe, p, s)) for s in SEEDS]) for p in prompts}
    eval_after = _eval_loss(pipe, subject, PROMPT)

    ratio = {p: after[p] / before[p] for p in prompts}
    print(f"loss first10 {np.mean(losses[:10]):.3f} last10 {np.mean(losses[-10:]):.3f}; eval {eval_before:.3f} -> "
          f"{eval_after:.3f}; distance ratios {ratio}")
    assert eval_after <= 0.85 * eval_before, (eval_before, eval_after)
    assert ratio[PROMPT] <= 0.80, ratio
    for control in CONTROLS:
        assert ratio[control] >= ratio[PROMPT] + 0.10, ratio


def test_lora_file_layout_and_metadata(trained):
    from localflux.train.export import read_metadata

    config, result = trained
    tensors = lora_tensors(result.lora_path)
    assert tensors and all(k.startswith("transformer.") and (".lora_A." in k or ".lora_B." in k) for k in tensors)
    assert {t.dtype for t in tensors.values()} == {torch.bfloat16}
    meta = read_metadata(result.lora_path)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
    adapter = json.loads(meta["lora_adapter_metadata"])
    assert adapter["transformer.r"] == 8 and adapter["transformer.lora_alpha"] == 8
    assert json.loads(meta["localflux.training_config"]) == config.to_dict()
    assert meta["localflux.trigger"] == TRIGGER and meta["localflux.steps"] == "150"
    assert meta["localflux.dataset_sha256"] == result.dataset_sha256
    assert meta["localflux.base_model_sha256"] == result.base_model_sha256 and len(result.base_model_sha256) == 64


def test_load_lora_weights_renders_like_merging_by_hand(trained, listening_tiny):
    """diffusers' loader applies exactly W + alpha/r * B A (fused by hand here) to the right layers."""
    from diffusers import FluxPipeline

    from localflux.families.registry import FAMILIES
    from localflux.render import RenderRequest, render

    _, result = trained
    request = RenderRequest({"clip": PROMPT, "t5": PROMPT}, None, 64, 64, 4, 0.0, 1.0, 256, False)
    loaded = FluxPipeline.from_pretrained(listening_tiny)
    loaded.load_lora_weights(str(result.lora_path))
    by_loader = np.asarray(render(loaded, FAMILIES.by_name("flux1"), request, [7], progress=False)[0][0], dtype=np.int16)

    manual = FluxPipeline.from_pretrained(listening_tiny)
    base = np.asarray(render(manual, FAMILIES.by_name("flux1"), request, [7], progress=False)[0][0], dtype=np.int16)
    tensors = lora_tensors(result.lora_path)
    modules = dict(manual.transformer.named_modules())
    with torch.no_grad():
        for key in [k for k in tensors if ".lora_A." in k]:
            name = key[len("transformer."):].split(".lora_A.")[0]
            down, up = tensors[key].float(), tensors[key.replace(".lora_A.", ".lora_B.")].float()
            modules[name].weight += (8 / 8) * up @ down
    by_hand = np.asarray(render(manual, FAMILIES.by_name("flux1"), request, [7], progress=False)[0][0], dtype=np.int16)
    assert np.abs(by_loader - by_hand).max() <= 1  # fused vs unfused float order
    assert np.abs(by_loader - base).mean() > 5  # and the LoRA does change the image


def test_previews_are_what_a_user_renders(trained, listening_tiny):
    """The last preview equals a fresh render of its prompt with the finished file loaded by diffusers."""
    from diffusers import FluxPipeline

    from localflux import pipeline
    from localflux.loader import LoadedModel, describe_source
    from localflux.device import Placement
    from localflux.recipe import read_recipe
    from localflux.train.previews import render_config

    config, result = trained
    samples = result.run_dir / "samples"
    assert sorted(p.name for p in samples.iterdir() if p.is_dir()) == ["step-000000", "step-000075", "step-000150"]
    preview = samples / "step-000150" / "p01-s42.png"
    recipe = read_recipe(preview)
    assert recipe["extensions"]["training_preview"]["step"] == 150 and recipe["config"]["sampling"]["steps"] == 4

    pipe = FluxPipeline.from_pretrained(listening_tiny)
    pipe.load_lora_weights(str(result.lora_path))
    model = LoadedModel(pipe, describe_source(str(listening_tiny)), Placement("cpu", "float32"), "schnell", "none")
    plan = pipeline.plan(render_config(config, config.samples.prompts[0], 42))
    (fresh,) = pipeline.render_batch(plan, model, [42], warnings=[], progress=False)
    from conftest import pixels

    assert np.array_equal(pixels(preview), pixels(fresh.image))
    sheet = samples / "contact-sheet.png"
    from PIL import Image

    with Image.open(sheet) as image:
        assert image.height == 3 * 64  # one row per preview step


def test_checkpoints_keep_the_last_k(trained):
    from localflux.train.checkpoint import complete_checkpoints

    _, result = trained
    assert [p.name for p in complete_checkpoints(result.run_dir)] == ["step-000100", "step-000150"]
    assert not [p for p in (result.run_dir / "checkpoints").iterdir() if p.name.startswith(".")]


def test_rerun_reads_the_cache(trained):
    config, result = trained
    assert result.cache_computed == 6  # 4 latents + the caption + the empty caption
    again = load_train_config(write_config(result.run_dir.parent, source=config.model.source, steps=1, every=5,
                                           out="run2", name="again.toml"),
                              sets=[f'memory.cache_dir="{result.run_dir / "cache"}"'])
    assert train(again, progress=False).cache_computed == 0


def test_trained_lora_renders_the_same_through_localflux_and_diffusers(trained, listening_tiny, run_cli, tmp_path):
    from diffusers import FluxPipeline

    from localflux import generate
    from conftest import pixels

    _, result = trained
    config = {"model": {"source": str(listening_tiny)}, "prompt": {"subject": PROMPT},
              "size": {"width": 64, "height": 64}, "sampling": {"seed": 3, "steps": 4},
              "lora": [{"path": str(result.lora_path), "scale": 1.0}]}
    ours = generate(config, save=False, progress=False)[0]
    assert ours.recipe["loras"][0]["sha256"] and ours.recipe["loras"][0]["format"].startswith("diffusers")
    pipe = FluxPipeline.from_pretrained(listening_tiny)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(result.lora_path))
    theirs = pipe(PROMPT, width=64, height=64, num_inference_steps=4, guidance_scale=0.0, max_sequence_length=256,
                  generator=torch.Generator("cpu").manual_seed(3)).images[0]
    assert np.abs(pixels(ours.image) - pixels(theirs)).max() <= 1
    base = generate({**config, "lora": []}, save=False, progress=False)[0]
    assert np.abs(pixels(base.image) - pixels(ours.image)).max() > 1  # the LoRA acted

    code, out, err = run_cli("lora", "inspect", result.lora_path)
    assert code == 0, err
    assert TRIGGER in out and "150" in out  # trigger word and step count from the training metadata
