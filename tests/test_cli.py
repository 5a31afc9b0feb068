"""Every subcommand has help; unknown input is refused without a traceback."""

from __future__ import annotations

import pytest

from kbmigrate.cli import build_parser

from conftest import run_cli


def _subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


def test_top_level_help_lists_every_subcommand() -> None:
    done = run_cli("--help")
    assert done.returncode == 0
    for name in _subcommands():
        assert name in done.stdout


@pytest.mark.parametrize("name", _subcommands())
def test_subcommand_help(name: str) -> None:
    done = run_cli(name, "--help")
    assert done.returncode == 0 and "usage: kbmigrate " + name in done.stdout
    assert len(done.stdout.splitlines()) > 4


def test_unknown_option_and_value() -> None:
    done = run_cli("demo-db", "--sise", "small")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    done = run_cli("demo-db", "--size", "huge")
    assert done.returncode == 2 and "invalid choice" in done.stderr
