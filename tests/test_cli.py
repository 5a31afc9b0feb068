"""Every subcommand has help; unknown input is refused without a traceback."""

from __future__ import annotations

import pytest

from kbmigrate.cli import build_parser
from kbmigrate.errors import BadParameter
from kbmigrate.run.runner import select_steps

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


@pytest.mark.parametrize("name,step", [("06", "06_smoke_tests"), ("6", "06_smoke_tests"), ("smoke", "06_smoke_tests"),
                                       ("smoke_tests", "06_smoke_tests"), ("backfill", "03_backfill"),
                                       ("import", "05_import_legacy"), ("02_schema", "02_schema")])
def test_a_step_is_named_by_number_name_or_the_start_of_its_name(name: str, step: str) -> None:
    assert select_steps(None, [name]) == [step]


@pytest.mark.parametrize("name", ["s", "9", "07", "smokes", ""])
def test_an_unknown_or_ambiguous_step_is_refused(name: str) -> None:
    with pytest.raises(BadParameter):
        select_steps(None, [name])
