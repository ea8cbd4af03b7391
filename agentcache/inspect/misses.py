"""`inspect --explain` and `inspect --diff A B`: miss explanations and block diffs as data and as tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from agentcache.errors import AgentcacheError
from agentcache.inspect.explain import Explainer, block_status
from agentcache.inspect.session_view import load_session
from agentcache.records import Request, block_texts, requests_of
from agentcache.session import BadLine, Session
from agentcache.terminal import cell, inert


def tokenizer_for(requests: list[Request]) -> Any | None:
    """The tokenizer of the model the requests ran on (tokenizer files only, no weights)."""
    if not requests:
        return None
    from agentcache.cache_dir import models_dir
    from engine.model import load_tokenizer

    return load_tokenizer(requests[-1].model, cache_dir=models_dir())


LEDGER = ("prefix_edit", "compaction", "eviction", "ttl_expiry", "routing", "model_or_salt", "below_minimum",
          "restart", "unexplained")
ENGINE_TAGS = {"evicted": "eviction", "salt_or_model": "model_or_salt", "below_minimum": "below_minimum"}
TTL_SECONDS = {"5m": 300, "1h": 3600}  # a provider cache entry's lifetime without a read


def events_before(records: list[dict[str, Any]]) -> list[set[str]]:
    """Per request, the types of the records written since the request before it (a compaction, a resume)."""
    out, since = [], set()
    for record in records:
        if record.get("type") == "request":
            out.append(since)
            since = set()
        elif record.get("type") not in ("block", "user"):
            since.add(record["type"])
    return out


def ledger_tag(miss: dict[str, Any], previous: Request, current: Request, events: set[str]) -> str:
    """The miss's cause in the ledger. A prefix that changed is an edit (or the harness's compaction); where the
    content allowed more, the engine's trace or the records must say why: eviction, a model or salt change, the
    provider's minimum, a provider TTL that ran out between the two requests, another replica, or a resumed
    session in a process whose pool and disk tier did not hold the pages. Anything else is unexplained."""
    if miss["source"] == "content":
        return "compaction" if "compaction" in events else "prefix_edit"
    if miss["cause"] in ENGINE_TAGS:
        return ENGINE_TAGS[miss["cause"]]
    if previous.replica and current.replica and previous.replica != current.replica:
        return "routing"
    ttl = TTL_SECONDS.get(previous.cache_ttl or "") if previous.backend == "anthropic" else None
    if ttl is not None and previous.at is not None and current.at is not None and current.at - previous.at > ttl:
        return "ttl_expiry"
    if "resume" in events and current.stop_reason == "absent":
        return "restart"
    return "unexplained"


def ledger(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Misses and missed tokens per cause, and the count of unexplained misses."""
    causes = {tag: {"misses": 0, "tokens": 0} for tag in LEDGER}
    for entry in entries:
        if entry["miss"] is not None:
            causes[entry["miss"]["ledger"]]["misses"] += 1
            causes[entry["miss"]["ledger"]]["tokens"] += entry["miss"]["missed_tokens"]
    return {"causes": causes, "misses": sum(c["misses"] for c in causes.values()),
            "missed_tokens": sum(c["tokens"] for c in causes.values()),
            "unexplained": causes["unexplained"]["misses"]}


def explain_view(session: Session, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Every request's miss (if any) with its cause and ledger tag, and the session's miss ledger."""
    requests = requests_of(records)
    texts = block_texts(records)
    explainer = Explainer(tokenizer_for(requests))
    entries = []
    for index, (previous, current, events) in enumerate(zip([None, *requests], requests, events_before(records)), 1):
        entry = explainer.entry(previous, current, texts, texts)
        if entry["miss"] is not None:
            entry["miss"]["ledger"] = ledger_tag(entry["miss"], previous, current, events)
        entries.append({**entry, "index": index})
    return {"session_id": session.id, "requests": entries, "ledger": ledger(entries)}


def resolve_refs(repo: Path, first: str, second: str) -> tuple[tuple[Session, int], tuple[Session, int]]:
    """Two `SESSION:INDEX` refs as given, or two session ids: the last request of the earlier one against
    the first request of the later one."""
    if (":" in first) != (":" in second):
        raise AgentcacheError("--diff takes two session ids or two SESSION:INDEX references, not a mix")
    if ":" in first:
        return _request_ref(repo, first), _request_ref(repo, second)
    earlier, later = sorted((load_session(repo, first), load_session(repo, second)), key=lambda s: s.id)
    return (earlier, -1), (later, 1)


def _request_ref(repo: Path, ref: str) -> tuple[Session, int]:
    session_id, _, index = ref.rpartition(":")
    try:
        number = int(index)
    except ValueError:
        raise AgentcacheError(f"bad request reference '{ref}': INDEX must be a number (1 = first, -1 = last)") from None
    if number == 0:
        raise AgentcacheError(f"bad request reference '{ref}': requests are numbered from 1 (or -1 for the last)")
    return load_session(repo, session_id), number


def _pick(session: Session, number: int) -> tuple[Request, dict[str, str], list[BadLine]]:
    records, bad = session.read()
    requests = requests_of(records)
    if not requests or abs(number) > len(requests) or number == 0:
        raise AgentcacheError(f"session {session.id} has {len(requests)} requests; no request {number}")
    return requests[number - 1 if number > 0 else number], block_texts(records), bad


def diff_view(repo: Path, first: str, second: str) -> dict[str, Any]:
    """The `--json` object, plus `bad`: (session id, line) for each line skipped, for the caller to warn about."""
    (session_a, number_a), (session_b, number_b) = resolve_refs(repo, first, second)
    a, texts_a, bad_a = _pick(session_a, number_a)
    b, texts_b, bad_b = _pick(session_b, number_b)
    entry = Explainer(tokenizer_for([b])).entry(a, b, texts_a, texts_b)
    entry.update(a=f"{session_a.id}:{number_a}", b=f"{session_b.id}:{number_b}",
                 blocks=block_status(b.blocks, a.blocks, texts_b, texts_a))
    bad = [(session_a.id, line) for line in bad_a]
    if session_b.id != session_a.id:
        bad += [(session_b.id, line) for line in bad_b]
    lines = {session_id: [line.number for s, line in bad if s == session_id] for session_id, _ in bad}
    return {"diff": [entry], "bad_lines": lines, "bad": bad}


def _miss_text(miss: dict[str, Any] | None) -> str:
    if miss is None:
        return "-"
    where = f"{miss['layer']} {miss['kind']} {miss['key']}".strip()
    byte = "-" if miss["byte_offset"] is None else str(miss["byte_offset"])
    tag = f"{miss['ledger']}: " if "ledger" in miss else ""
    return f"{tag}{miss['cause']} at {where} (byte {byte}, token {miss['token_position']})"


def _cost_text(miss: dict[str, Any]) -> str:
    seconds = miss.get("missed_prefill_s")
    return f"{miss['missed_tokens']} tokens" + ("" if seconds is None else f", {seconds:.3f} s prefill")


def render_explain(view: dict[str, Any], console: Console) -> None:
    table = Table(title=cell(f"misses in session {view['session_id']}"), box=box.SIMPLE_HEAD)
    for column in ("#", "turn", "cached", "reusable", "miss", "cost"):
        table.add_column(column, justify="left" if column in ("miss", "cost") else "right", overflow="fold")
    for entry in view["requests"]:
        miss = entry["miss"]
        table.add_row(*map(cell, (entry["index"], entry["turn"], entry["cached_tokens"], entry["reusable_tokens"],
                                  _miss_text(miss), _cost_text(miss) if miss else "")))
    console.print(table)
    for entry in view["requests"]:
        miss = entry["miss"]
        if miss and "tokens_after" in miss:
            console.print(inert(f"request {entry['index']}: ...{''.join(miss['tokens_before'])!r} | "
                                f"now {''.join(miss['tokens_after'])!r}, before "
                                f"{''.join(miss.get('previous_tokens_after', []))!r}"), markup=False)
        if miss and miss.get("change"):
            console.print(inert(f"request {entry['index']}: {miss['change']}"), markup=False)
    misses = [e["miss"] for e in view["requests"] if e["miss"]]
    console.print(f"{len(misses)} of {len(view['requests'])} requests reused less than the previous prompt allowed; "
                  f"{sum(m['missed_tokens'] for m in misses)} tokens recomputed")
    render_ledger(view["ledger"], console)


def render_ledger(book: dict[str, Any], console: Console) -> None:
    table = Table(title="miss ledger", box=box.SIMPLE_HEAD)
    for column in ("cause", "misses", "tokens"):
        table.add_column(column, justify="left" if column == "cause" else "right")
    for tag, row in book["causes"].items():
        if row["misses"]:
            table.add_row(*map(cell, (tag, row["misses"], row["tokens"])))
    table.add_row(*map(cell, ("total", book["misses"], book["missed_tokens"])))
    console.print(table)
    console.print(f"unexplained misses: {book['unexplained']}")


def render_diff(view: dict[str, Any], console: Console) -> None:
    entry = view["diff"][0]
    table = Table(title=cell(f"{entry['a']} -> {entry['b']}"), box=box.SIMPLE_HEAD)
    for column in ("layer", "kind", "key", "status", "cause", "hash"):
        table.add_column(column, overflow="fold")
    for row in entry["blocks"]:
        table.add_row(*map(cell, (row["layer"], row["kind"], row["key"], row["status"], row["cause"] or "",
                                  row["hash"][:12])))
    console.print(table)
    console.print(inert(f"cached {entry['cached_tokens']} of {entry['reusable_tokens']} reusable tokens; "
                        f"first miss: {_miss_text(entry['miss'])}"), markup=False)
