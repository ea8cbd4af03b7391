"""`agentcache run`: its options, and the turn lines and summary it prints."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text

from agentcache import terminal
from agentcache.cli.options import Debug, DtypeOption, QuantOption, SpeculateOption


def run(
    task: Annotated[str, typer.Argument(help="What the agent should do.")],
    repo: Annotated[Path, typer.Option(help="Repository root the agent works in.")] = Path("."),
    model: Annotated[Optional[str], typer.Option(help="Model: a name from `agentcache models` (default: "
                                                 "$AGENTCACHE_MODEL, else the default one), a local HF dir or a hub id.")] = None,
    role: Annotated[Optional[str], typer.Option(help="Agent role: a file in prompts/roles/, or auto (the default: ask "
                                               "in read-only mode, coder otherwise).")] = None,
    max_turns: Annotated[Optional[int], typer.Option(help="Stop after this many requests (at least 1).")] = None,
    max_tokens: Annotated[Optional[int], typer.Option(help="Most tokens per reply (at least 1).")] = None,
    mode: Annotated[Optional[str], typer.Option(help="Permission mode: read-only (no writes), edit (writes inside "
                                                "the repo; the default) or full (edit and the shell).")] = None,
    allow_shell: Annotated[bool, typer.Option("--allow-shell", help="The same as --mode full.")] = False,
    tools: Annotated[Optional[str], typer.Option(help="Comma-separated tools to enable, within the mode (default: "
                                                 "all the mode allows; an unknown name is refused with the list "
                                                 "of known ones).")] = None,
    test_command: Annotated[Optional[str], typer.Option(help="The project's test command: in edit and full modes the "
                            "agent may run exactly it (the run_tests tool), e.g. 'python -m pytest -q'.")] = None,
    samples: Annotated[Optional[int], typer.Option(help="Best-of-n: run N candidates at once on the shared prefix; a "
                       "question's answer by vote, an edit's by the test command in each candidate's copy of the repo "
                       "(default 1).")] = None,
    resume: Annotated[Optional[str], typer.Option(help="Continue a session: its id or 'latest'.")] = None,
    backend: Annotated[Optional[str], typer.Option(help="local (the engine in-process), openai or anthropic.")] = None,
    base_url: Annotated[Optional[str], typer.Option(help="Server for --backend openai, e.g. http://127.0.0.1:8000/v1.")] = None,
    api_key: Annotated[Optional[str], typer.Option(help="API key for --backend openai/anthropic "
                                                   "(default: OPENAI_API_KEY / ANTHROPIC_API_KEY).")] = None,
    routing: Annotated[Optional[str], typer.Option(help="--backend openai: each request's routing key: session "
                       "(the session lineage), prefix (the L1+L2 context id) or none; docs/fleet.md.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON summary at the end.")] = False,
    no_disk_cache: Annotated[bool, typer.Option("--no-disk-cache", help="Neither read nor write KV pages on disk.")]
    = False,
    no_lookup: Annotated[bool, typer.Option("--no-lookup", help="No note after the task with where the names it "
                                            "mentions are defined.")] = False,
    dtype: DtypeOption = None,
    quant: QuantOption = None,
    speculate: SpeculateOption = None,
    debug: Debug = False,
) -> None:
    """Run the agent on TASK in a repo, turn after turn, on a warm prefix.

    Settings come from the repo's agentcache.yaml, then these flags; both are checked the same way.
    Example: agentcache run "Where are words counted?" --repo examples/repo
    """
    from agentcache.errors import AgentcacheError
    from agentcache.wiring import run_task

    if allow_shell and mode not in (None, "full"):
        raise AgentcacheError(f"--allow-shell means --mode full; it disagrees with --mode {mode}")
    overrides = {"model": model, "role": role, "max_turns": max_turns, "max_tokens": max_tokens,
                 "tools": tools.split(",") if tools else None, "mode": "full" if allow_shell else mode,
                 "backend": backend, "base_url": base_url, "disk_cache": False if no_disk_cache else None,
                 "lookup": False if no_lookup else None, "test_command": test_command, "samples": samples,
                 "dtype": dtype, "quant": quant, "routing": routing, "speculate": speculate}
    console = terminal.console(stderr=as_json)
    summary = run_task(repo, task, overrides, resume, api_key=api_key, on_line=lambda line: line and console.print(
        terminal.inert(line), soft_wrap=True, markup=False))
    if as_json:
        terminal.write_json(summary)
    else:
        console.print(Text.assemble((summary["reason"], "bold"), terminal.inert(  # a resumed session's id is data
            f" after {summary['turns']} turns; session {summary['session_id']}")))
        if summary["answer"]:
            console.print(terminal.inert(summary["answer"]), markup=False)
