"""FLUX.2 family building blocks: tiny models, loading, single files, reference geometry, tokenizers, LoRA.

Everything runs on the built-in tiny FLUX.2 models (CPU, 64x64, 2 steps), offline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from localflux.families.flux2 import facts, loading, single_file, tiny

torch.set_num_threads(1)
KLEIN = ("tiny-flux2", "tiny-flux2-base")


def render(pipe, seed=3, **kwargs):
    kwargs.setdefault("prompt", "a red fox")
    kwargs.setdefault("height", 64)
    kwargs.setdefault("width", 64)
    return pipe(num_inference_steps=2, generator=torch.Generator().manual_seed(seed), output_type="np",
                **kwargs).images


@pytest.fixture(scope="module")
def pipes():
    return {v: tiny.build_tiny_pipeline(v) for v in tiny.VARIANTS}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("flux2")
    return {v: tiny.save_tiny_model(v, root / v) for v in tiny.VARIANTS}


# --- tiny models ------------------------------------------------------------------------------------


def test_tiny_models_identical_across_builds_and_processes_rng_untouched():
    before = torch.get_rng_state()
    prints = {v: tiny.fingerprint(tiny.build_tiny_components(v)) for v in tiny.VARIANTS}
    assert torch.equal(before, torch.get_rng_state())
    assert prints == {v: tiny.fingerprint(tiny.build_tiny_components(v)) for v in tiny.VARIANTS}
    assert len(set(prints.values())) == 3
    # another process (klein base has the same modules as tiny-flux2, built by the same code)
    code = ("import json, torch; torch.set_num_threads(1); from localflux.families.flux2 import tiny; "
            "print(json.dumps({v: tiny.fingerprint(tiny.build_tiny_components(v)) "
            "for v in ('tiny-flux2', 'tiny-flux2-dev')}))")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    other = json.loads(out.stdout.strip().splitlines()[-1])
    assert other == {v: prints[v] for v in other}


def test_tiny_modules_are_frozen_and_in_eval_mode(pipes):
    for pipe in pipes.values():
        for name in ("transformer", "vae", "text_encoder"):
            module = getattr(pipe, name)
            assert not module.training and not any(m.training for m in module.modules())
            assert not any(p.requires_grad for p in module.parameters())


def test_tiny_geometry(pipes):
    klein, dev = pipes["tiny-flux2"], pipes["tiny-flux2-dev"]
    assert type(klein).__name__ == "Flux2KleinPipeline" and type(dev).__name__ == "Flux2Pipeline"
    assert klein.config.is_distilled is True and pipes["tiny-flux2-base"].config.is_distilled is False
    assert klein.transformer.config.guidance_embeds is False and dev.transformer.config.guidance_embeds is True
    assert klein.vae.config.latent_channels == 32 and klein.transformer.config.in_channels == 128
    assert klein.vae_scale_factor == 8
    assert klein.text_encoder.config.num_hidden_layers >= 28 and dev.text_encoder.config.text_config.num_hidden_layers >= 31
    assert not torch.equal(klein.vae.bn.running_var, torch.ones_like(klein.vae.bn.running_var))


@pytest.mark.parametrize("variant", tiny.VARIANTS)
def test_each_variant_renders(pipes, variant):
    image = render(pipes[variant])
    assert image.shape == (1, 64, 64, 3) and np.isfinite(image).all() and image.std() > 0.01
    assert np.array_equal(image, render(pipes[variant]))  # same seed, same pixels


def test_klein_base_runs_cfg_and_dev_uses_guidance(pipes):
    base, dev = pipes["tiny-flux2-base"], pipes["tiny-flux2-dev"]
    assert not np.array_equal(render(base, guidance_scale=4.0), render(base, guidance_scale=1.0))
    assert not np.array_equal(render(dev, guidance_scale=4.0), render(dev, guidance_scale=1.5))
    distilled = pipes["tiny-flux2"]  # guidance is ignored by distilled klein
    assert np.array_equal(render(distilled, guidance_scale=4.0), render(distilled, guidance_scale=1.0))


def test_negative_prompt_embeds_through_encode_prompt(pipes):
    base = pipes["tiny-flux2-base"]
    empty, _ = base.encode_prompt(prompt="", device="cpu", num_images_per_prompt=1, max_sequence_length=512,
                                  text_encoder_out_layers=(9, 18, 27))
    assert np.array_equal(render(base), render(base, negative_prompt_embeds=empty))
    other, _ = base.encode_prompt(prompt="blurry", device="cpu")
    assert not np.array_equal(render(base), render(base, negative_prompt_embeds=other))


# --- loading ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", tiny.VARIANTS)
def test_folder_parity(pipes, folders, variant):
    loaded = loading.load_pipeline(folders[variant], disable_mmap=True)
    assert type(loaded) is type(pipes[variant])
    if variant in KLEIN:
        assert loaded.config.is_distilled == (variant == "tiny-flux2")
    assert np.array_equal(render(loaded), render(pipes[variant]))


def test_inpaint_from_folder_parity(pipes, folders):
    loaded = loading.load_pipeline(folders["tiny-flux2"], task="inpaint", disable_mmap=True)
    in_memory = loading.switch_task(pipes["tiny-flux2"], "inpaint")
    assert type(loaded).__name__ == "Flux2KleinInpaintPipeline" and loaded.config.is_distilled is True
    image, mask = _noise_image(64, 64), _noise_image(64, 64, "L")
    kwargs = dict(image=image, mask_image=mask, height=None, width=None)
    assert np.array_equal(render(loaded, **kwargs), render(in_memory, **kwargs))


def test_distilled_flag_comes_from_model_index_not_the_name(folders, tmp_path):
    import shutil

    misleading = tmp_path / "FLUX.2-klein-4B-distilled"
    shutil.copytree(folders["tiny-flux2-base"], misleading)
    assert loading.is_distilled(misleading) is False
    assert loading.load_pipeline(misleading).config.is_distilled is False


def test_task_switch_keeps_components_and_flag(pipes):
    pipe = pipes["tiny-flux2"]
    inpaint = loading.switch_task(pipe, "inpaint")
    assert type(inpaint).__name__ == "Flux2KleinInpaintPipeline" and inpaint.config.is_distilled is True
    assert inpaint.transformer is pipe.transformer
    assert type(loading.switch_task(inpaint, "text")).__name__ == "Flux2KleinPipeline"
    with pytest.raises(ValueError, match="no inpaint"):
        loading.switch_task(pipes["tiny-flux2-dev"], "inpaint")


@pytest.mark.parametrize("variant,layout", [("tiny-flux2", "bfl"), ("tiny-flux2-dev", "bfl"),
                                            ("tiny-flux2-base", "diffusers")])
def test_single_file_round_trip(pipes, folders, tmp_path, variant, layout):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in pipes[variant].transformer.state_dict().items()}
    if layout == "bfl":
        state = single_file.diffusers_to_bfl(state)
        assert "double_blocks.0.img_attn.qkv.weight" in state
    path = tmp_path / "transformer.safetensors"
    save_file(state, str(path))
    plan = loading.single_file_plan(path, folders[variant])
    assert plan["kind"] == ("dev" if variant == "tiny-flux2-dev" else "klein") and plan["overrides"] == {}
    loaded = loading.load_single_file_pipeline(path, folders[variant], disable_mmap=True)
    assert np.array_equal(render(loaded), render(pipes[variant]))


def test_single_file_refuses_other_kinds(pipes, folders, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "dev.safetensors"
    save_file({k: v.contiguous() for k, v in pipes["tiny-flux2-dev"].transformer.state_dict().items()}, str(path))
    with pytest.raises(ValueError, match="dev transformer but the base folder is FLUX.2 klein"):
        loading.single_file_plan(path, folders["tiny-flux2"])


@pytest.mark.parametrize("name", single_file.CONFIG_FOLDERS)
def test_full_size_shapes_pick_their_config(name):
    from accelerate import init_empty_weights
    from diffusers import Flux2Transformer2DModel

    with loading.resources.as_file(loading.config_root()) as root:
        config = json.loads((root / name / "transformer" / "config.json").read_text())
        with init_empty_weights():
            model = Flux2Transformer2DModel.from_config(config)
        state = model.state_dict()
        for layout in ("diffusers", "bfl"):
            shapes = {k: tuple(v.shape) for k, v in
                      (single_file.diffusers_to_bfl(state) if layout == "bfl" else state).items()}
            assert single_file.layout_of(shapes) == layout
            assert single_file.pick_config(single_file.infer_config(shapes), root) == (name, {})


# --- reference geometry, output size, sigmas --------------------------------------------------------

SIZES = [(64, 64), (100, 70), (1023, 1025), (1500, 1000), (2048, 2048), (800, 101), (4001, 600), (1024, 1024),
         (1025, 1024)]


def _noise_image(w, h, mode="RGB"):
    from PIL import Image

    rng = np.random.default_rng(w * 10007 + h)
    channels = len(mode)
    return Image.fromarray(rng.integers(0, 256, (h, w, channels), dtype=np.uint8).squeeze(), mode)


@pytest.mark.parametrize("w,h", SIZES)
def test_reference_geometry_matches_diffusers(pipes, w, h):
    from PIL import Image

    pipe = pipes["tiny-flux2"]
    image = _noise_image(w, h, "RGBA")
    # what Flux2KleinPipeline.__call__ does to each reference (step 4 of its source)
    pipe.image_processor.check_image_input(image)
    img, iw, ih = image, w, h
    if iw * ih > 1024 * 1024:
        img = pipe.image_processor._resize_to_target_area(img, 1024 * 1024)
        iw, ih = img.size
    theirs = pipe.image_processor.preprocess(img, height=(ih // 16) * 16, width=(iw // 16) * 16, resize_mode="crop")

    geometry = facts.reference_geometry(w, h)
    ours = image
    for step, args in geometry["steps"]:
        if step == "resize":
            ours = ours.resize(args["to"], Image.Resampling.LANCZOS)
        elif step == "crop":
            ours = ours.crop(args["box"])
        elif step == "rgb":
            ours = ours.convert("RGB")
    assert ours.size == geometry["size"] and tuple(theirs.shape[-2:]) == geometry["size"][::-1]
    expected = pipe.image_processor.normalize(pipe.image_processor.pil_to_numpy(ours))
    assert torch.equal(theirs, torch.from_numpy(expected).permute(0, 3, 1, 2))


@pytest.mark.parametrize("w,h", [(63, 100), (100, 63), (900, 100)])
def test_reference_geometry_refuses_what_diffusers_refuses(pipes, w, h):
    with pytest.raises(ValueError) as diffusers_error:
        pipes["tiny-flux2"].image_processor.check_image_input(_noise_image(w, h))
    with pytest.raises(ValueError) as ours:
        facts.reference_geometry(w, h)
    assert str(ours.value) == str(diffusers_error.value)


def test_references_in_the_pipeline_and_output_size(pipes):
    pipe = pipes["tiny-flux2"]
    seen = []
    original = pipe.prepare_image_latents

    def spy(images, **kwargs):
        seen.extend(tuple(i.shape[-2:][::-1]) for i in images)
        return original(images=images, **kwargs)

    refs = [(150, 90), (100, 70)]
    pipe.prepare_image_latents = spy
    try:
        image = render(pipe, image=[_noise_image(*s) for s in refs], height=None, width=None)
        image_w = render(pipe, image=[_noise_image(*s) for s in refs], height=None, width=70)
    finally:
        del pipe.prepare_image_latents
    assert seen[:2] == [facts.reference_geometry(*s)["size"] for s in refs]
    assert image.shape[1:3] == facts.output_size(None, None, refs)[::-1] == (80, 144)
    assert image_w.shape[1:3] == facts.output_size(70, None, refs)[::-1] == (80, 64)
    assert facts.output_size(None, None) == (1024, 1024)


def test_inpaint_geometry_and_sigmas(pipes):
    inpaint = loading.switch_task(pipes["tiny-flux2"], "inpaint")
    image, mask = _noise_image(100, 70), _noise_image(100, 70, "L")
    out = inpaint(prompt="fox", image=image, mask_image=mask, height=256, width=256, strength=0.6,
                  num_inference_steps=4, generator=torch.Generator().manual_seed(1), output_type="np").images
    assert out.shape[1:3] == facts.inpaint_image_geometry(100, 70)["size"][::-1] == (64, 96)
    assert facts.used_sigmas(inpaint) == pytest.approx(facts.expected_sigmas(96, 64, 4, strength=0.6), abs=1e-7)
    assert len(facts.used_sigmas(inpaint)) == 3 + 1  # int(4 - 2.4) = 1 step skipped


def test_sigmas_after_a_call(pipes):
    pipe = pipes["tiny-flux2"]
    render(pipe, height=64, width=80)
    assert facts.used_sigmas(pipe) == pytest.approx(facts.expected_sigmas(80, 64, 2), abs=1e-7)
    assert facts.expected_sigmas(1024, 1024, 4)[0] == 1.0 and facts.expected_sigmas(1024, 1024, 4)[-1] == 0.0


# --- tokenizers -------------------------------------------------------------------------------------


def test_qwen_chat_template_and_specials(pipes):
    tok = pipes["tiny-flux2"].tokenizer
    text = tok.apply_chat_template([{"role": "user", "content": "a fox"}], tokenize=False,
                                   add_generation_prompt=True, enable_thinking=False)
    assert text == "<|im_start|>user\na fox<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    pieces = tok.convert_ids_to_tokens(tok(text)["input_ids"])
    for special in tiny.QWEN_SPECIALS[1:]:
        assert special in pieces  # one token each, not split into characters
    assert pieces[0] == "<|im_start|>" and tok.pad_token == "<|endoftext|>" and tok.bos_token is None
    padded = tok(text, padding="max_length", max_length=40)["input_ids"]
    assert padded[-1] == tok.pad_token_id and len(padded) == 40
    assert facts.count_prompt_tokens(tok, "a fox") == len(pieces)


def test_mistral_chat_template_list_content_and_reload(pipes, folders):
    from transformers import AutoTokenizer

    tok = pipes["tiny-flux2-dev"].tokenizer
    messages = [{"role": "system", "content": [{"type": "text", "text": "SYS"}]},
                {"role": "user", "content": [{"type": "text", "text": "a fox"}]}]
    assert tok.apply_chat_template(messages, tokenize=False) == "<s>[SYSTEM_PROMPT]SYS[/SYSTEM_PROMPT][INST]a fox[/INST]"
    ids = tok.apply_chat_template([messages], add_generation_prompt=False, tokenize=True, return_dict=True,
                                  padding="max_length", truncation=True, max_length=16)["input_ids"][0]
    pieces = tok.convert_ids_to_tokens(ids)
    assert pieces[:2] == ["<s>", "[SYSTEM_PROMPT]"] and pieces.count("<s>") == 1 and pieces[-1] == "<pad>"
    assert tok("a fox")["input_ids"][0] == tok.bos_token_id  # plain text gets <s> from the post-processor
    reloaded = AutoTokenizer.from_pretrained(folders["tiny-flux2-dev"] / "tokenizer")
    assert reloaded.apply_chat_template([messages], tokenize=True, return_dict=True)["input_ids"] == \
        tok.apply_chat_template([messages], tokenize=True, return_dict=True)["input_ids"]
    assert facts.count_prompt_tokens(tok, "a fox", "dev") > 100  # diffusers' system message is long


# --- LoRA -------------------------------------------------------------------------------------------


def test_lora_saved_with_metadata_loads_at_its_alpha(tmp_path):
    from diffusers import Flux2KleinPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    trained = tiny.build_tiny_pipeline("tiny-flux2")
    plain = render(trained)
    config = LoraConfig(r=2, lora_alpha=8, init_lora_weights=False,
                        target_modules=["to_q", "to_k", "to_v", "to_out.0", "to_qkv_mlp_proj"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        trained.transformer.add_adapter(config)
    with_lora = render(trained)
    assert not np.array_equal(plain, with_lora)
    Flux2KleinPipeline.save_lora_weights(
        tmp_path / "lora", transformer_lora_layers=get_peft_model_state_dict(trained.transformer),
        transformer_lora_adapter_metadata=trained.transformer.peft_config["default"].to_dict())
    Flux2KleinPipeline.save_lora_weights(
        tmp_path / "no-meta", transformer_lora_layers=get_peft_model_state_dict(trained.transformer))

    fresh = tiny.build_tiny_pipeline("tiny-flux2")
    fresh.load_lora_weights(tmp_path / "lora", adapter_name="subject")
    assert np.abs(render(fresh) - with_lora).max() < 1e-5
    fresh.set_adapters(["subject"], [0.0])
    assert np.abs(render(fresh) - plain).max() < 1e-5
    fresh.unload_lora_weights()
    fresh.load_lora_weights(tmp_path / "no-meta")  # without metadata diffusers uses alpha = r: another image
    assert np.abs(render(fresh) - with_lora).max() > 1e-3
