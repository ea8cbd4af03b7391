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


def tokenizer_for(requests: list[Request]) -> Any | None:
    """The tokenizer of the model the requests ran on (tokenizer files only, no weights)."""
    if not requests:
        return None
    from agentcache.cache_dir import models_dir
    from engine.model import load_tokenizer

    return load_tokenizer(requests[-1].model, cache_dir=models_dir())


def explain_view(session: Session, records: list[dict[str, Any]]) -> dict[str, Any]:
    requests = requests_of(records)
    texts = block_texts(records)
    explainer = Explainer(tokenizer_for(requests))
    entries = [explainer.entry(previous, current, texts, texts)
               for previous, current in zip([None, *requests], requests)]
    for index, entry in enumerate(entries, 1):
        entry["index"] = index
    return {"session_id": session.id, "requests": entries}


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
    return f"{miss['cause']} at {where} (byte {byte}, token {miss['token_position']})"


def _cost_text(miss: dict[str, Any]) -> str:
    seconds = miss.get("missed_prefill_s")
    return f"{miss['missed_tokens']} tokens" + ("" if seconds is None else f", {seconds:.3f} s prefill")


def render_explain(view: dict[str, Any], console: Console) -> None:
    table = Table(title=f"misses in session {view['session_id']}", box=box.SIMPLE_HEAD)
    for column in ("#", "turn", "cached", "reusable", "miss", "cost"):
        table.add_column(column, justify="left" if column in ("miss", "cost") else "right", overflow="fold")
    for entry in view["requests"]:
        miss = entry["miss"]
        table.add_row(str(entry["index"]), str(entry["turn"]), str(entry["cached_tokens"]),
                      str(entry["reusable_tokens"]), _miss_text(miss), _cost_text(miss) if miss else "")
    console.print(table)
    for entry in view["requests"]:
        miss = entry["miss"]
        if miss and "tokens_after" in miss:
            console.print(f"request {entry['index']}: ...{''.join(miss['tokens_before'])!r} | "
                          f"now {''.join(miss['tokens_after'])!r}, before "
                          f"{''.join(miss.get('previous_tokens_after', []))!r}", markup=False)
    misses = [e["miss"] for e in view["requests"] if e["miss"]]
    console.print(f"{len(misses)} of {len(view['requests'])} requests reused less than the previous prompt allowed; "
                  f"{sum(m['missed_tokens'] for m in misses)} tokens recomputed")


def render_diff(view: dict[str, Any], console: Console) -> None:
    entry = view["diff"][0]
    table = Table(title=f"{entry['a']} -> {entry['b']}", box=box.SIMPLE_HEAD)
    for column in ("layer", "kind", "key", "status", "cause", "hash"):
        table.add_column(column, overflow="fold")
    for row in entry["blocks"]:
        table.add_row(row["layer"], row["kind"], row["key"], row["status"], row["cause"] or "", row["hash"][:12])
    console.print(table)
    console.print(f"cached {entry['cached_tokens']} of {entry['reusable_tokens']} reusable tokens; "
                  f"first miss: {_miss_text(entry['miss'])}", markup=False)
