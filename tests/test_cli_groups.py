"""`generate --help` (and every command sharing its options) shows them in groups, as accelerate's launch does."""

import re

import pytest

GROUPS = ["model", "prompt", "sampling", "size", "inputs (docs/images.md)", "memory (docs/memory.md)", "LoRA",
          "output", "speed"]


@pytest.mark.parametrize("command", ["generate", "sweep"])
def test_help_shows_the_option_groups_in_order(capsys, command):
    from localflux.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    text = capsys.readouterr().out
    headings = re.findall(r"^(\S[^\n]*):$", text, flags=re.M)
    assert [h for h in headings if h in GROUPS] == GROUPS
    section = lambda name: text.split(f"\n{name}:\n")[1].split("\n\n")[0]  # noqa: E731
    assert "--seed" in section("sampling") and "--lora-fuse" in section("LoRA") and "--width" in section("size")
    assert "--dtype" in section("model") and "--offload" in section("memory (docs/memory.md)")
