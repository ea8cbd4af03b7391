"""The `agentcache` command line: a typer app with one subcommand per verb."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from agentcache.errors import AgentcacheError
from layers import Context, L2Config, LayersError, TiktokenCounter, build_prefix, lint_blocks
from layers.lint import Finding

app = typer.Typer(
    name="agentcache",
    help="A cache-aware agent harness: byte-stable layered prompts on a shared-prefix KV engine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Debug = Annotated[bool, typer.Option("--debug", help="Show a full traceback on errors.")]


@app.callback()
def root(debug: Debug = False) -> None:
    """Assemble context in layers (L1 role+tools, L2 repo, L3 turns) so the prefix stays cached."""


def _block_rows(context: Context) -> list[dict[str, object]]:
    counter = TiktokenCounter()
    return [
        {"layer": b.layer.name, "kind": b.kind, "key": b.key, "tokens": counter.count(b.text), "hash": b.hash}
        for b in context
    ]


def _print_json(context: Context, rows: list[dict[str, object]], findings: list[Finding]) -> None:
    report = {
        "context_id": context.context_id,
        "layers": context.layer_hashes(),
        "blocks": rows,
        "lint": [f.to_dict() for f in findings],
    }
    sys.stdout.write(json.dumps(report, indent=2) + "\n")


def _print_table(context: Context, rows: list[dict[str, object]], findings: list[Finding]) -> None:
    console = Console(highlight=False)
    table = Table(title="context layers")
    for column in ("layer", "kind", "key", "tokens", "hash"):
        table.add_column(column, justify="right" if column == "tokens" else "left", overflow="fold")
    for row in rows:
        table.add_row(row["layer"], row["kind"], row["key"], str(row["tokens"]), str(row["hash"])[:12])
    console.print(table)
    for layer, digest in context.layer_hashes().items():
        console.print(f"{layer} hash     {digest}")
    console.print(f"context id  {context.context_id}")
    for finding in findings:
        console.print(f"[yellow]warning:[/yellow] volatile content in {finding}", markup=True)


def _inspect_session(repo: Path, ref: str, as_json: bool) -> None:
    from agentcache.inspect_session import load_session, render_session, session_view

    session = load_session(repo, ref)
    records = session.records()
    view = session_view(session.id, records)
    if as_json:
        sys.stdout.write(json.dumps(view, indent=2) + "\n")
    else:
        render_session(view, records, Console(highlight=False))


@app.command()
def inspect(
    session: Annotated[Optional[str], typer.Argument(help="Session id or 'latest' (the default) to show.")] = None,
    layers: Annotated[bool, typer.Option("--layers", help="Show the L1+L2 blocks built for a repo.")] = False,
    repo: Annotated[Path, typer.Option(help="Repository root: its sessions, or its L2 with --layers.")] = Path("."),
    role: Annotated[str, typer.Option(help="Agent role: a file in <prompts>/roles/.")] = "coder",
    prompts: Annotated[Optional[Path], typer.Option(help="Prompts directory (default: the bundled prompts/).")] = None,
    skills: Annotated[str, typer.Option(help="Skills folder, relative to the repo root.")] = "skills",
    max_tree: Annotated[int, typer.Option(min=1, help="Most paths listed in the tree block.")] = 500,
    budget: Annotated[Optional[int], typer.Option(min=1, help="Token budget for L2 (cut deterministically).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Fail on volatile content in L1/L2.")] = False,
    debug: Debug = False,
) -> None:
    """Show a session's requests (tokens, hit rates, TTFT) or, with --layers, how a context is laid out.

    Examples: agentcache inspect latest --repo examples/repo
              agentcache inspect --layers --repo examples/repo --role coder
    """
    if not layers:
        _inspect_session(repo, session or "latest", as_json)
        return
    config = L2Config(skills_dir=skills, max_tree_entries=max_tree, token_budget=budget)
    context = build_prefix(repo, role=role, prompts_dir=prompts, config=config)
    findings = lint_blocks(context, strict=strict)
    rows = _block_rows(context)
    (_print_json if as_json else _print_table)(context, rows, findings)


@app.command()
def run(
    task: Annotated[str, typer.Argument(help="What the agent should do.")],
    repo: Annotated[Path, typer.Option(help="Repository root the agent works in.")] = Path("."),
    model: Annotated[Optional[str], typer.Option(help="Model: the embedded default, a local HF dir, or a hub id.")] = None,
    role: Annotated[Optional[str], typer.Option(help="Agent role: a file in prompts/roles/.")] = None,
    max_turns: Annotated[Optional[int], typer.Option(min=1, help="Stop after this many requests.")] = None,
    max_tokens: Annotated[Optional[int], typer.Option(min=1, help="Most tokens per reply.")] = None,
    allow_shell: Annotated[bool, typer.Option("--allow-shell", help="Enable the run_command tool.")] = False,
    tools: Annotated[Optional[str], typer.Option(help="Comma-separated tools to enable (default: all).")] = None,
    resume: Annotated[Optional[str], typer.Option(help="Continue a session: its id or 'latest'.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON summary at the end.")] = False,
    debug: Debug = False,
) -> None:
    """Run the agent on TASK in a repo, turn after turn, on a warm prefix.

    Example: agentcache run "Where are words counted?" --repo examples/repo
    """
    from agentcache.runner import run_task

    overrides = {"model": model, "role": role, "max_turns": max_turns, "max_tokens": max_tokens,
                 "tools": tools.split(",") if tools else None, "allow_shell": allow_shell or None}
    console = Console(highlight=False, stderr=as_json)
    summary = run_task(repo, task, overrides, resume, on_line=lambda line: line and console.print(line, soft_wrap=True, markup=False))
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        console.print(f"[bold]{summary['reason']}[/bold] after {summary['turns']} turns; "
                      f"session {summary['session_id']}")
        if summary["answer"]:
            console.print(summary["answer"], markup=False)


def _user_error_types() -> tuple[type[Exception], ...]:
    types: list[type[Exception]] = [LayersError, AgentcacheError]
    engine_errors = sys.modules.get("engine.errors")
    if engine_errors is not None:
        types.append(engine_errors.EngineError)
    return tuple(types)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    try:
        app(args=args, prog_name="agentcache")
    except Exception as exc:
        if "--debug" in args or not isinstance(exc, _user_error_types()):
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
