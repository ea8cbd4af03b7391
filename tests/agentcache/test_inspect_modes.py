"""`agentcache inspect` modes (session view, --explain, --diff, --layers) refuse each other and options of another."""
import json
from pathlib import Path

import pytest

from agentcache.cli import main

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "repo"


def cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(["inspect", *args])
    captured = capsys.readouterr()
    return done.value.code or 0, captured.out, captured.err


@pytest.mark.parametrize("args, message", [
    (["--diff", "a", "b", "--layers"], "--diff and --layers are separate modes of inspect; give one"),
    (["--explain", "--layers"], "--explain and --layers are separate modes of inspect; give one"),
    (["--explain", "--diff", "a", "b"], "--explain and --diff are separate modes of inspect; give one"),
    (["--layers", "--cache-ttl", "1h"], "--cache-ttl applies only to the session view, not to --layers"),
    (["--explain", "--cache-ttl", "1h"], "--cache-ttl applies only to the session view, not to --explain"),
    (["--diff", "a", "b", "--cache-ttl", "5m"], "--cache-ttl applies only to the session view, not to --diff"),
    (["--role", "planner"], "--role applies only to --layers, not to the session view"),
    (["--prompts", "."], "--prompts applies only to --layers, not to the session view"),
    (["--explain", "--skills", "docs"], "--skills applies only to --layers, not to --explain"),
    (["--explain", "--max-tree", "3"], "--max-tree applies only to --layers, not to --explain"),
    (["--diff", "a", "b", "--budget", "100"], "--budget applies only to --layers, not to --diff"),
    (["--strict"], "--strict applies only to --layers, not to the session view"),
    (["latest", "--layers"], "a SESSION argument applies only to the session view and --explain, not to --layers"),
    (["latest", "--diff", "a", "b"], "a SESSION argument applies only to the session view and --explain, not to --diff"),
])
def test_an_option_of_another_mode_is_one_error_line_and_exit_2(capsys, args, message):
    code, out, err = cli(capsys, *args, "--repo", str(EXAMPLE), "--json")
    assert (code, out, err) == (2, "", f"error: {message}\n")


def test_a_default_value_given_explicitly_is_still_refused(capsys):
    code, _, err = cli(capsys, "--role", "coder", "--diff", "a", "b", "--repo", str(EXAMPLE))
    assert code == 2 and err == "error: --role applies only to --layers, not to --diff\n"


def test_each_mode_still_takes_its_own_options(capsys, tmp_path):
    code, out, err = cli(capsys, "--layers", "--role", "planner", "--skills", "skills", "--max-tree", "50",
                         "--budget", "5000", "--strict", "--json", "--repo", str(EXAMPLE))
    assert code == 0 and err == "" and json.loads(out)["blocks"][1]["key"] == "roles/planner.md"
    for args in (["latest", "--cache-ttl", "1h"], ["latest", "--explain"]):
        code, out, err = cli(capsys, *args, "--repo", str(tmp_path))
        assert code == 2 and err.startswith("error: no sessions"), args
