"""The ToolBox: the tools the agent may run, their specs from prompts/tools, argument checks, errors as outcomes."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from agentcache import PROMPTS_DIR
from agentcache.tools.base import Tool, ToolError, ToolFunction, ToolOutcome
from agentcache.tools.code_blocks import apply_block, code_blocks
from agentcache.tools.files import edit_file, list_files, read_file, write_file
from agentcache.tools.schema import check_arguments
from agentcache.tools.search import search
from agentcache.tools.shell import run_command, test_runner
from agentcache.tools.workspace import Workspace
from layers import LayersError, ToolRegistry

SHELL_TOOL = "run_command"
TEST_TOOL = "run_tests"  # the user's test command (--test-command, a trusted test_command:), in edit and full modes
WRITE_TOOLS = ("write_file", "edit_file")  # the tools that change files: masked in read-only mode
CODE_BLOCK = "code_block"  # a reply's fenced code for a file, applied as an edit (tools.code_blocks)
READ_TOOLS = ("list_files", "read_file", "search", "finish")
MODES: dict[str, tuple[str, ...]] = {  # permission mode -> the tools it allows
    "read-only": READ_TOOLS,
    "edit": (*READ_TOOLS, *WRITE_TOOLS),
    "full": (*READ_TOOLS, *WRITE_TOOLS, SHELL_TOOL),
}


def finish(ws: Workspace, args: dict[str, Any]) -> ToolOutcome:
    return ToolOutcome(args["answer"], finished=True, answer=args["answer"])


def no_tests(ws: Workspace, args: dict[str, Any]) -> ToolOutcome:
    raise ToolError("no test command is set (--test-command, or test_command: in a trusted agentcache.yaml)")


FUNCTIONS: dict[str, ToolFunction] = {
    "list_files": list_files, "read_file": read_file, "search": search, "write_file": write_file,
    "edit_file": edit_file, "run_command": run_command, "run_tests": no_tests, "finish": finish,
}


def mode_tools(mode: str, tools: list[str] | None = None, tests: bool = False) -> set[str]:
    """The tools a run in `mode` may call: the mode's (with run_tests when the user set a test command and the mode
    may edit), narrowed to `tools` when given. A named tool the mode leaves out is refused, so `--tools` never looks
    as if it widened the mode."""
    allowed = set(MODES[mode]) | ({TEST_TOOL} if tests and mode != "read-only" else set())
    outside = sorted(set(tools or ()) - allowed)
    if TEST_TOOL in outside and mode != "read-only":
        raise ToolError(f"{TEST_TOOL} needs a test command (--test-command, or test_command: in a trusted "
                        "agentcache.yaml)")
    if outside:
        wider = next((name for name, names in MODES.items() if set(outside) <= set(names)), "full")
        raise ToolError(f"mode {mode} does not allow {', '.join(outside)} (mode {wider} does)")
    return set(tools) if tools else allowed


def load_tools(tools_dir: Path = PROMPTS_DIR / "tools", registry: ToolRegistry | None = None) -> dict[str, Tool]:
    """The tools whose specs `registry` holds (loaded from `tools_dir` when None), each with its function."""
    try:
        registry = registry if registry is not None else ToolRegistry.from_dir(tools_dir)
    except LayersError as exc:
        raise ToolError(str(exc)) from None
    missing = sorted(set(FUNCTIONS) - set(registry.names()))
    if missing:
        raise ToolError(f"{tools_dir}: no spec for tools: {', '.join(missing)}")
    return {spec.name: Tool(spec, FUNCTIONS[spec.name]) for spec in registry if spec.name in FUNCTIONS}


class ToolBox:
    def __init__(self, root: Path | str, allow_shell: bool = False, enabled: set[str] | None = None,
                 tools_dir: Path = PROMPTS_DIR / "tools", registry: ToolRegistry | None = None,
                 test_command: str = "") -> None:
        self.workspace = Workspace.open(root)
        self.allow_shell = allow_shell
        self.tools = load_tools(tools_dir, registry)
        if test_command and TEST_TOOL in self.tools:
            self.tools[TEST_TOOL] = Tool(self.tools[TEST_TOOL].spec, test_runner(test_command))
        unknown = sorted((enabled or set()) - set(self.tools))
        if unknown:
            raise ToolError(f"unknown tools: {', '.join(unknown)} (known: {', '.join(sorted(self.tools))})")
        self.enabled = set(self.tools) if enabled is None else set(enabled)

    def names(self) -> list[str]:
        return sorted(n for n in self.enabled if n != SHELL_TOOL or self.allow_shell)

    def run(self, name: str, arguments: Any) -> ToolOutcome:
        return self._guarded(name, lambda: self._run(name, arguments))

    def apply_code(self, text: str) -> list[tuple[str, ToolOutcome]]:
        """A reply's fenced code blocks that name files of the repo, each merged into its file by definition
        (tools.code_blocks), when writes are enabled: (path, outcome) per block; [] when there is none."""
        if "edit_file" not in self.enabled:
            return []
        return [(block.path, self._guarded(CODE_BLOCK, lambda block=block: apply_block(self.workspace, block)))
                for block in code_blocks(text, self.workspace)]

    def _guarded(self, name: str, run: Callable[[], ToolOutcome]) -> ToolOutcome:
        try:
            return run()
        except ToolError as exc:
            return ToolOutcome(f"{name}: {exc}", is_error=True)
        except OSError as exc:
            return ToolOutcome(f"{name}: {exc.strerror or exc}", is_error=True)
        except (UnicodeEncodeError, UnicodeDecodeError) as exc:
            return ToolOutcome(f"{name}: text is not valid UTF-8: {exc.reason}", is_error=True)

    def _run(self, name: str, arguments: Any) -> ToolOutcome:
        if name not in self.tools:
            raise ToolError(f"unknown tool (known: {', '.join(sorted(self.tools))})")
        if name == SHELL_TOOL and not self.allow_shell:
            raise ToolError("shell commands are disabled; run with --mode full (or --allow-shell) to enable them")
        if name not in self.enabled:
            raise ToolError(f"tool is disabled (enabled: {', '.join(self.names()) or 'none'})")
        tool = self.tools[name]
        args = check_arguments(arguments, tool.spec.parameters)
        if isinstance(args.get("path"), str):  # `mod.py:533` names mod.py (read from line 533 unless asked otherwise)
            path, line = self.workspace.without_line(args["path"])
            if line is not None:
                args = {**args, "path": path}
                if "start_line" in tool.spec.parameters.get("properties", {}):
                    args.setdefault("start_line", line)
        return tool.function(self.workspace, args)
