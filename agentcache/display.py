"""What `run` and `script` print as they go, and `run --json`'s rows: one line per turn (a request's counts, time
to first token and what it did, or a compaction's warning), the line `run --resume` prints before sending, and what
prefilling tokens again costs. Formatting only: agentcache.wiring builds the things these describe."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable

from agentcache.records import Compaction, Request, parse_record, requests_of

if TYPE_CHECKING:
    from agentcache.agent import Agent
    from agentcache.session import Session

RATE_MIN_TOKENS = 128


def resume_line(agent: Agent, session: Session) -> str:
    """The line `run --resume` prints before sending: the rebuilt request verified against the session's last one,
    or a warning naming what changed, with the tokens that will be prefilled again and what they cost."""
    check = agent.resume_check
    if check is None or check.blocks == 0:
        return f"resume: session {session.id} has no request yet"
    prompt = check.reusable_tokens + check.recompute_tokens
    if not check.problems:
        return (f"resume: verified against the last request of session {session.id}: {check.matched_blocks} of "
                f"{check.blocks} blocks and their tokens match; {check.reusable_tokens} of its {prompt} prompt "
                "tokens can be reused")
    return (f"warning: resume: {'; '.join(check.problems)}: {check.recompute_tokens} of the last request's {prompt} "
            f"prompt tokens will be prefilled again ({refill_cost_text(agent, check.recompute_tokens)})")


def refill_cost_text(agent: Agent, tokens: int) -> str:
    """What prefilling `tokens` again costs the agent's backend: USD at its prices, or seconds at the prefill rate
    its session measured (over its requests that computed at least RATE_MIN_TOKENS: a few tokens' time to first
    token is mostly fixed cost)."""
    from agentcache.inspect.cost import refill_cost
    from agentcache.inspect.explain import prefill_seconds_per_token

    requests = [r for r in requests_of(agent.session.records())
                if r.usage.computed_tokens >= RATE_MIN_TOKENS and prefill_seconds_per_token(r) is not None]
    seconds = sum(prefill_seconds_per_token(r) * r.usage.computed_tokens for r in requests)
    rate = seconds / sum(r.usage.computed_tokens for r in requests) if requests else None
    return refill_cost(tokens, agent.backend.name, agent.config.cache_ttl, rate)


def run_request(request: Request) -> dict[str, Any]:
    """One request of `run --json`: its usage, also flat, its TTFT and the tool it called (None for an answer)."""
    usage = request.usage
    return {"turn": request.turn, "usage": usage.to_json(), "prompt_tokens": usage.prompt_tokens,
            "cached_tokens": usage.cached_tokens, "computed_tokens": usage.computed_tokens,
            "ttft_s": request.ttft_s, "tool": request.tool}


def turn_line(record: dict, refill_cost: Callable[[int], str] | None = None) -> str:
    """The progress line of one record the agent's on_turn hands over (a line as written): a request's counts,
    TTFT and what it did; for a compaction, the warning of the tokens it makes the next request prefill again
    (what that costs, by `refill_cost`); "" for any other record (the user's task)."""
    request = parse_record(record)
    if isinstance(request, Compaction) and request.tokens_before is not None:
        again = (request.tokens_after or 0) - (request.kept_tokens or 0)
        cost = f" ({refill_cost(again)})" if refill_cost is not None else ""
        return (f"warning: compaction: {request.dropped} earlier entries replaced by the model's summary; the next "
                f"request prefills {again} tokens after the task again{cost}, and every later one is "
                f"{(request.tokens_before or 0) - (request.tokens_after or 0)} tokens shorter")
    if not isinstance(request, Request):
        return ""  # the user's task, an older compaction
    usage, call = request.usage, request.tool_call
    action = f"{call['name']} {json.dumps(call['arguments'], ensure_ascii=False)}" if call else request.reply or ""
    action = action.replace("\r", "\\r").replace("\n", "\\n")  # a reply's newlines cannot forge a turn line
    if request.error:
        action = f"invalid reply: {request.error}"
    if request.stopped:
        action = f"[{request.stopped}] {action}"
    if request.purpose:
        action = f"[{request.purpose}] {action}"
    disk = f" (disk {usage.disk_tokens})" if usage.disk_tokens else ""
    return (f"turn {request.turn}: prompt {usage.prompt_tokens}  cached {usage.cached_tokens}{disk}  "
            f"computed {usage.computed_tokens}  completion {usage.completion_tokens}  "
            f"ttft {request.ttft_s:.2f}s  -> {action[:160]}")

