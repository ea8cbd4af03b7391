"""Script validation: every bad script is one clear error naming the file line, before anything runs (no model)."""

import textwrap
from pathlib import Path

import pytest

from agentcache.script_format import ScriptError, answer_refs, fill_answers, load_script
from tests.agentcache.test_cli import run_cli

ROOT = Path(__file__).resolve().parents[2]
GOOD = """\
agents:
  - name: planner
    role: planner
  - name: worker
    role: worker
    tools: [read_file, finish]
steps:
  - run: planner
    task: Plan it.
  - parallel:
      - run: worker
        task: "Do step 1 of: {{planner.answer}}"
      - fork: planner
        max_turns: 1
        children:
          - {name: a, instruction: First.}
          - {name: b, instruction: "Second, after {{ planner.answer }}."}
"""


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ScriptError) as caught:
        load_script(write(tmp_path, text))
    return str(caught.value)


def test_a_good_script_becomes_steps_of_concurrent_launches(tmp_path):
    script = load_script(write(tmp_path, GOOD))
    assert [[launch.agent for launch in step] for step in script.steps] == [["planner"], ["worker", "a", "b"]]
    assert script.agents["a"].parent == "planner" and script.agents["a"].role == "planner"
    assert script.agents["a"].max_turns == 1 and script.agents["worker"].tools == ["read_file", "finish"]
    assert [launch.line for launch in script.steps[1]] == [11, 16, 17]


def test_the_example_scripts_are_valid():
    review = load_script(ROOT / "examples" / "scripts" / "review.yaml")
    fanout = load_script(ROOT / "examples" / "scripts" / "fanout.yaml")
    assert len(review.steps[1]) == 3 and all("{{planner.answer}}" in launch.task for launch in review.steps[1])
    children = [spec for spec in fanout.agents.values() if spec.parent == "reader"]
    assert len(children) == 8 and len(fanout.steps[1]) == 8


def test_answer_templates_are_found_and_filled():
    text = "Plan: {{planner.answer}} / again {{ planner.answer }} / {{w-1.answer}}"
    assert answer_refs(text) == ["planner", "planner", "w-1"]
    assert fill_answers(text, {"planner": "P {{x}}", "w-1": "W"}) == "Plan: P {{x}} / again P {{x}} / W"


def test_unknown_role_names_the_line_and_the_known_roles(tmp_path):
    message = error_of(tmp_path, GOOD.replace("role: worker", "role: critic"))
    assert message == "s.yaml line 5: unknown role 'critic' (known: coder, planner, reviewer, worker)"


def test_malformed_yaml_names_its_line(tmp_path):
    message = error_of(tmp_path, GOOD.replace("    task: Plan it.", "    task: [Plan it."))
    assert message.startswith("s.yaml line ") and "malformed YAML" in message
    assert int(message.split()[2].rstrip(":")) in (9, 10, 11)


@pytest.mark.parametrize("old, new, expected", [
    ("          - {name: a, instruction: First.}\n", "", None),  # still one child: valid
    ("        children:\n          - {name: a, instruction: First.}\n"
     "          - {name: b, instruction: \"Second, after {{ planner.answer }}.\"}\n", "",
     "s.yaml line 13: a fork needs 'children': a list of {name, instruction}"),
    ("{name: a, instruction: First.}", "{name: a}", "s.yaml line 16: 'instruction' must be a non-empty string"),
    ("{name: a, instruction: First.}", "{name: a, role: coder, instruction: x}",
     "s.yaml line 16: unknown key 'role' in a fork child (it inherits its parent's role and context) "
     "(known: name, instruction, tools, max_turns, max_tokens, token_budget)"),
    ("- fork: planner", "- fork: ghost", "s.yaml line 13: fork of unknown agent 'ghost' (defined: planner, worker)"),
    ("{name: a, instruction: First.}", "{name: worker, instruction: x}",
     "s.yaml line 16: agent 'worker' is already defined at line 4"),
    ("children:\n          - {name: a, instruction: First.}", "children:\n          - just text",
     "s.yaml line 16: each fork child is a mapping with 'name' and 'instruction'"),
])
def test_malformed_forks_are_rejected(tmp_path, old, new, expected):
    text = GOOD.replace(old, new)
    assert text != GOOD
    if expected is None:
        load_script(write(tmp_path, text))
    else:
        assert error_of(tmp_path, text) == expected


def test_a_cycle_between_steps_is_rejected(tmp_path):
    text = GOOD.replace("task: Plan it.", "task: 'Use {{worker.answer}}'")
    assert error_of(tmp_path, text) == ("s.yaml line 8: cycle between steps: planner -> worker -> planner "
                                        "(each waits for the next one's answer)")


def test_an_answer_from_the_same_or_a_later_step_is_rejected(tmp_path):
    same = GOOD.replace("instruction: First.", "instruction: 'After {{worker.answer}}'")
    assert error_of(tmp_path, same) == ("s.yaml line 16: 'a' waits for 'worker', which runs in the same step; "
                                        "an answer or fork parent must come from an earlier step")
    later = GOOD.replace("steps:", "  - {name: late, role: coder}\nsteps:").replace("{{planner.answer}}\"", "{{late.answer}}\"")
    later += "  - run: late\n    task: Last.\n"
    assert error_of(tmp_path, later) == ("s.yaml line 12: 'worker' waits for 'late', which runs later; "
                                         "an answer or fork parent must come from an earlier step")


@pytest.mark.parametrize("old, new, expected", [
    ("{{planner.answer}}\"", "{{ghost.answer}}\"", "s.yaml line 11: '{{ghost.answer}}' refers to unknown agent 'ghost'"),
    ("{{planner.answer}}\"", "{{planner.plan}}\"", "s.yaml line 12: unknown template '{{planner.plan}}' (use {{AGENT.answer}})"),
    ("- run: worker", "- run: nobody", "s.yaml line 11: unknown agent 'nobody' (defined: planner, worker)"),
    ("  - run: planner\n    task: Plan it.\n", "",
     "s.yaml line 2: agent 'planner' is defined but no step runs it"),
    ("tools: [read_file, finish]", "tools: [read_file, fly]", "s.yaml line 6: unknown tool 'fly' (known: "
     "edit_file, finish, list_files, read_file, run_command, search, write_file)"),
    ("    role: planner\n", "    role: planner\n    max_turns: 0\n",
     "s.yaml line 4: 'max_turns' must be a positive integer, got 0"),
    ("agents:", "agent:", "s.yaml line 1: unknown key 'agent' in script (known: model, limits, agents, steps)"),
    ("    role: planner\n", "    role: planner\n    role: coder\n", "s.yaml line 4: duplicate key 'role'"),
    ("    role: planner\n", "    role: planner\n    model: other\n", "s.yaml line 4: agent 'planner' asks for "
     "model 'other' but one model serves the whole script: set the top-level 'model' instead"),
])
def test_other_mistakes_are_one_line_errors(tmp_path, old, new, expected):
    text = GOOD.replace(old, new)
    assert text != GOOD
    assert error_of(tmp_path, text) == expected


def test_cli_reports_a_bad_script_as_one_line_and_exit_code_2(tmp_path):
    path = write(tmp_path, GOOD.replace("role: worker", "role: critic"), "review.yaml")
    result = run_cli("script", str(path), "--repo", str(ROOT / "examples" / "repo"))
    assert result.returncode == 2
    assert result.stderr == "error: review.yaml line 5: unknown role 'critic' (known: coder, planner, reviewer, worker)\n"
    assert result.stdout == ""
