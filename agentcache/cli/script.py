"""`agentcache script`: its options, the live view while it runs and the report it prints."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from agentcache import terminal
from agentcache.cli.options import Debug


def script(
    file: Annotated[Path, typer.Argument(help="The script: a YAML file of agents and steps.")],
    repo: Annotated[Path, typer.Option(help="Repository root every agent works in.")] = Path("."),
    model: Annotated[Optional[str], typer.Option(help="One model for every agent (default: the script's).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False,
    debug: Debug = False,
) -> None:
    """Run a multi-agent script: steps in order, parallel agents and forks concurrently, on one shared prefix cache.

    Example: agentcache script examples/scripts/fanout.yaml --repo examples/repo
    """
    from agentcache.script.report import script_report
    from agentcache.script.view import ScriptView, render_report
    from agentcache.wiring import open_script_run

    console = terminal.console(stderr=as_json)
    view = ScriptView(console)
    run_ = open_script_run(file, repo, model, view.on_event)
    with view.showing(run_):
        run_.run()
    report = script_report(run_)
    if as_json:
        terminal.write_json(report)
    else:
        render_report(report, console)
