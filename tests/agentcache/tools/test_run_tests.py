"""run_tests: the user's test command, exactly, in edit and full modes only when the user set one; from an untrusted
agentcache.yaml it is ignored like every widening setting. End to end over loopback HTTP with fixed replies."""

import json
import sys

import pytest

from agentcache.config import RunConfig, check_config
from agentcache.errors import AgentcacheError
from agentcache.tools.base import ToolError
from agentcache.tools.toolbox import ToolBox, mode_tools
from tests.agentcache.http_helpers import chat_reply, run_scripted

PASSING = f"{sys.executable} -c \"print('3 passed')\""


def test_run_tests_is_enabled_only_with_a_test_command_and_a_mode_that_edits():
    assert "run_tests" not in mode_tools("edit") and "run_tests" not in mode_tools("full")
    assert "run_tests" in mode_tools("edit", tests=True) and "run_tests" in mode_tools("full", tests=True)
    assert "run_tests" not in mode_tools("read-only", tests=True)
    with pytest.raises(ToolError, match="run_tests needs a test command"):
        mode_tools("edit", ["read_file", "run_tests"])


def test_the_command_runs_as_given_without_a_shell_whatever_the_arguments(tmp_path):
    box = ToolBox(tmp_path, enabled=mode_tools("edit", tests=True), test_command=f"{PASSING} ; touch pwned")
    outcome = box.run("run_tests", {})
    assert not outcome.is_error and outcome.output.startswith("exit code: 0") and "3 passed" in outcome.output
    assert not (tmp_path / "pwned").exists()  # `;` went to python as an argument, not to a shell
    assert box.run("run_tests", {"command": "touch pwned"}).is_error  # the schema takes no arguments
    failing = ToolBox(tmp_path, enabled=mode_tools("edit", tests=True),
                      test_command=f"{sys.executable} -c \"import sys; sys.exit(1)\"")
    assert failing.run("run_tests", {}).output.startswith("exit code: 1")


def test_without_a_command_the_tool_says_how_to_set_one(tmp_path):
    box = ToolBox(tmp_path)
    outcome = box.run("run_tests", {})
    assert outcome.is_error and "no test command is set" in outcome.output


def test_a_command_with_unbalanced_quotes_is_one_clear_line():
    with pytest.raises(AgentcacheError, match="test_command must be a command line with balanced quotes"):
        check_config(RunConfig(test_command="pytest 'oops"))


def run_with(repo, *flags):
    replies = [chat_reply({"name": "run_tests", "arguments": {}}), chat_reply({"answer": "done"})]
    run = run_scripted(repo, "Check the tests.", replies, "--max-turns", "3", *flags,
                       env={"AGENTCACHE_CONFIG_DIR": str(repo.parent / "config")})
    return run.stderr, run.requests[0]


def test_the_flag_enables_it_and_an_untrusted_yaml_does_not(repo):
    _, record = run_with(repo, "--test-command", PASSING)
    assert "run_tests" in record["enabled_tools"] and record["tool_result"]["output"].startswith("exit code: 0")
    (repo / "agentcache.yaml").write_text(f"test_command: {json.dumps(PASSING)}\n")
    stderr, record = run_with(repo)
    assert "test_command setting was ignored" in stderr
    assert "run_tests" not in record["enabled_tools"] and "disabled tool 'run_tests'" in record["error"]
