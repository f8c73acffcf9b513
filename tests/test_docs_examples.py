"""docs/*.md examples are part of the API too: every `localflux ...` line of their code blocks runs here,
staged like README's (tests/test_readme.py: dry runs where real FLUX weights are needed, the tiny model
for real), and their TOML examples are read with the same strict loaders as a user's files.

docs/lora.md and docs/upscale.md are checked by their features' own tests.
"""

import re
import tomllib

import pytest

from conftest import REPO
from test_readme import doc_commands, run_example, workspace  # noqa: F401  (workspace: the fixture)

PAGES = ["batch.md", "flux2.md", "images.md", "memory.md", "speed.md", "training.md"]


def toml_blocks(page: str) -> list[str]:
    return re.findall(r"```toml\n(.*?)```", (REPO / "docs" / page).read_text(), flags=re.S)


@pytest.mark.parametrize("page", PAGES)
def test_every_doc_example_runs(page, workspace, run_cli):  # noqa: F811
    commands = doc_commands(REPO / "docs" / page)
    assert commands, f"docs/{page} shows no localflux command"
    outputs = [run_example(args, workspace, run_cli) for args in commands]
    if page == "batch.md":  # render, rerun (nothing left to render), --status, --retry-failed
        assert len(outputs[0].split()) == 12 and outputs[1] == "" and "done: 12" in outputs[2]


@pytest.mark.parametrize("page", ["memory.md", "speed.md"])
def test_doc_config_sections_are_valid(page):
    from localflux.config import config_from_dict

    blocks = toml_blocks(page)
    assert blocks
    for block in blocks:  # unknown keys, wrong types and values out of range are errors
        config = config_from_dict(tomllib.loads(block), origin=f"docs/{page}")
        for section, values in tomllib.loads(block).items():
            assert {k: getattr(getattr(config, section), k) for k in values} == values


def test_batch_doc_job_file_is_a_valid_job(workspace, run_cli):  # noqa: F811
    (block,) = toml_blocks("batch.md")
    # its base config needs FLUX.1-schnell from the hub; the demo config stands in (the tiny model)
    (workspace / "jobs" / "catalog.toml").write_text(block.replace("../configs/schnell.toml", "../configs/demo.toml"))
    (workspace / "jobs" / "catalog-prompts.txt").write_text("# skipped\n\na harbour in fog\n")
    code, out, err = run_cli("batch", "jobs/catalog.toml", "--status", cwd=workspace)
    assert code == 0, err
    # 3 prompts (2 inline + 1 from the file) x 2 variants x 3 seeds, into job.output
    assert f"-> {workspace / 'renders' / 'catalog'}" in out and "items: 18" in out and "pending: 18" in out
