"""`agentcache inspect`: its modes (session view, --explain, --diff, --layers), their options and tables."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table
from rich.text import Text

from agentcache import PROMPTS_DIR, terminal
from agentcache.cli.options import Debug
from agentcache.errors import AgentcacheError
from layers import MAP_TOKENS, Context, L2Config, TiktokenCounter, build_prefix, lint_blocks
from layers.lint import Finding

MODE_FLAGS = ("explain", "diff", "layers")  # none of them: the session view
MODE_NAMES = {"view": "the session view", "explain": "--explain", "diff": "--diff", "layers": "--layers"}
LAYERS_ONLY = ("role", "prompts", "skills", "max_tree", "budget", "map_tokens", "strict")
APPLIES_TO = {"session": ("view", "explain"), "cache_ttl": ("view",), **{name: ("layers",) for name in LAYERS_ONLY}}


def _shown(param: Any) -> str:
    return param.opts[0] if param.param_type_name == "option" else "a SESSION argument"


def _check_options(ctx: typer.Context, diff: tuple[str, str] | None) -> None:
    """Refuse two modes (view, explain, diff, layers), or an option given that does not apply to the chosen one:
    an error, never silently ignored."""
    for ref in diff or ():  # first: an option taken for an id shifts what follows it
        if ref.startswith("-"):
            raise AgentcacheError(f"--diff takes two ids (session ids or SESSION:INDEX); '{ref}' is not one")
    given = {p.name: p for p in ctx.command.params if ctx.get_parameter_source(p.name).name == "COMMANDLINE"}
    chosen = [name for name in MODE_FLAGS if name in given]
    if len(chosen) > 1:
        raise AgentcacheError(f"{' and '.join(MODE_NAMES[m] for m in chosen)} are separate modes of inspect; give one")
    mode = chosen[0] if chosen else "view"
    for name, modes in APPLIES_TO.items():
        if name in given and mode not in modes:
            raise AgentcacheError(f"{_shown(given[name])} applies only to {' and '.join(MODE_NAMES[m] for m in modes)}"
                                  f", not to {MODE_NAMES[mode]}")


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
    terminal.write_json(report)


def _print_table(context: Context, rows: list[dict[str, object]], findings: list[Finding]) -> None:
    console = terminal.console()
    table = Table(title="context layers")
    for column in ("layer", "kind", "key", "tokens", "hash", "status"):
        table.add_column(column, justify="right" if column == "tokens" else "left", overflow="fold")
    for row in rows:
        tokens = row["tokens"] if row["tokens"] is not None else "-"
        table.add_row(*map(terminal.cell, (row["layer"], row["kind"], row["key"], tokens, str(row["hash"])[:12],
                                           row["status"] or "-")))
    console.print(table)
    for layer, digest in context.layer_hashes().items():
        console.print(f"{layer} hash     {digest}", markup=False)
    console.print(f"context id  {context.context_id}", markup=False)
    for finding in findings:
        console.print(Text.assemble(("warning:", "yellow"), f" volatile content in {terminal.inert(str(finding))}"))


def _read_session(repo: Path, ref: str) -> tuple[object, list[dict], list[int]]:
    """Valid records of a session; each bad line is one warning on stderr; nothing valid is an error."""
    from agentcache.inspect.session_view import load_session

    session = load_session(repo, ref)
    records, bad = session.read()
    for line in bad:
        print(terminal.inert(line.warning(session.id)), file=sys.stderr)
    if bad and not records:
        raise AgentcacheError(f"session {session.id} has no valid record")
    return session, records, [line.number for line in bad]


def _inspect_session(repo: Path, ref: str, as_json: bool, explain: bool, cache_ttl: str | None) -> None:
    from agentcache.config import load_config
    from agentcache.inspect.misses import explain_view, render_explain
    from agentcache.inspect.session_view import render_session, session_view
    from agentcache.records import requests_of

    session, records, bad = _read_session(repo, ref)
    if explain:
        view = explain_view(session, records)
        view["bad_lines"] = bad
        if not as_json:
            render_explain(view, terminal.console())
    else:
        recorded = next((r.cache_ttl for r in reversed(requests_of(records)) if r.cache_ttl), None)
        configured = load_config(repo)[0].cache_ttl
        view = session_view(session.id, records, bad, cache_ttl or recorded or
                            (configured if configured != "auto" else "5m"))
        if not as_json:
            render_session(view, records, terminal.console())
    if as_json:
        terminal.write_json(view)


def _inspect_diff(repo: Path, refs: tuple[str, str], as_json: bool) -> None:
    from agentcache.inspect.misses import diff_view, render_diff

    view = diff_view(repo, *refs)
    for session_id, line in view.pop("bad"):
        print(terminal.inert(line.warning(session_id)), file=sys.stderr)
    if as_json:
        terminal.write_json(view)
    else:
        render_diff(view, terminal.console())


def _add_status(repo: Path, rows: list[dict[str, object]], context: Context) -> list[dict[str, object]]:
    """Rows gain `status` against the last request of the repo's latest session (None without a session)."""
    from agentcache.inspect.explain import block_status
    from agentcache.records import block_refs, requests_of
    from agentcache.session import Session

    try:
        session = Session.open(repo, "latest")
    except AgentcacheError:
        session = None
    records, bad = session.read() if session else ([], [])
    for line in bad:
        print(terminal.inert(line.warning(session.id)), file=sys.stderr)
    requests = requests_of(records)
    if not requests:
        return [{**row, "status": None, "cause": None} for row in rows]
    last = [b for b in requests[-1].blocks if b["layer"] != "L3"]
    current = block_refs(context)
    tokens = {(r["layer"], r["kind"], r["key"]): r["tokens"] for r in rows}
    return [{**row, "tokens": tokens.get((row["layer"], row["kind"], row["key"]))}
            for row in block_status(current, last)]


def inspect(
    ctx: typer.Context,
    session: Annotated[Optional[str], typer.Argument(help="Session id or 'latest' (the default) to show.")] = None,
    layers: Annotated[bool, typer.Option("--layers", help="Show the L1+L2 blocks built for a repo.")] = False,
    repo: Annotated[Path, typer.Option(help="Repository root: its sessions, or its L2 with --layers.")] = Path("."),
    role: Annotated[str, typer.Option(help="Agent role: a file in <prompts>/roles/.")] = "coder",
    prompts: Annotated[Optional[Path], typer.Option(help="Prompts directory (default: the package's own prompts/).")] = None,
    skills: Annotated[str, typer.Option(help="Skills folder, relative to the repo root.")] = "skills",
    max_tree: Annotated[int, typer.Option(min=1, help="Most paths listed in the tree block.")] = 500,
    budget: Annotated[Optional[int], typer.Option(min=1, help="Token budget for L2 (cut deterministically).")] = None,
    map_tokens: Annotated[int, typer.Option("--map-tokens", min=0, help="Token budget for the repo map "
                                            "(whole file outlines, best-ranked first); 0: no map.")] = MAP_TOKENS,
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

    --role, --prompts, --skills, --max-tree, --budget, --map-tokens and --strict apply only to --layers, --cache-ttl
    only to the session view; an option given to a mode it does not apply to is refused.
    """
    _check_options(ctx, diff)
    if diff is not None:
        _inspect_diff(repo, diff, as_json)
        return
    if not layers:
        _inspect_session(repo, session or "latest", as_json, explain, cache_ttl)
        return
    config = L2Config(skills_dir=skills, max_tree_entries=max_tree, token_budget=budget, map_tokens=map_tokens)
    context = build_prefix(repo, prompts or PROMPTS_DIR, role=role, config=config)
    findings = lint_blocks(context, strict=strict)
    rows = _add_status(repo, _block_rows(context), context)
    (_print_json if as_json else _print_table)(context, rows, findings)
