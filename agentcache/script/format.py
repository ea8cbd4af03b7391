"""The YAML format of `agentcache script`: agents, steps, forks and answer passing, checked with line numbers."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agentcache import PROMPTS_DIR
from agentcache.config import BACKENDS
from agentcache.errors import AgentcacheError
from agentcache.tools.toolbox import MODES
from layers import ToolRegistry
from layers.l1 import available_roles

AGENT_KEYS = ("name", "role", "model", "backend", "tools", "mode", "allow_shell", "max_turns", "max_tokens",
              "token_budget")
LIMIT_KEYS = ("max_turns", "max_tokens", "token_budget")
CHILD_KEYS = ("name", "instruction", "tools", *LIMIT_KEYS)
FORK_KEYS = ("fork", "children", "tools", *LIMIT_KEYS)
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
TEMPLATE = re.compile(r"\{\{(.*?)\}\}")
ANSWER_REF = re.compile(r"\s*([A-Za-z][A-Za-z0-9_-]*)\.answer\s*")


class ScriptError(AgentcacheError):
    """A script that cannot run: reported before any agent starts."""


@dataclass(slots=True)
class AgentSpec:
    name: str
    role: str
    line: int
    tools: list[str] | None = None
    mode: str | None = None  # None: the run's mode (agentcache.yaml or the default)
    max_turns: int | None = None
    max_tokens: int | None = None
    token_budget: int | None = None
    parent: str | None = None  # set for a fork child: it starts from this agent's final context
    backend: str | None = None  # one backend serves a script: the wiring refuses any other


@dataclass(slots=True)
class Launch:
    """One agent started by a step: a task for a fresh agent, or the one instruction a fork child appends."""

    agent: str
    task: str
    line: int


@dataclass(slots=True)
class Script:
    name: str
    model: str | None
    agents: dict[str, AgentSpec]
    steps: list[list[Launch]]  # steps run in order; the launches of one step run concurrently
    max_turns: int | None = None
    token_budget: int | None = None
    step_of: dict[str, int] = field(default_factory=dict)
    source: str = ""  # what its errors name: the file's name


def answer_refs(text: str) -> list[str]:
    """Agent names whose answers a task text uses, as `{{NAME.answer}}`."""
    return [m.group(1) for m in map(ANSWER_REF.fullmatch, TEMPLATE.findall(text)) if m]


def fill_answers(text: str, answers: dict[str, str]) -> str:
    return TEMPLATE.sub(lambda m: answers[ANSWER_REF.fullmatch(m.group(1)).group(1)], text)


class _Map(dict):
    line: int
    lines: dict[str, int]


class _Seq(list):
    line: int
    lines: list[int]


class _Loader(yaml.SafeLoader):
    """A safe loader whose mappings and sequences remember the line of each key and item."""


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> _Map:
    loader.flatten_mapping(node)
    out = _Map()
    out.line, out.lines = node.start_mark.line + 1, {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, str):
            raise _Invalid(line, f"keys must be strings, got {key!r}")
        if key in out:
            raise _Invalid(line, f"duplicate key {_shown(key)}")
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[key] = line
    return out


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> _Seq:
    out = _Seq(loader.construct_object(item, deep=True) for item in node.value)
    out.line, out.lines = node.start_mark.line + 1, [item.start_mark.line + 1 for item in node.value]
    return out


def _construct_str(loader: _Loader, node: yaml.ScalarNode) -> str:
    """A string; `\\ud83d\\ude00` escapes joined into one character as in JSON, and a lone surrogate escape (no
    UTF-8 holds one) refused at the string's line."""
    text = loader.construct_scalar(node)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        data = text.encode("utf-16-le", "surrogatepass")
    try:
        return data.decode("utf-16-le")
    except UnicodeDecodeError as exc:
        lone = int.from_bytes(data[exc.start:exc.start + 2], "little")
        raise _Invalid(node.start_mark.line + 1, f"a string holds a lone surrogate \\u{lone:04x}, which is not "
                                                 "text") from None


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_seq)
_Loader.add_constructor("tag:yaml.org,2002:str", _construct_str)


class _Invalid(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


def load_script(path: Path, prompts_dir: Path = PROMPTS_DIR, registry: ToolRegistry | None = None) -> Script:
    """The checked script at `path`; ScriptError `FILE line N: ...` for anything that could not run."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScriptError(f"cannot read script {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ScriptError(f"{path.name}: not UTF-8 text (bad byte at offset {exc.start})") from None
    return parse_script(text, path.stem, prompts_dir, source=path.name, registry=registry)


def parse_script(text: str, name: str, prompts_dir: Path = PROMPTS_DIR, source: str | None = None,
                 registry: ToolRegistry | None = None) -> Script:
    """The checked script `name` in `text`; ScriptError `SOURCE line N: ...` (SOURCE: `name` unless given).
    `registry`: the run's tool specs (loaded from `prompts_dir` when None)."""
    source = source or name
    try:
        registry = registry if registry is not None else ToolRegistry.from_dir(prompts_dir / "tools")
        return _parse(text, name, prompts_dir, registry.names(), source)
    except _Invalid as exc:
        raise ScriptError(f"{source} line {exc.line}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ScriptError(f"{source}{_yaml_error_where(exc, text)}: malformed YAML "
                          f"({getattr(exc, 'problem', None) or str(exc).splitlines()[0]})") from None
    except RecursionError:
        raise ScriptError(f"{source}: malformed YAML (nested too deeply)") from None


def _yaml_error_where(exc: yaml.YAMLError, text: str) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        return f" line {mark.line + 1}"
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML does not allow: no mark, only an offset
        return f" line {text.count(chr(10), 0, exc.position) + 1}"
    return ""


def _parse(text: str, name: str, prompts_dir: Path, tools: list[str], source: str) -> Script:
    data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    if not isinstance(data, _Map):
        raise _Invalid(1, "a script is a mapping with 'agents' and 'steps'")
    _check_keys(data, ("model", "limits", "agents", "steps"), "script")
    limits = _limits(data)
    roles = available_roles(prompts_dir)
    agents = {spec.name: spec for spec in _agents(data, roles, tools)}
    script = Script(name, _optional_str(data, "model"), agents, [], limits.get("max_turns"), limits.get("token_budget"),
                    source=source)
    for index, (step, line) in enumerate(zip(_required_seq(data, "steps"), data["steps"].lines)):
        script.steps.append(_step(step, line, script, tools))
        for launch in script.steps[-1]:
            script.step_of[launch.agent] = index
    _check_all_run(script)
    _check_order(script)
    return script


def _shown(value: Any) -> str:
    """A YAML value as an error message quotes it; an empty value (null) reads as `nothing`."""
    return "nothing" if value is None else repr(value).replace('"', "'")


def _check_keys(data: _Map, known: tuple[str, ...], what: str) -> None:
    for key in data:
        if key not in known:
            raise _Invalid(data.lines[key], f"unknown key {_shown(key)} in {what} (known: {', '.join(known)})")


def _line(data: _Map, key: str) -> int:
    return data.lines.get(key, data.line)


def _required_seq(data: _Map, key: str) -> _Seq:
    value = data.get(key)
    if not isinstance(value, _Seq) or not value:
        raise _Invalid(_line(data, key), f"'{key}' must be a non-empty list, got {_shown(value)}")
    return value


def _optional_str(data: _Map, key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise _Invalid(_line(data, key), f"'{key}' must be a string, got {_shown(value)}")
    return value


def _optional_int(data: _Map, key: str) -> int | None:
    value = data.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise _Invalid(_line(data, key), f"'{key}' must be a positive integer, got {_shown(value)}")
    return value


def _limits(data: _Map) -> dict[str, int | None]:
    limits = data.get("limits")
    if limits is None:
        return {}
    if not isinstance(limits, _Map):
        raise _Invalid(_line(data, "limits"), f"'limits' must be a mapping of max_turns and token_budget, "
                                              f"got {_shown(limits)}")
    _check_keys(limits, ("max_turns", "token_budget"), "limits")
    return {key: _optional_int(limits, key) for key in ("max_turns", "token_budget")}


def _tool_list(data: _Map, known: list[str]) -> list[str] | None:
    value = data.get("tools")
    if value is None:
        return None
    if not isinstance(value, _Seq) or not all(isinstance(t, str) for t in value):
        raise _Invalid(_line(data, "tools"), f"'tools' must be a list of tool names, got {_shown(value)}")
    for tool, line in zip(value, value.lines):
        if tool not in known:
            raise _Invalid(line, f"unknown tool {_shown(tool)} (known: {', '.join(known)})")
    return list(value)


def _name(data: _Map, what: str, taken: dict[str, AgentSpec]) -> str:
    name = data.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise _Invalid(_line(data, "name"), f"{what} needs a 'name' of letters, digits, '-' or '_', "
                                            f"got {_shown(name)}")
    if name in taken:
        raise _Invalid(_line(data, "name"), f"agent '{name}' is already defined at line {taken[name].line}")
    return name


def _agents(data: _Map, roles: list[str], tools: list[str]) -> list[AgentSpec]:
    specs: dict[str, AgentSpec] = {}
    for item, line in zip(_required_seq(data, "agents"), data["agents"].lines):
        if not isinstance(item, _Map):
            raise _Invalid(line, "each agent is a mapping with 'name' and 'role'")
        _check_keys(item, AGENT_KEYS, "an agent")
        name = _name(item, "an agent", specs)
        role = item.get("role")
        if not isinstance(role, str):
            raise _Invalid(_line(item, "role"), f"'role' must be a role name (known: {', '.join(roles)}), "
                                                f"got {_shown(role)}")
        if role not in roles:
            raise _Invalid(_line(item, "role"), f"unknown role {_shown(role)} (known: {', '.join(roles)})")
        model = _optional_str(item, "model")
        if model is not None and model != data.get("model"):
            raise _Invalid(_line(item, "model"), f"agent '{name}' asks for model {_shown(model)} but one model "
                                                 f"serves the whole script: set the top-level 'model' instead")
        backend = _optional_str(item, "backend")
        if backend is not None and backend not in BACKENDS:
            raise _Invalid(_line(item, "backend"), f"unknown backend {_shown(backend)} (known: {', '.join(BACKENDS)})")
        specs[name] = AgentSpec(name, role, item.line, _tool_list(item, tools), _mode(item),
                                *(_optional_int(item, key) for key in LIMIT_KEYS), backend=backend)
    return list(specs.values())


def _mode(item: _Map) -> str | None:
    """An agent's permission mode, if it sets one; `allow_shell` is the older spelling of `mode: full`
    (false: `mode: edit`), and the two disagreeing is refused."""
    mode, shell = item.get("mode"), item.get("allow_shell")
    if mode is not None and mode not in MODES:
        raise _Invalid(_line(item, "mode"), f"unknown mode {_shown(mode)} (known: {', '.join(MODES)})")
    if shell is not None and not isinstance(shell, bool):
        raise _Invalid(_line(item, "allow_shell"), "'allow_shell' must be true or false")
    if shell is None:
        return mode
    if mode is not None and shell != (mode == "full"):
        raise _Invalid(_line(item, "allow_shell"), f"'allow_shell: {str(shell).lower()}' disagrees with "
                                                   f"'mode: {mode}' (allow_shell: true means mode: full); "
                                                   f"keep only 'mode'")
    return "full" if shell else mode or "edit"


def _task(data: _Map, key: str) -> str:
    text = data.get(key)
    if not isinstance(text, str) or not text.strip():
        raise _Invalid(_line(data, key), f"'{key}' must be a non-empty string, got {_shown(text)}")
    for inner in TEMPLATE.findall(text):
        if not ANSWER_REF.fullmatch(inner):
            raise _Invalid(_line(data, key), f"unknown template '{{{{{inner}}}}}' (use {{{{AGENT.answer}}}})")
    return text


def _step(step: Any, line: int, script: Script, tools: list[str]) -> list[Launch]:
    if not isinstance(step, _Map):
        raise _Invalid(line, f"a step is a mapping: 'run', 'fork' or 'parallel', got {_shown(step)}")
    if "parallel" in step:
        _check_keys(step, ("parallel",), "a parallel step")
        items = _required_seq(step, "parallel")
        launches: list[Launch] = []
        for item, item_line in zip(items, items.lines):
            if isinstance(item, _Map) and "parallel" in item:
                raise _Invalid(item_line, "a parallel step cannot nest another parallel step")
            for launch in _step(item, item_line, script, tools):
                _check_not_run(script, launch.agent, launch.line, launches)
                launches.append(launch)
        return launches
    if "fork" in step:
        return _fork(step, script, tools)
    if "run" in step:
        return [_run(step, script)]
    raise _Invalid(line, "a step needs one of 'run', 'fork' or 'parallel'")


def _run(step: _Map, script: Script) -> Launch:
    _check_keys(step, ("run", "task"), "a run step")
    name = _agent_name(step, "run")
    if name not in script.agents or script.agents[name].parent is not None:
        raise _Invalid(_line(step, "run"), f"unknown agent {_shown(name)} (defined: {', '.join(_defined(script))})")
    _check_not_run(script, name, _line(step, "run"))
    return Launch(name, _task(step, "task"), _line(step, "run"))


def _fork(step: _Map, script: Script, tools: list[str]) -> list[Launch]:
    _check_keys(step, FORK_KEYS, "a fork step")
    parent_name = _agent_name(step, "fork")
    if parent_name not in script.agents:
        raise _Invalid(_line(step, "fork"), f"fork of unknown agent {_shown(parent_name)} "
                                             f"(defined: {', '.join(_defined(script))})")
    children = step.get("children")
    if not isinstance(children, _Seq) or not children:
        raise _Invalid(_line(step, "children" if "children" in step else "fork"),
                       f"a fork needs 'children': a list of {{name, instruction}}, got {_shown(children)}")
    parent = script.agents[parent_name]
    shared_tools = _tool_list(step, tools)
    shared_limits = {key: _optional_int(step, key) for key in LIMIT_KEYS}
    launches = []
    for child, line in zip(children, children.lines):
        if not isinstance(child, _Map):
            raise _Invalid(line, f"each fork child is a mapping with 'name' and 'instruction', got {_shown(child)}")
        _check_keys(child, CHILD_KEYS, "a fork child (it inherits its parent's role and context)")
        name = _name(child, "a fork child", script.agents)
        limits = {key: _optional_int(child, key) or shared_limits[key] or getattr(parent, key) for key in LIMIT_KEYS}
        script.agents[name] = AgentSpec(name, parent.role, child.line, _tool_list(child, tools) or shared_tools or
                                        parent.tools, parent.mode, parent=parent_name, **limits)
        launches.append(Launch(name, _task(child, "instruction"), line))
    return launches


def _agent_name(step: _Map, key: str) -> str:
    """The one agent a `run` or `fork` step names: a string, never a list, mapping, number or nothing."""
    name = step.get(key)
    if not isinstance(name, str):
        raise _Invalid(_line(step, key), f"'{key}' must be the name of one agent, got {_shown(name)}")
    return name


def _defined(script: Script) -> list[str]:
    return [name for name, spec in script.agents.items() if spec.parent is None]


def _check_not_run(script: Script, name: str, line: int, this_step: list[Launch] | None = None) -> None:
    for step in [*script.steps, this_step or []]:
        for launch in step:
            if launch.agent == name:
                raise _Invalid(line, f"agent '{name}' already runs at line {launch.line}; each agent runs once")


def _check_all_run(script: Script) -> None:
    for name, spec in script.agents.items():
        if name not in script.step_of:
            raise _Invalid(spec.line, f"agent '{name}' is defined but no step runs it")


def _needs(script: Script) -> dict[str, list[str]]:
    """For each agent, the agents it waits for: answers its task uses, and the parent it forks from."""
    tasks = {launch.agent: launch for step in script.steps for launch in step}
    needs: dict[str, list[str]] = {}
    for name, launch in tasks.items():
        refs = answer_refs(launch.task)
        for ref in refs:
            if ref not in script.agents:
                raise _Invalid(launch.line, f"'{{{{{ref}.answer}}}}' refers to unknown agent '{ref}'")
        parent = script.agents[name].parent
        needs[name] = refs + ([parent] if parent else [])
    return needs


def _check_order(script: Script) -> None:
    """Every agent waited for must run in an earlier step; a loop of waits is reported as a cycle."""
    needs = _needs(script)
    for start in needs:
        path = _cycle_from(start, needs, [])
        if path:
            line = next(launch.line for step in script.steps for launch in step if launch.agent == start)
            raise _Invalid(line, f"cycle between steps: {' -> '.join(path)} (each waits for the next one's answer)")
    for step in script.steps:
        for launch in step:
            for need in needs[launch.agent]:
                if script.step_of[need] >= script.step_of[launch.agent]:
                    when = "in the same step" if script.step_of[need] == script.step_of[launch.agent] else "later"
                    raise _Invalid(launch.line, f"'{launch.agent}' waits for '{need}', which runs {when}; "
                                                f"an answer or fork parent must come from an earlier step")


def _cycle_from(name: str, needs: dict[str, list[str]], path: list[str]) -> list[str]:
    if name in path:
        return [*path[path.index(name):], name]
    for need in needs.get(name, []):
        found = _cycle_from(need, needs, [*path, name])
        if found:
            return found
    return []
