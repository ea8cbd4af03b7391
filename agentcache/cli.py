"""The `agentcache` command line: a typer app with one subcommand per verb."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from agentcache import PROMPTS_DIR
from agentcache.cache_cmd import cache_app
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

app.add_typer(cache_app, name="cache")

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
    for column in ("layer", "kind", "key", "tokens", "hash", "status"):
        table.add_column(column, justify="right" if column == "tokens" else "left", overflow="fold")
    for row in rows:
        table.add_row(row["layer"], row["kind"], row["key"], str(row["tokens"] if row["tokens"] is not None else "-"),
                      str(row["hash"])[:12], str(row["status"] or "-"))
    console.print(table)
    for layer, digest in context.layer_hashes().items():
        console.print(f"{layer} hash     {digest}")
    console.print(f"context id  {context.context_id}")
    for finding in findings:
        console.print(f"[yellow]warning:[/yellow] volatile content in {finding}", markup=True)


def _read_session(repo: Path, ref: str) -> tuple[object, list[dict], list[int]]:
    """Valid records of a session; each bad line is one warning on stderr; nothing valid is an error."""
    from agentcache.inspect.session_view import load_session

    session = load_session(repo, ref)
    records, bad = session.read()
    for line in bad:
        print(line.warning(session.id), file=sys.stderr)
    if bad and not records:
        raise AgentcacheError(f"session {session.id} has no valid record")
    return session, records, [line.number for line in bad]


def _inspect_session(repo: Path, ref: str, as_json: bool, explain: bool, cache_ttl: str | None) -> None:
    from agentcache.config import load_config
    from agentcache.inspect.misses import explain_view, render_explain
    from agentcache.inspect.session_view import render_session, session_view

    session, records, bad = _read_session(repo, ref)
    if explain:
        view = explain_view(session, records)
        view["bad_lines"] = bad
        if not as_json:
            render_explain(view, Console(highlight=False))
    else:
        recorded = next((r["cache_ttl"] for r in reversed(records) if r.get("cache_ttl")), None)
        view = session_view(session.id, records, bad, cache_ttl or recorded or load_config(repo).cache_ttl)
        if not as_json:
            render_session(view, records, Console(highlight=False))
    if as_json:
        sys.stdout.write(json.dumps(view, indent=2) + "\n")


def _inspect_diff(repo: Path, refs: tuple[str, str], as_json: bool) -> None:
    from agentcache.inspect.misses import diff_view, render_diff

    for ref in refs:
        if ref.startswith("-"):
            raise AgentcacheError(f"--diff takes two ids (session ids or SESSION:INDEX); '{ref}' is not one")
    view = diff_view(repo, *refs)
    for session_id, line in view.pop("bad"):
        print(line.warning(session_id), file=sys.stderr)
    if as_json:
        sys.stdout.write(json.dumps(view, indent=2) + "\n")
    else:
        render_diff(view, Console(highlight=False))


def _add_status(repo: Path, rows: list[dict[str, object]], context: Context) -> list[dict[str, object]]:
    """Rows gain `status` against the last request of the repo's latest session (None without a session)."""
    from agentcache.inspect.explain import block_status
    from agentcache.inspect.session_view import request_records
    from agentcache.session import Session

    try:
        session = Session.open(repo, "latest")
    except AgentcacheError:
        session = None
    records, bad = session.read() if session else ([], [])
    for line in bad:
        print(line.warning(session.id), file=sys.stderr)
    requests = request_records(records)
    if not requests:
        return [{**row, "status": None, "cause": None} for row in rows]
    last = [b for b in requests[-1].get("blocks", []) if b.get("layer") != "L3"]
    current = [{"layer": b.layer.name, "kind": b.kind, "key": b.key, "hash": b.hash} for b in context]
    tokens = {(r["layer"], r["kind"], r["key"]): r["tokens"] for r in rows}
    return [{**row, "tokens": tokens.get((row["layer"], row["kind"], row["key"]))}
            for row in block_status(current, last)]


@app.command()
def inspect(
    session: Annotated[Optional[str], typer.Argument(help="Session id or 'latest' (the default) to show.")] = None,
    layers: Annotated[bool, typer.Option("--layers", help="Show the L1+L2 blocks built for a repo.")] = False,
    repo: Annotated[Path, typer.Option(help="Repository root: its sessions, or its L2 with --layers.")] = Path("."),
    role: Annotated[str, typer.Option(help="Agent role: a file in <prompts>/roles/.")] = "coder",
    prompts: Annotated[Optional[Path], typer.Option(help="Prompts directory (default: the package's own prompts/).")] = None,
    skills: Annotated[str, typer.Option(help="Skills folder, relative to the repo root.")] = "skills",
    max_tree: Annotated[int, typer.Option(min=1, help="Most paths listed in the tree block.")] = 500,
    budget: Annotated[Optional[int], typer.Option(min=1, help="Token budget for L2 (cut deterministically).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Fail on volatile content in L1/L2.")] = False,
    explain: Annotated[bool, typer.Option("--explain", help="Explain every request that reused less than "
                                          "the previous prompt allowed: block, byte, token and cause.")] = False,
    diff: Annotated[Optional[tuple[str, str]], typer.Option(
        "--diff", metavar="A B", help="Compare two sessions (last request of the earlier vs first of the later) "
        "or two SESSION:INDEX requests, block by block.")] = None,
    cache_ttl: Annotated[Optional[str], typer.Option(
        "--cache-ttl", help="Cache TTL the billed cost assumes: 5m or 1h (Anthropic writes cost 1.25x or 2x input; "
        "default: the TTL the session's requests recorded, else the repo's agentcache.yaml cache_ttl, else 5m).")] = None,
    debug: Debug = False,
) -> None:
    """Show a session's requests (tokens, hit rates, TTFT, cost), explain its misses, diff two requests,
    or, with --layers, how a context is laid out and what changed since the last session.

    Examples: agentcache inspect latest --repo examples/repo
              agentcache inspect --explain --repo examples/repo
              agentcache inspect --diff SESSION_A SESSION_B --repo examples/repo
              agentcache inspect --layers --repo examples/repo --role coder
    """
    if diff is not None:
        _inspect_diff(repo, diff, as_json)
        return
    if not layers:
        _inspect_session(repo, session or "latest", as_json, explain, cache_ttl)
        return
    config = L2Config(skills_dir=skills, max_tree_entries=max_tree, token_budget=budget)
    context = build_prefix(repo, prompts or PROMPTS_DIR, role=role, config=config)
    findings = lint_blocks(context, strict=strict)
    rows = _add_status(repo, _block_rows(context), context)
    (_print_json if as_json else _print_table)(context, rows, findings)


@app.command()
def run(
    task: Annotated[str, typer.Argument(help="What the agent should do.")],
    repo: Annotated[Path, typer.Option(help="Repository root the agent works in.")] = Path("."),
    model: Annotated[Optional[str], typer.Option(help="Model: the embedded default, a local HF dir, or a hub id.")] = None,
    role: Annotated[Optional[str], typer.Option(help="Agent role: a file in prompts/roles/.")] = None,
    max_turns: Annotated[Optional[int], typer.Option(help="Stop after this many requests (at least 1).")] = None,
    max_tokens: Annotated[Optional[int], typer.Option(help="Most tokens per reply (at least 1).")] = None,
    allow_shell: Annotated[bool, typer.Option("--allow-shell", help="Enable the run_command tool.")] = False,
    tools: Annotated[Optional[str], typer.Option(help="Comma-separated tools to enable (default: all; an unknown "
                                                 "name is refused with the list of known ones).")] = None,
    resume: Annotated[Optional[str], typer.Option(help="Continue a session: its id or 'latest'.")] = None,
    backend: Annotated[Optional[str], typer.Option(help="local (the engine in-process), openai or anthropic.")] = None,
    base_url: Annotated[Optional[str], typer.Option(help="Server for --backend openai, e.g. http://127.0.0.1:8000/v1.")] = None,
    api_key: Annotated[Optional[str], typer.Option(help="API key for --backend openai/anthropic "
                                                   "(default: OPENAI_API_KEY / ANTHROPIC_API_KEY).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON summary at the end.")] = False,
    no_disk_cache: Annotated[bool, typer.Option("--no-disk-cache", help="Neither read nor write KV pages on disk.")]
    = False,
    debug: Debug = False,
) -> None:
    """Run the agent on TASK in a repo, turn after turn, on a warm prefix.

    Settings come from the repo's agentcache.yaml, then these flags; both are checked the same way.
    Example: agentcache run "Where are words counted?" --repo examples/repo
    """
    from agentcache.wiring import run_task

    overrides = {"model": model, "role": role, "max_turns": max_turns, "max_tokens": max_tokens,
                 "tools": tools.split(",") if tools else None, "allow_shell": allow_shell or None,
                 "backend": backend, "base_url": base_url, "disk_cache": False if no_disk_cache else None}
    console = Console(highlight=False, stderr=as_json)
    summary = run_task(repo, task, overrides, resume, api_key=api_key,
                       on_line=lambda line: line and console.print(line, soft_wrap=True, markup=False))
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        console.print(f"[bold]{summary['reason']}[/bold] after {summary['turns']} turns; "
                      f"session {summary['session_id']}")
        if summary["answer"]:
            console.print(summary["answer"], markup=False)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = 8000,
    model: Annotated[str, typer.Option(help="Model: the embedded default, a local HF dir, or a hub id.")] = "smollm2-135m-instruct",
    api_key: Annotated[Optional[str], typer.Option(help="Require 'Authorization: Bearer KEY' on every request.",
                                                   envvar="AGENTCACHE_SERVE_API_KEY")] = None,
    insecure_no_auth: Annotated[bool, typer.Option(
        "--insecure-no-auth", help="Serve a non-loopback --host without --api-key: anyone who can reach it may use "
        "it. Without this flag such a bind is refused.")] = False,
    debug: Debug = False,
) -> None:
    """Serve the engine over an OpenAI-compatible HTTP API with explicit context caching.

    Endpoints: POST /v1/chat/completions, GET /v1/models, POST/GET/DELETE /v1/contexts, GET /health, GET /metrics.
    Example: agentcache serve --port 8000
    """
    from agentcache.serve.app import serve as run_server

    run_server(host, port, model, api_key, log=lambda line: print(line, file=sys.stderr),
               insecure_no_auth=insecure_no_auth)


@app.command()
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
    from agentcache.script.format import load_script
    from agentcache.script.report import script_report
    from agentcache.script.run import open_script_run
    from agentcache.script.view import ScriptView, render_report

    checked = load_script(file)
    console = Console(highlight=False, stderr=as_json)
    view = ScriptView(console)
    run_ = open_script_run(checked, repo, model, view.on_event)
    with view.showing(run_):
        run_.run()
    report = script_report(run_)
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        render_report(report, console)


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
