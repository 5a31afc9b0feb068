"""Every subcommand has help; unknown input is refused without a traceback."""

from __future__ import annotations

import pytest

from kbmigrate.cli import build_parser
from kbmigrate.errors import BadParameter
from kbmigrate.run.runner import resolve_step, select_steps

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
    assert resolve_step(name) == step


@pytest.mark.parametrize("name", ["s", "9", "07", "smokes", ""])
def test_an_unknown_or_ambiguous_step_is_refused(name: str) -> None:
    with pytest.raises(BadParameter):
        resolve_step(name)


@pytest.mark.parametrize("only,backup_of,missing", [
    (["02"], None, "its GO (add 00) and a proven backup"), (["00", "02"], None, "a proven backup"),
    (["01", "03"], None, "its GO"), (["00", "05"], None, "a proven backup"), (["04"], "r1", "its GO")])
def test_a_run_that_could_never_hold_its_gates_is_refused_before_it_starts(only: list[str], backup_of: str | None,
                                                                          missing: str) -> None:
    with pytest.raises(BadParameter) as refused:
        select_steps(only, backup_of)
    assert missing in refused.value.message and "would change the database without" in refused.value.message


def test_steps_that_change_nothing_or_hold_their_gates_are_taken() -> None:
    assert select_steps(["00"]) == ["00_preflight"]
    assert select_steps(["06", "01"]) == ["01_backup", "06_smoke_tests"]
    assert select_steps(["00", "01", "02"]) == ["00_preflight", "01_backup", "02_schema"]
    assert select_steps(None, "r1") == ["00_preflight", "02_schema", "03_backfill", "04_seed_sections",
                                        "05_import_legacy", "06_smoke_tests"]
