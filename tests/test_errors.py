"""The one way to quote an exception in a one-line message (localflux.errors)."""

from localflux.errors import first_line, one_line


def test_first_line_is_the_first_non_empty_line_bounded_or_the_class_name():
    assert first_line(ValueError("\n  bad header\nTraceback detail\n")) == "bad header"
    assert first_line(RuntimeError("x" * 500)) == "x" * 200
    assert first_line(RuntimeError("x" * 500), 120) == "x" * 120
    assert first_line(KeyError()) == "KeyError"
    assert first_line(OSError("  \n ")) == "OSError"


def test_one_line_joins_every_line():
    assert one_line("could not load 'x':\n  line two\n\nline three") == "could not load 'x': line two line three"


def test_no_module_keeps_its_own_copy():
    import localflux.batch.runner as runner
    import localflux.cli as cli
    import localflux.lora.to_diffusers as to_diffusers

    assert cli.one_line is one_line and to_diffusers.first_line is first_line
    assert not hasattr(runner, "_first_line")
