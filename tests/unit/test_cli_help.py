"""The CLI explains itself: every setting's flag says what its docstring says, with the
environment variable and the default; every command has a description."""

from __future__ import annotations

import argparse
import ast
import inspect
import re

import pytest

from likestream.cli import _parser, main
from likestream.config import _settings
from likestream.config._settings import Settings
from likestream.runtime._flags import SETTING_PREFIX, describe, setting_help

SETTING_COMMANDS = ("worker", "gateway", "config", "produce", "status", "token", "erase")


def _commands() -> dict[str, argparse.ArgumentParser]:
    [sub] = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _docstrings() -> dict[str, str]:
    """The string under each field of Settings, read from the source (not through pydantic)."""
    tree = ast.parse(inspect.getsource(_settings))
    [cls] = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Settings"]
    found: dict[str, str] = {}
    for node, after in zip(cls.body, [*cls.body[1:], None], strict=True):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
            found[node.target.id] = str(after.value.value)
    return found


def _plain(text: str) -> str:
    return " ".join(text.replace("``", "").split())


def test_every_setting_has_a_docstring_and_the_description_is_it() -> None:
    docs = _docstrings()
    for name in Settings.model_fields:
        assert docs.get(name, "").strip(), f"setting {name} has no docstring under it"
        assert describe(name) == _plain(docs[name])


@pytest.mark.parametrize("command", SETTING_COMMANDS)
def test_every_setting_flag_has_the_docstring_env_and_default(command: str) -> None:
    parser = _commands()[command]
    flags = {
        a.dest.removeprefix(SETTING_PREFIX): a
        for a in parser._actions
        if a.dest.startswith(SETTING_PREFIX) and a.option_strings[0] != "--procs"
    }
    assert set(flags) == set(Settings.model_fields)
    for name, action in flags.items():
        assert action.option_strings == [f"--{name.replace('_', '-')}"]
        assert action.help == setting_help(name)
        shown = action.help.replace("%%", "%")
        assert shown.startswith(_plain(_docstrings()[name]) + " [env LIKESTREAM_" + name.upper())
    help_text = " ".join(parser.format_help().split())
    assert "Per-user like rate, tokens per second. [env LIKESTREAM_RATE, default 5.0]" in help_text
    assert "[env LIKESTREAM_WEB_PORT, default 6066]" in help_text
    assert "[env LIKESTREAM_INSTANCE_ID, default unset]" in help_text


def test_secrets_show_no_default() -> None:
    for name in ("secret", "previous_secrets", "internal_secret", "kafka_password"):
        text = setting_help(name)
        assert "default" not in text.split("[env")[1], text
        assert f"[env LIKESTREAM_{name.upper()}; prefer it" in text


def test_every_command_and_argument_is_explained() -> None:
    for name, parser in _commands().items():
        assert parser.description, f"likestream {name} has no description"
        for action in parser._actions:
            if action.help != argparse.SUPPRESS:
                assert action.help, f"likestream {name} {action.dest} has no help"


def test_worker_help_is_readable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "100")  # argparse wraps to the terminal's width
    with pytest.raises(SystemExit) as exit_:
        main(["worker", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    usage = out.split("\n\n")[0]
    assert usage == "usage: likestream worker [-h] [--SETTING VALUE ...]"
    assert "Fold like events" in out
    assert not re.search(r"`|%%", out)  # no reST markup, no argparse escapes left
    assert max(len(line) for line in out.splitlines()) <= 98


def test_flags_still_set_settings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "--rate", "7.5", "--dev-tokens", "false"]) == 0
    out = capsys.readouterr().out
    assert "LIKESTREAM_RATE=7.5\n" in out
    assert "LIKESTREAM_DEV_TOKENS=False\n" in out
    assert main(["config", "--web-port", "0"]) == 2
    assert "LIKESTREAM_WEB_PORT" in capsys.readouterr().err
