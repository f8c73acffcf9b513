"""Make the frozen release-0.1 replay fixtures: run ONCE, with release 0.1's code (commit cfdc357).

The next release changes the recipe format (schema 1 -> 2) and restructures the code; every PNG
that release 0.1 wrote must still replay pixel-identically with ``localflux replay IMAGE --verify``.
This script renders one PNG for every kind of recipe release 0.1 writes (built-in tiny models,
prompt templates, true CFG, batched passes, diffusers folders, single files in both key layouts,
GGUF, LoRAs fused and unfused, the chained and the standalone upscaler, sweep cells, batch items,
memory plans, VAE tiling, size snapping), through the CLI as a user would, and freezes them in
``tests/data/release-0.1/`` with a ``manifest.json`` saying what each one exercises and how it was
made. ``tests/test_release_replay.py`` replays them against whatever code is checked out.

The model, LoRA and upscaler files those recipes name live under ``/tmp/localflux-release-0.1/``
(recipes record absolute paths); ``tests/release_assets.py`` builds them byte-identically, here and
in the test, and the manifest records each file's sha256.

Usage, from the repository root, on a checkout whose ``localflux/`` is commit cfdc357's::

    python scripts/make_release_fixtures.py            # refuses if tests/data/release-0.1/ exists
    python scripts/make_release_fixtures.py --force    # replaces it (only ever with release 0.1 code)

Do not rerun it with later code: the point of these files is that they were made by release 0.1.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import release_assets as assets  # noqa: E402

RELEASE, COMMIT = "0.1.0", "cfdc357"
OUT = REPO / "tests" / "data" / "release-0.1"
R = str(assets.ROOT)
FOLDER = f"{R}/models/tiny-dev"
SINGLE = f"{R}/models/tiny-dev-transformer.safetensors"
SINGLE_BFL = f"{R}/models/tiny-dev-transformer-bfl.safetensors"
GGUF = f"{R}/models/tiny-dev-Q8_0.gguf"
LORA_PEFT = f"{R}/loras/subject-peft.safetensors"
LORA_KOHYA = f"{R}/loras/film-kohya.safetensors"
UPSCALER = f"{R}/upscalers/{assets.UPSCALER_NAME}.safetensors"

CPU = ["--device", "cpu", "--no-progress"]


def gen(*args: str) -> list[str]:
    return ["generate", *args, *CPU]


# Each case: name -> what it covers, the CLI arguments, which output file to keep (a glob in the
# case's output folder), and optional files (config / job TOML) written next to the run first.
# Cases run in order; "{out:NAME}" in arguments is the kept PNG of an earlier case.
CASES: list[dict] = [
    dict(name="tiny-schnell",
         covers="built-in tiny (schnell preset: 4 steps, static schedule, 256 T5 tokens); plain text prompt",
         args=gen("--model", "tiny", "--prompt", "a red fox in fresh snow", "--width", "64", "--height", "64",
                  "--seed", "1", "--out", "out"),
         keep="out/0001-s1.png"),
    dict(name="tiny-dev-template",
         covers="built-in tiny-dev (dev preset, resolution-shifted schedule) from a config file: distilled guidance, "
                "steps, prompt template parts (subject, styling list with a library phrase and a literal, lens, "
                "lighting, composition, background, quality) joined and expanded; the joined text is longer than CLIP's 77 "
                "and the 128 T5 tokens asked for, so two truncation warnings are recorded",
         files={"template.toml": """\
[model]
source = "tiny-dev"
device = "cpu"

[sampling]
steps = 3
guidance = 4.5
seed = 7
max_sequence_length = 128

[size]
width = 48
height = 64

[prompt]
subject = "portrait of a 70-year-old fisherman"
styling = ["portra-400", "wool sweater"]
lens = "85mm"
lighting = "rembrandt"
composition = "headshot"
background = "studio-grey"
quality = "photo"

[output]
dir = "out"
"""},
         args=["generate", "--config", "template.toml", "--no-progress"],
         keep="out/0001-s7.png"),
    dict(name="tiny-dev-true-cfg",
         covers="true classifier-free guidance: true_cfg 2.5 > 1 with a negative prompt (decisions.true_cfg_active), "
                "tiny-dev with guidance 2.0",
         args=gen("--model", "tiny-dev", "--prompt", "a lighthouse at dusk", "--negative-prompt", "blurry, low quality",
                  "--true-cfg", "2.5", "--guidance", "2.0", "--steps", "3", "--width", "64", "--height", "48",
                  "--seed", "3", "--out", "out"),
         keep="out/0001-s3.png"),
    dict(name="batched-second-of-pass",
         covers="--count 3 --batch-size 2: seed 11, the 2nd image of a 2-seed forward pass "
                "(decisions.batch_seeds = [10, 11]; replay renders the whole pass)",
         args=gen("--model", "tiny", "--prompt", "three red apples", "--seed", "10", "--count", "3",
                  "--batch-size", "2", "--steps", "2", "--width", "48", "--height", "48", "--out", "out"),
         keep="out/0002-s11.png"),
    dict(name="batched-tail",
         covers="the same run's 3rd image: a 1-seed pass left over by batch_size 2 (batch_seeds = [12], index 2)",
         args=None, reuse="batched-second-of-pass", keep="out/0003-s12.png"),
    dict(name="folder-dev",
         covers="a local diffusers folder as model.source (tiny-dev saved with save_pretrained; the model's own "
                "scheduler_config.json; sha256 of every component file in the recipe)",
         args=gen("--model", FOLDER, "--prompt", "a red fox", "--steps", "3", "--max-sequence-length", "64",
                  "--width", "64", "--height", "64", "--seed", "4", "--out", "out"),
         keep="out/0001-s4.png"),
    dict(name="single-file",
         covers="a single-file transformer (.safetensors, diffusers keys) with --base the diffusers folder",
         args=gen("--model", SINGLE, "--base", FOLDER, "--prompt", "a red fox", "--steps", "3",
                  "--width", "64", "--height", "64", "--seed", "4", "--out", "out"),
         keep="out/0001-s4.png"),
    dict(name="single-file-bfl",
         covers="a single-file transformer in BFL/ComfyUI keys (model.diffusion_model., fused qkv) at a "
                "non-FLUX width, shape read from the file, --base the diffusers folder",
         args=gen("--model", SINGLE_BFL, "--base", FOLDER, "--prompt", "a lighthouse", "--steps", "2",
                  "--width", "48", "--height", "48", "--seed", "5", "--out", "out"),
         keep="out/0001-s5.png"),
    dict(name="gguf-q8",
         covers="a GGUF Q8_0 transformer with --base the folder (decisions.memory.transformer = gguf:Q8_0)",
         args=gen("--model", GGUF, "--base", FOLDER, "--prompt", "a lighthouse", "--steps", "2",
                  "--width", "48", "--height", "48", "--seed", "6", "--out", "out"),
         keep="out/0001-s6.png"),
    dict(name="lora-unfused",
         covers="one LoRA (diffusers/PEFT layout, alpha in PEFT metadata) at scale 0.8, kept as an unfused adapter "
                "(--lora-fuse unfused) on tiny-dev",
         args=gen("--model", "tiny-dev", "--prompt", "photo of anna_zx", "--lora", f"{LORA_PEFT}:0.8",
                  "--lora-fuse", "unfused", "--steps", "3", "--width", "64", "--height", "64", "--seed", "8",
                  "--out", "out"),
         keep="out/0001-s8.png"),
    dict(name="loras-fused",
         covers="two LoRAs from a config ([[lora]] PEFT x0.7 and kohya/fluxgym x-0.5 with name), "
                "[lora_options] fuse = \"fused\", on the built-in tiny",
         files={"loras.toml": f"""\
[model]
source = "tiny"
device = "cpu"

[sampling]
steps = 2
seed = 9

[size]
width = 64
height = 48

[prompt]
subject = "photo of anna_zx, ohwx film"

[[lora]]
path = "{LORA_PEFT}"
scale = 0.7

[[lora]]
path = "{LORA_KOHYA}"
scale = -0.5
name = "film"

[lora_options]
fuse = "fused"

[output]
dir = "out"
"""},
         args=["generate", "--config", "loras.toml", "--no-progress"],
         keep="out/0001-s9.png"),
    dict(name="upscale-chained",
         covers="[upscale] enabled: the saved PNG is the Real-ESRGAN x2 result (realesr-animevideov3 by path, "
                "automatic tile) of a 48x32 render; upscale_steps has the chained step",
         files={"upscale.toml": f"""\
[model]
source = "tiny"
device = "cpu"

[sampling]
steps = 2
seed = 12

[size]
width = 48
height = 32

[prompt]
subject = "a red fox in fresh snow"

[upscale]
enabled = true
model = "{UPSCALER}"
scale = 2.0
keep_original = true

[output]
dir = "out"
"""},
         args=["generate", "--config", "upscale.toml", "--no-progress"],
         keep="out/0001-s12.png"),
    dict(name="upscale-chained-base",
         covers="the same run's keep_original = true image (-base.png): the render before the upscale, "
                "its recipe without upscale steps but with [upscale] enabled in its config",
         args=None, reuse="upscale-chained", keep="out/0001-s12-base.png"),
    dict(name="size-snapped",
         covers="a size snapped to multiples of 16 (asked 100x60, rendered 96x64; size.requested kept)",
         args=gen("--model", "tiny", "--prompt", "a lighthouse at dusk", "--width", "100", "--height", "60",
                  "--steps", "2", "--seed", "13", "--out", "out"),
         keep="out/0001-s13.png"),
    dict(name="upscale-standalone-odd",
         covers="`localflux upscale` of the size-snapped render at scale 1.3 with --tile 32 (several tiles, "
                "overlap 32, network x4 then Lanczos to an odd 125x83); the recipe gains an upscale step",
         args=["upscale", "{out:size-snapped}", "--model", UPSCALER, "--scale", "1.3", "--tile", "32",
               "--device", "cpu", "--no-progress", "--out", "out"],
         keep="out/size-snapped-x1.3.png"),
    dict(name="upscale-twice",
         covers="`localflux upscale` (x1.5, alpha resize recorded) of the chained-upscale PNG: two upscale steps, "
                "replayed in order",
         args=["upscale", "{out:upscale-chained}", "--model", UPSCALER, "--scale", "1.5", "--alpha", "resize",
               "--device", "cpu", "--no-progress", "--out", "out"],
         keep="out/upscale-chained-x1.5.png"),
    dict(name="sweep-r1-c2",
         covers="a `localflux sweep` cell: seeds 1-2 x sampling.guidance=2.5,4.5 on tiny-dev; row 1 (seed 1), "
                "column 2 (guidance 4.5); recipe has a sweep entry",
         args=["sweep", "--model", "tiny-dev", "--prompt", "a red fox", "--steps", "2", "--width", "48",
               "--height", "48", "--seeds", "1-2", "--vary", "sampling.guidance=2.5,4.5", *CPU, "--out", "out"],
         keep="out/r01-c02-s1.png"),
    dict(name="sweep-r2-c1",
         covers="the same sweep's row 2 (seed 2), column 1 (guidance 2.5)",
         args=None, reuse="sweep-r1-c2", keep="out/r02-c01-s2.png"),
    dict(name="batch-item",
         covers="a `localflux batch` job item: variant 'wide' (size and steps overridden per variant), "
                "job-level [prompt] styling, seeds from the job; recipe has a batch entry with the item id",
         files={"job.toml": """\
[job]
prompts = ["a lighthouse at dusk"]
seeds = [21]
output = "out"

[[job.variants]]
name = "square"

[[job.variants]]
name = "wide"
size = { width = 64, height = 48 }
sampling = { steps = 3 }

[model]
source = "tiny"
device = "cpu"

[sampling]
steps = 2

[size]
width = 48
height = 48

[prompt]
styling = "portra-400"
"""},
         args=["batch", "job.toml", "--no-progress"],
         keep="out/0002-wide-s21-*.png"),
    dict(name="memory-fp8-cache-t5",
         covers="[memory] transformer = \"fp8-storage\" (lossy plan, fp8 weights computed in float32 on the CPU) "
                "and cache_t5 = true",
         args=gen("--model", "tiny", "--prompt", "a red fox", "--set", "memory.transformer=fp8-storage",
                  "--set", "memory.cache_t5=true", "--steps", "2", "--width", "48", "--height", "48",
                  "--seed", "14", "--out", "out"),
         keep="out/0001-s14.png"),
    dict(name="memory-t5-fp8-offload-group",
         covers="[memory] t5 = \"fp8-storage\", t5_device = \"cpu\", offload = \"group\" (group offload wired on the CPU) "
                "on tiny-dev",
         args=gen("--model", "tiny-dev", "--prompt", "a red fox", "--set", "memory.t5=fp8-storage",
                  "--set", "memory.t5_device=cpu", "--offload", "group", "--steps", "2", "--width", "48",
                  "--height", "48", "--seed", "15", "--out", "out"),
         keep="out/0001-s15.png"),
    dict(name="memory-auto",
         covers="--memory auto: the automatic plan is chosen, printed and recorded (chosen_by auto); replay reuses it",
         args=gen("--model", "tiny", "--prompt", "a red fox", "--memory", "auto", "--steps", "2", "--width", "48",
                  "--height", "48", "--seed", "16", "--out", "out"),
         keep="out/0001-s16.png"),
    dict(name="vae-tiling-on",
         covers="[memory] vae_tiling = \"on\" at 128x96 (the tiny VAE's 64 px tiles: the decode really is tiled)",
         args=gen("--model", "tiny", "--prompt", "a red fox", "--set", "memory.vae_tiling=on", "--steps", "2",
                  "--width", "128", "--height", "96", "--seed", "17", "--out", "out"),
         keep="out/0001-s17.png"),
    dict(name="megapixels-aspect",
         covers="size by area: --megapixels 0.004 --aspect 3:4 (snapped; requested recorded as computed)",
         args=gen("--model", "tiny-dev", "--prompt", "a red fox", "--megapixels", "0.004", "--aspect", "3:4",
                  "--steps", "2", "--seed", "18", "--out", "out"),
         keep="out/0001-s18.png"),
    dict(name="prompt-split-long-clip",
         covers="prompt.clip and prompt.t5 set apart (different text to each encoder); the CLIP text is over "
                "77 tokens, so the recipe records a truncation warning",
         args=gen("--model", "tiny", "--set",
                  "prompt.clip=\"" + "a very long clip prompt about a red fox standing in fresh snow at dawn, " * 2 + "\"",
                  "--set", "prompt.t5=\"a red fox standing in fresh snow, photographed at dawn\"",
                  "--steps", "2", "--width", "48", "--height", "48", "--seed", "19", "--out", "out"),
         keep="out/0001-s19.png"),
    dict(name="speed-options",
         covers="[speed] lossless options on the CPU: attention = \"math\", channels_last_vae, fuse_qkv "
                "(recorded in decisions.speed)",
         args=gen("--model", "tiny-dev", "--prompt", "a red fox", "--set", "speed.attention=math",
                  "--set", "speed.channels_last_vae=true", "--set", "speed.fuse_qkv=true", "--steps", "2",
                  "--width", "48", "--height", "48", "--seed", "20", "--out", "out"),
         keep="out/0001-s20.png"),
]


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def check_code() -> None:
    """Refuse to run with anything but release 0.1's package code."""
    import localflux
    from localflux.recipe import SCHEMA_VERSION

    if localflux.__version__ != RELEASE or SCHEMA_VERSION != 1:
        sys.exit(f"this is localflux {localflux.__version__} (recipe schema {SCHEMA_VERSION}); the fixtures must be made "
                 f"by release {RELEASE} (schema 1, commit {COMMIT})")
    if Path(localflux.__file__).resolve().parent != REPO / "localflux":
        sys.exit(f"localflux is imported from {localflux.__file__}, not from {REPO}; set PYTHONPATH={REPO}")
    diff = subprocess.run(["git", "diff", "--quiet", COMMIT, "--", "localflux"], cwd=REPO)
    if diff.returncode != 0:
        sys.exit(f"localflux/ differs from commit {COMMIT}; check that commit's package out to make the fixtures")


def environment(work: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error", DIFFUSERS_VERBOSITY="error",
               LOCALFLUX_CACHE=str(work / "cache"), LOCALFLUX_WEIGHTS=str(assets.ROOT / assets.UPSCALERS))
    return env


def png_size(path: Path) -> list[int]:
    from PIL import Image

    with Image.open(path) as image:
        return [image.width, image.height]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="replace an existing tests/data/release-0.1/")
    args = parser.parse_args()
    check_code()
    if OUT.exists():
        if not args.force:
            sys.exit(f"{OUT} exists; these fixtures are made once (pass --force to replace them)")
        shutil.rmtree(OUT)

    import torch

    torch.set_num_threads(1)
    print(f"building assets under {assets.ROOT}", file=sys.stderr)
    if assets.ROOT.exists():
        shutil.rmtree(assets.ROOT)
    assets.build_all(assets.ROOT)
    asset_hashes = assets.file_hashes(assets.ROOT)
    with tempfile.TemporaryDirectory(prefix="localflux-assets-check-") as check:  # the builders must be deterministic
        assets.build_all(Path(check))
        again = assets.file_hashes(Path(check))
    if again != asset_hashes:
        differ = sorted(k for k in set(again) | set(asset_hashes) if again.get(k) != asset_hashes.get(k))
        sys.exit(f"building the assets twice gave different bytes for: {', '.join(differ)}")

    OUT.mkdir(parents=True)
    images: dict[str, dict] = {}
    kept: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="localflux-fixtures-") as tmp:
        tmp = Path(tmp)
        env = environment(tmp)
        runs: dict[str, Path] = {}
        for case in CASES:
            name = case["name"]
            if case.get("args") is None:
                work = runs[case["reuse"]]
                command = images[case["reuse"]]["command"]
                config_files = images[case["reuse"]].get("files")
            else:
                work = tmp / name
                work.mkdir()
                for file_name, text in (case.get("files") or {}).items():
                    (work / file_name).write_text(text)
                argv = [str(kept[a[5:-1]]) if a.startswith("{out:") else a for a in case["args"]]
                shown = [f"tests/data/release-0.1/{a[5:-1]}.png" if a.startswith("{out:") else a for a in case["args"]]
                print(f"[{name}] localflux {shlex.join(argv)}", file=sys.stderr)
                done = subprocess.run([sys.executable, "-m", "localflux", *argv], cwd=work, env=env,
                                      capture_output=True, text=True, timeout=600)
                if done.returncode != 0:
                    sys.exit(f"[{name}] exit {done.returncode}\n{done.stderr[-4000:]}")
                runs[name] = work
                command = "localflux " + shlex.join(shown)
                config_files = case.get("files")
            matches = sorted(glob.glob(str(work / case["keep"])))
            if len(matches) != 1:
                sys.exit(f"[{name}] expected one file matching {case['keep']}, found {matches}")
            target = OUT / f"{name}.png"
            shutil.copyfile(matches[0], target)
            kept[name] = target
            from localflux.recipe import read_recipe

            recipe = read_recipe(target)
            assert recipe["schema_version"] == 1, name
            images[name] = {
                "file": target.name,
                "covers": case["covers"],
                "command": command,
                **({"files": config_files} if config_files else {}),
                "kept_output": case["keep"],
                "size": png_size(target),
                "seed": recipe["seed"],
                "sha256": sha256(target),
            }

    manifest = {
        "about": "PNGs made by localflux release 0.1 (recipe schema 1); each must replay pixel-identically "
                 "with `localflux replay IMAGE --verify`. Made once by scripts/make_release_fixtures.py; "
                 "replayed by tests/test_release_replay.py. Commands ran in a scratch folder (relative paths: "
                 "the config/job files given under 'files', outputs under out/); the kept output was copied "
                 "here under the entry's name.",
        "localflux_version": RELEASE,
        "commit": COMMIT,
        "recipe_schema_version": 1,
        "asset_root": str(assets.ROOT),
        "assets_builder": "tests/release_assets.py (build_all)",
        "assets": asset_hashes,
        "images": {entry["file"]: {k: v for k, v in entry.items() if k != "file"} for entry in images.values()},
    }
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"{len(images)} PNGs + manifest.json in {OUT} ({total / 1024:.0f} KiB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
