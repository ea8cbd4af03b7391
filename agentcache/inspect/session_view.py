"""Session views for `agentcache inspect`: per-request tokens, reusable prefix and hit rates, as data and a table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from agentcache.errors import AgentcacheError
from agentcache.terminal import cell, inert
from agentcache.inspect.compactions import compaction_rows
from agentcache.inspect.cost import cost_view
from agentcache.records import USAGE_FIELDS, Request, ratio, requests_of, reusable_after_previous
from agentcache.session import Session

BAR_WIDTH = 40
SPECULATION_FIELDS = ("drafted_tokens", "accepted_tokens")  # the local engine's speculative decoding (engine.speculate)


def load_session(repo: Path, ref: str) -> Session:
    if not repo.exists():
        raise AgentcacheError(f"repository {repo} does not exist")
    if not repo.is_dir():
        raise AgentcacheError(f"repository {repo} is not a directory")
    return Session.open(repo, ref)


def reusable_tokens(previous: dict[str, Any] | None, current: dict[str, Any]) -> int:
    """Inspect's reusable tokens of `current` after `previous` (see `records.reusable_after_previous`)."""
    return reusable_after_previous(previous and Request.from_json(previous), Request.from_json(current))


def action(request: Request) -> str:
    if request.purpose:
        return request.purpose
    if request.error:
        return "error"
    return request.tool if request.tool is not None else "answer"


def request_row(previous: Request | None, record: Request) -> dict[str, Any]:
    row: dict[str, Any] = {"turn": record.turn}
    row.update({name: getattr(record.usage, name) for name in USAGE_FIELDS})
    row["reusable_tokens"] = reusable_after_previous(previous, record)
    row["hit_rate"] = record.usage.hit_rate
    row["ttft_s"] = record.ttft_s
    row["stop_reason"] = record.stop_reason
    for name in SPECULATION_FIELDS:  # local engine only: other backends' rows stay as they were
        if name in record.usage.extra:
            row[name] = int(record.usage.extra[name])
    if record.routing_key or record.replica:  # openai backend only: other sessions' rows stay as they were
        row["routing_key"], row["replica"] = record.routing_key, record.replica
    return row


def session_view(session_id: str, records: list[dict[str, Any]], bad_lines: list[int] | None = None,
                 cache_ttl: str = "5m") -> dict[str, Any]:
    """The `--json` object: one row per request, session totals with both hit rates, cost (cache writes priced
    for `cache_ttl`), bad line numbers, and a best-of-n run's candidates and pick."""
    requests = requests_of(records)
    rows = [request_row(previous, record) for previous, record in zip([None, *requests], requests)]
    totals: dict[str, Any] = {name: sum(r[name] for r in rows) for name in (*USAGE_FIELDS, "reusable_tokens")}
    totals["hit_rate"] = ratio(totals["cached_tokens"], totals["prompt_tokens"])
    kept = sum(min(r["cached_tokens"], r["reusable_tokens"]) for r in rows)  # of the reusable tokens, those served
    totals["reusable_hit_rate"] = ratio(kept, totals["reusable_tokens"])  # at most 1
    totals["cached_beyond_reusable"] = totals["cached_tokens"] - kept  # the previous reply's pages, other sessions'
    # prefix, the disk tier
    if any(name in row for row in rows for name in SPECULATION_FIELDS):
        totals.update({name: sum(row.get(name, 0) for row in rows) for name in SPECULATION_FIELDS})
    backend = requests[-1].backend if requests else "local"
    view = {"session_id": session_id, "requests": rows, "totals": totals, "cost": cost_view(rows, backend, cache_ttl),
            "compactions": compaction_rows(records, cache_ttl), "bad_lines": bad_lines or []}
    samples = samples_view(records)
    return view if samples is None else {**view, "samples": samples}  # only a best-of-n run's session has the key


def samples_view(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A best-of-n run's candidates, the votes or test results, and the pick (its `samples` record), or None."""
    record = next((r for r in records if r.get("type") == "samples"), None)
    if record is None:
        return None
    return {name: record.get(name) for name in ("task", "how", "pick", "votes", "applied", "candidates")}


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def render_routing(rows: list[dict[str, Any]], console: Console) -> None:
    """Each request's routing key and the replica that answered, when any request had one (openai backend)."""
    if not any(row.get("routing_key") or row.get("replica") for row in rows):
        return
    table = Table("turn", "routing key", "replica", title="routing", box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0))
    for row in rows:
        table.add_row(*map(cell, (row["turn"], row.get("routing_key") or "-", row.get("replica") or "-")))
    console.print(table)


def _bar(cached: int, computed: int, scale: int) -> str:
    cached_cells = round(BAR_WIDTH * cached / scale) if scale else 0
    computed_cells = round(BAR_WIDTH * (cached + computed) / scale) - cached_cells if scale else 0
    return f"[green]{'█' * cached_cells}[/green][red]{'░' * max(computed_cells, 0)}[/red]"


def render_session(view: dict[str, Any], records: list[dict[str, Any]], console: Console) -> None:
    """The table for people: one row per request, a totals row, both hit rates and a cached-vs-computed bar chart."""
    table = Table(title=cell(f"session {view['session_id']}"), box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0))
    columns = ("turn", "prompt", "cached", "computed", "output", "reuse", "hit", "ttft s", "stop", "action")
    for column in columns:
        justify = "left" if column in ("stop", "action") else "right"
        table.add_column(column, justify=justify, no_wrap=True, min_width=max(len(column), 5))
    for row, request in zip(view["requests"], requests_of(records)):
        table.add_row(*map(cell, (row["turn"], *(row[name] for name in (*USAGE_FIELDS, "reusable_tokens")),
                                  _percent(row["hit_rate"]), _seconds(row["ttft_s"]), row["stop_reason"] or "-",
                                  action(request))))
    totals = view["totals"]
    table.add_section()
    table.add_row("total", *(str(totals[name]) for name in (*USAGE_FIELDS, "reusable_tokens")),
                  _percent(totals["hit_rate"]), "", "", "", style="bold")
    console.print(table)
    render_routing(view["requests"], console)
    console.print(f"hit rate (cached / prompt tokens)             {_percent(totals['hit_rate'])}")
    console.print(f"hit rate (reusable tokens served from cache)  {_percent(totals['reusable_hit_rate'])}")
    console.print(f"cached beyond the reusable tokens  {totals['cached_beyond_reusable']} (the previous reply, other "
                  "sessions' prefix, the disk tier)")
    render_speculation(totals, console)
    render_cost(view["cost"], console)
    render_compactions(view["compactions"], console)
    render_samples(view.get("samples"), console)
    if not view["requests"]:
        console.print("no requests in this session yet")
        return
    scale = max(r["cached_tokens"] + r["computed_tokens"] for r in view["requests"])
    console.print("\nper turn: [green]█ cached[/green]  [red]░ computed[/red]")
    for row in view["requests"]:
        console.print(f"{row['turn']!s:>4} {_bar(row['cached_tokens'], row['computed_tokens'], scale)} "
                      f"{row['cached_tokens']}/{row['prompt_tokens']}")


def render_samples(samples: dict[str, Any] | None, console: Console) -> None:
    """One row per candidate: its session, sampling, outcome, what it voted for or its tests, and the pick."""
    if not samples:
        return
    votes = samples.get("votes") or {}
    table = Table("#", "session", "temp", "seed", "outcome", "turns", "votes" if samples["how"] == "vote" else "tests",
                  "answer or changed files", title=cell(f"samples: {len(samples['candidates'])} candidates, pick by "
                                                        f"{samples['how']}"), box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0))
    for c in samples["candidates"]:
        if samples["how"] == "vote":
            judged = ", ".join(f"{key} {votes.get(key, 0)}" for key in c.get("keys") or []) or "-"
        else:
            tests = c.get("tests") or {}
            judged = f"exit {tests.get('exit_code')}, {tests.get('passed', 0)} passed"
        shown = c.get("answer") if samples["how"] == "vote" else ", ".join(c.get("changed") or []) or "(none)"
        mark = "*" if c["index"] == samples["pick"] else ""
        table.add_row(*map(cell, (f"{mark}{c['index'] + 1}", c["session_id"], c["temperature"], c["seed"],
                                  c["reason"], c["turns"], judged, (shown or "-")[:80].replace("\n", " "))))
    console.print(table)
    applied = samples.get("applied")
    tail = f"; its changes written: {', '.join(applied) or '(none)'}" if applied is not None else ""
    console.print(inert(f"pick: candidate {samples['pick'] + 1}{tail}"), markup=False)


def render_compactions(rows: list[dict[str, Any]], console: Console) -> None:
    """Each compaction's cost and the prompt tokens it saved over the requests after it (at most PAYBACK_TURNS)."""
    if not rows:
        return
    table = Table(title="compactions: cost and savings (tokens)", box=box.SIMPLE_HEAD)
    for column in ("turn", "dropped", "summary in", "summary out", "extra prefill", "cost", "after", "saved", "net"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*(cell(row[name]) for name in ("turn", "dropped", "summary_computed_tokens",
                                                     "summary_completion_tokens", "extra_prefill_tokens",
                                                     "cost_tokens", "requests_after", "saved_tokens", "net_tokens")))
    console.print(table)
    net = sum(row["net_tokens"] for row in rows)
    usd = ", ".join(f"{name} ${sum(row['net_usd'][name] for row in rows):+.4f}" for name in rows[0]["net_usd"])
    console.print(f"compaction net savings: {net:+d} tokens; at prices: {usd}")


def render_speculation(totals: dict[str, Any], console: Console) -> None:
    """Speculative decoding's drafted and kept tokens over the session (local engine; nothing drafted: no line)."""
    if not totals.get("drafted_tokens"):
        return
    drafted, accepted = totals["drafted_tokens"], totals["accepted_tokens"]
    console.print(f"speculative decoding: {drafted} tokens drafted, {accepted} accepted "
                  f"({_percent(ratio(accepted, drafted))}); {accepted} of {totals['completion_tokens']} output tokens "
                  "came without a decode step of their own")


def render_cost(cost: dict[str, Any], console: Console) -> None:
    sent, work, bill = cost["transmitted"], cost["inference"], cost["billed"]
    console.print(f"\ncost ({inert(cost['backend'])} backend)", markup=False)
    console.print(f"  transmitted  {sent['prompt_tokens']} prompt tokens, {sent['completion_tokens']} completion tokens")
    console.print(f"  inference    {work['computed_tokens']} computed of {work['attended_tokens']} attended prompt tokens")
    prices = ", ".join(f"{name} ({bill['models'][name]}) ${usd:.4f}" for name, usd in bill["usd"].items())
    dated = f"[prices of {bill['prices_date']}, cache TTL {bill['cache_ttl']}]"
    console.print(inert(f"  billed       {prices}  {dated}"), markup=False)
