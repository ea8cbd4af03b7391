"""Script validation: every bad script is one clear error naming the file line, before anything runs (no model)."""

import copy
import re
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from agentcache.script.format import ScriptError, answer_refs, fill_answers, load_script, parse_script
from tests.agentcache.test_cli import run_cli

ROOT = Path(__file__).resolve().parents[3]
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
    assert message == "s.yaml line 5: unknown role 'critic' (known: ask, coder, planner, reviewer, worker)"


def test_malformed_yaml_names_its_line(tmp_path):
    message = error_of(tmp_path, GOOD.replace("    task: Plan it.", "    task: [Plan it."))
    assert message.startswith("s.yaml line ") and "malformed YAML" in message
    assert int(message.split()[2].rstrip(":")) in (9, 10, 11)


@pytest.mark.parametrize("old, new, expected", [
    ("          - {name: a, instruction: First.}\n", "", None),  # still one child: valid
    ("        children:\n          - {name: a, instruction: First.}\n"
     "          - {name: b, instruction: \"Second, after {{ planner.answer }}.\"}\n", "",
     "s.yaml line 13: a fork needs 'children': a list of {name, instruction}, got nothing"),
    ("{name: a, instruction: First.}", "{name: a}",
     "s.yaml line 16: 'instruction' must be a non-empty string, got nothing"),
    ("{name: a, instruction: First.}", "{name: a, role: coder, instruction: x}",
     "s.yaml line 16: unknown key 'role' in a fork child (it inherits its parent's role and context) "
     "(known: name, instruction, tools, max_turns, max_tokens, token_budget)"),
    ("- fork: planner", "- fork: ghost", "s.yaml line 13: fork of unknown agent 'ghost' (defined: planner, worker)"),
    ("{name: a, instruction: First.}", "{name: worker, instruction: x}",
     "s.yaml line 16: agent 'worker' is already defined at line 4"),
    ("children:\n          - {name: a, instruction: First.}", "children:\n          - just text",
     "s.yaml line 16: each fork child is a mapping with 'name' and 'instruction', got 'just text'"),
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
     "edit_file, finish, list_files, read_file, run_command, run_tests, search, write_file)"),
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
    assert result.stderr == "error: review.yaml line 5: unknown role 'critic' (known: ask, coder, planner, reviewer, worker)\n"
    assert result.stdout == ""


ROLES = "(known: ask, coder, planner, reviewer, worker)"


@pytest.mark.parametrize("old, new, expected", [
    ("- fork: planner", "- fork: [planner]", "s.yaml line 13: 'fork' must be the name of one agent, got ['planner']"),
    ("- fork: planner", "- fork: {planner: 1}", "s.yaml line 13: 'fork' must be the name of one agent, "
     "got {'planner': 1}"),
    ("- fork: planner", "- fork:", "s.yaml line 13: 'fork' must be the name of one agent, got nothing"),
    ("- fork: planner", "- fork: 7", "s.yaml line 13: 'fork' must be the name of one agent, got 7"),
    ("- fork: planner", "- fork: !!set {planner}", "s.yaml line 13: 'fork' must be the name of one agent, "
     "got {'planner'}"),
    ("- run: worker", "- run: [worker]", "s.yaml line 11: 'run' must be the name of one agent, got ['worker']"),
    ("- run: planner", "- run: {planner: 1}", "s.yaml line 8: 'run' must be the name of one agent, got {'planner': 1}"),
    ("- run: planner", "- run:", "s.yaml line 8: 'run' must be the name of one agent, got nothing"),
    ("- run: worker", "- run: 3", "s.yaml line 11: 'run' must be the name of one agent, got 3"),
    ("    role: planner\n", "    role: [planner]\n", f"s.yaml line 3: 'role' must be a role name {ROLES}, "
     "got ['planner']"),
    ("    role: planner\n", "    role:\n", f"s.yaml line 3: 'role' must be a role name {ROLES}, got nothing"),
    ("    role: planner\n", "    role: 1\n", f"s.yaml line 3: 'role' must be a role name {ROLES}, got 1"),
    ("tools: [read_file, finish]", "tools: read_file", "s.yaml line 6: 'tools' must be a list of tool names, "
     "got 'read_file'"),
    ("tools: [read_file, finish]", "tools: {read_file: 1}", "s.yaml line 6: 'tools' must be a list of tool names, "
     "got {'read_file': 1}"),
    ("tools: [read_file, finish]", "tools: [[read_file]]", "s.yaml line 6: 'tools' must be a list of tool names, "
     "got [['read_file']]"),
    ("tools: [read_file, finish]", "tools: [read_file, 5]", "s.yaml line 6: 'tools' must be a list of tool names, "
     "got ['read_file', 5]"),
    ("max_turns: 1", "max_turns: one", "s.yaml line 14: 'max_turns' must be a positive integer, got 'one'"),
    ("max_turns: 1", "max_turns: [1]", "s.yaml line 14: 'max_turns' must be a positive integer, got [1]"),
    ("max_turns: 1", "max_turns: true", "s.yaml line 14: 'max_turns' must be a positive integer, got True"),
    ("max_turns: 1", "max_turns: 1.5", "s.yaml line 14: 'max_turns' must be a positive integer, got 1.5"),
    ("agents:", "limits: 5\nagents:", "s.yaml line 1: 'limits' must be a mapping of max_turns and token_budget, "
     "got 5"),
    ("agents:", "limits: {token_budget: lots}\nagents:", "s.yaml line 1: 'token_budget' must be a positive "
     "integer, got 'lots'"),
    ("agents:", "model: [a, b]\nagents:", "s.yaml line 1: 'model' must be a string, got ['a', 'b']"),
    ("    role: worker\n", "    role: worker\n    backend: {local: 1}\n",
     "s.yaml line 6: 'backend' must be a string, got {'local': 1}"),
    ("    role: worker\n", "    role: worker\n    allow_shell: 'yes'\n", "s.yaml line 6: 'allow_shell' must be "
     "true or false"),
    ("  - name: planner\n", "  - name: 5\n", "s.yaml line 2: an agent needs a 'name' of letters, digits, '-' or "
     "'_', got 5"),
    ("  - name: planner\n", "  - name:\n", "s.yaml line 2: an agent needs a 'name' of letters, digits, '-' or "
     "'_', got nothing"),
    ("agents:\n  - name: planner\n    role: planner\n", "agents:\n  - [planner, planner]\n",
     "s.yaml line 2: each agent is a mapping with 'name' and 'role'"),
    ("    task: Plan it.", "    task: [Plan it.]", "s.yaml line 9: 'task' must be a non-empty string, "
     "got ['Plan it.']"),
    ("    task: Plan it.", "    task: 12", "s.yaml line 9: 'task' must be a non-empty string, got 12"),
    ("    task: Plan it.", "    task:", "s.yaml line 9: 'task' must be a non-empty string, got nothing"),
    ("{name: a, instruction: First.}", "{name: [a], instruction: First.}",
     "s.yaml line 16: a fork child needs a 'name' of letters, digits, '-' or '_', got ['a']"),
    ("{name: a, instruction: First.}", "{name: a, instruction: {First: 1}}",
     "s.yaml line 16: 'instruction' must be a non-empty string, got {'First': 1}"),
    ("        children:\n          - {name: a, instruction: First.}\n"
     "          - {name: b, instruction: \"Second, after {{ planner.answer }}.\"}\n",
     "        children: {name: a, instruction: First.}\n",
     "s.yaml line 15: a fork needs 'children': a list of {name, instruction}, "
     "got {'name': 'a', 'instruction': 'First.'}"),
    ("  - parallel:\n", "  - parallel:\n      - just text\n", "s.yaml line 11: a step is a mapping: 'run', 'fork' "
     "or 'parallel', got 'just text'"),
    ("  - run: planner\n    task: Plan it.\n", "  - [planner]\n", "s.yaml line 8: a step is a mapping: 'run', "
     "'fork' or 'parallel', got ['planner']"),
])
def test_values_of_the_wrong_type_are_line_numbered_errors(tmp_path, old, new, expected):
    text = GOOD.replace(old, new)
    assert text != GOOD
    assert error_of(tmp_path, text) == expected


@pytest.mark.parametrize("text, expected", [
    ("- agents\n- steps\n", "s.yaml line 1: a script is a mapping with 'agents' and 'steps'"),
    ("", "s.yaml line 1: a script is a mapping with 'agents' and 'steps'"),
    ("agents:\nsteps:\n", "s.yaml line 1: 'agents' must be a non-empty list, got nothing"),
    ("agents: {p: planner}\nsteps: [{run: p, task: x}]\n", "s.yaml line 1: 'agents' must be a non-empty list, "
     "got {'p': 'planner'}"),
    ("agents: [{name: p, role: planner}]\nsteps: {run: p, task: x}\n", "s.yaml line 2: 'steps' must be a "
     "non-empty list, got {'run': 'p', 'task': 'x'}"),
    ("agents: [{name: p, role: planner}]\nsteps:\n  - parallel: {run: p, task: x}\n", "s.yaml line 3: "
     "'parallel' must be a non-empty list, got {'run': 'p', 'task': 'x'}"),
    ("agents: [{name: p, role: planner}]\nsteps:\n  - parallel:\n", "s.yaml line 3: 'parallel' must be a "
     "non-empty list, got nothing"),
    ("agents: [{name: p, role: planner}]\nsteps: [{run: p, task: x}]\n1: one\n", "s.yaml line 3: keys must be "
     "strings, got 1"),
    ("agents: [{name: p, role: planner}]\nsteps: [{run: p, task: x}]\n[a]: one\n", "s.yaml line 3: keys must be "
     "strings, got ['a']"),
])
def test_scripts_of_the_wrong_shape_are_line_numbered_errors(tmp_path, text, expected):
    assert error_of(tmp_path, text) == expected


def test_an_agent_run_twice_in_one_parallel_step_is_rejected(tmp_path):
    text = GOOD.replace("      - fork: planner\n", "      - run: worker\n        task: Again.\n      - fork: planner\n")
    assert error_of(tmp_path, text) == "s.yaml line 13: agent 'worker' already runs at line 11; each agent runs once"


def test_unreadable_files_are_script_errors(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_bytes(GOOD.encode() + b"# \xff\xfe\n")
    with pytest.raises(ScriptError, match=r"^s\.yaml: not UTF-8 text \(bad byte at offset \d+\)$"):
        load_script(path)
    assert error_of(tmp_path, "agents: " + "[" * 3000 + "]" * 3000) == "s.yaml: malformed YAML (nested too deeply)"
    with pytest.raises(ScriptError, match="^cannot read script"):
        load_script(tmp_path / "missing.yaml")


def test_parse_script_raises_the_script_error_too():
    with pytest.raises(ScriptError, match=r"^inline line 11: 'run' must be the name of one agent, got \['worker'\]$"):
        parse_script(GOOD.replace("- run: worker", "- run: [worker]"), "inline")


GOOD_DATA = yaml.safe_load(GOOD)
WORDS = ["planner", "worker", "a", "coder", "read_file", "{{planner.answer}}", "{{ghost.answer}}", "", "x y"]
KEYS = ["name", "role", "run", "fork", "task", "children", "parallel", "instruction", "tools", "max_turns",
        "limits", "token_budget", "model", "agents", "steps"]
DELETE = object()


def value_paths(value, at=()):
    """Every place in a parsed script a value sits: keys of mappings and indexes of lists, root excluded."""
    if at:
        yield at
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, inner in items:
        yield from value_paths(inner, (*at, key))


PATHS = list(value_paths(GOOD_DATA))
yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 10**20) | st.floats() | st.text(max_size=8) | st.sampled_from(WORDS),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=8)


def edited(data, path, value):
    """`data` with the value at `path` replaced (or removed, for DELETE), unless an earlier edit moved that place."""
    *parents, last = path
    try:
        target = data
        for key in parents:
            target = target[key]
        if value is DELETE:
            del target[last]
        else:
            target[last] = value
    except (KeyError, IndexError, TypeError):
        pass
    return data


def script_error_or_none(text: str) -> str | None:
    """The ScriptError `text` gives, checked to be one line naming a line that exists; never another exception."""
    try:
        parse_script(text, "s", source="s.yaml")
    except ScriptError as exc:
        match = re.fullmatch(r"s\.yaml(?: line (\d+))?: \S.*", str(exc))
        assert match, str(exc)
        assert match.group(1) is None or 1 <= int(match.group(1)) <= text.count("\n") + 1
        return str(exc)
    return None


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(PATHS), yaml_values | st.just(DELETE)), min_size=1, max_size=3))
def test_any_value_of_any_shape_anywhere_is_a_script_error_or_a_valid_script(edits):
    data = copy.deepcopy(GOOD_DATA)
    for path, value in edits:
        data = edited(data, path, value)
    error = script_error_or_none(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    assert error is None or re.match(r"s\.yaml line \d+: ", error)  # dumped YAML is well formed: always a line


@settings(max_examples=150, deadline=None)
@given(st.integers(0, len(GOOD)), st.integers(0, 12), st.text(":-[]{}!&*|>'\"#\n %@`,?\\x01ab", max_size=6))
def test_any_edit_of_the_text_is_a_script_error_or_a_valid_script(at, cut, insert):
    script_error_or_none(GOOD[:at] + insert + GOOD[at + cut:])
