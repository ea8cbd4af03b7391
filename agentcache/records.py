"""Session records: the one shape check every reader applies to a parsed line, and the typed records on top of it
(request, block, compaction, user, agent), their usage fields, reusable tokens and hit rates."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

USAGE_FIELDS = ("prompt_tokens", "cached_tokens", "computed_tokens", "completion_tokens")

Check = tuple[str, Callable[[Any], bool]]  # what a value must be, in words, and the test


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _seconds(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _text(value: Any) -> bool:
    return isinstance(value, str)


def _text_or_none(value: Any) -> bool:
    return value is None or isinstance(value, str)


def _strings(value: Any, keys: tuple[str, ...]) -> bool:
    return isinstance(value, dict) and all(isinstance(value.get(key), str) for key in keys)


def _list_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, list) and all(check(item) for item in value)


def _entry(value: Any) -> bool:
    return _strings(value, ("kind", "key", "text"))


def _block_ref(value: Any) -> bool:
    return _strings(value, ("layer", "kind", "key", "hash"))


def _usage(value: Any) -> bool:
    return isinstance(value, dict) and all(_count(value.get(name)) for name in USAGE_FIELDS)


def _timings(value: Any) -> bool:
    return isinstance(value, dict) and all(_seconds(value.get(name)) for name in ("ttft_s", "queue_s"))


def _trace(value: Any) -> bool:
    if not isinstance(value, dict):
        return False
    page, seq = value.get("page_size"), value.get("script_seq")
    return (page is None or _count(page)) and (seq is None or _count(seq)) and _text_or_none(value.get("stop_reason"))


def _tool_call(value: Any) -> bool:
    return value is None or (_strings(value, ("name",)) and isinstance(value.get("arguments"), dict))


def _tool_result(value: Any) -> bool:
    return value is None or (_strings(value, ("output",)) and isinstance(value.get("is_error"), bool))


TEXT: Check = ("a string", _text)
TEXT_OR_NONE: Check = ("a string or null", _text_or_none)
ENTRIES: Check = ("a list of {kind, key, text} strings", _list_of(_entry))
COMMON: dict[str, Check] = {"turn": ("a count", _count), "context_id": TEXT_OR_NONE, "appended": ENTRIES}
REQUIRED = {"request": ("turn", "usage"), "block": ("hash", "text"), "compaction": ("l3",), "resume": ("problems",), "samples": ("candidates", "pick")}
BY_TYPE: dict[str, dict[str, Check]] = {  # the checks of the keys a record of each type has
    "request": {
        "usage": (f"an object of token counts ({', '.join(USAGE_FIELDS)})", _usage),
        "timings": ("an object of seconds (ttft_s, queue_s)", _timings),
        "trace": ("an object (page_size a count, stop_reason a string)", _trace),
        "blocks": ("a list of {layer, kind, key, hash} strings", _list_of(_block_ref)),
        "segment_tokens": ("a list of counts", _list_of(_count)),
        "tool_call": ("null or {name, arguments}", _tool_call),
        "tool_result": ("null or {output, is_error}", _tool_result),
        "layers": ("an object", lambda value: isinstance(value, dict)),
        "enabled_tools": ("a list of strings", _list_of(_text)),
        "backend": TEXT,
        "at": ("a number of seconds or null", _seconds),
        **{name: TEXT_OR_NONE for name in ("error", "reply", "model", "salt", "fingerprint", "cache_ttl",
                                           "stopped", "layout", "routing_key", "replica", "purpose",
                                           "tool_format")},
    },
    "block": {"hash": TEXT, "text": TEXT},
    "compaction": {"l3": ENTRIES, "dropped": ("a count", _count), "trigger": TEXT_OR_NONE,
                   **{name: ("a count", _count) for name in ("tokens_before", "tokens_after", "kept_tokens")}},
    "resume": {"problems": ("a list of strings", _list_of(_text)),
               **{name: ("a count", _count) for name in ("matched_blocks", "blocks", "reusable_tokens",
                                                        "recompute_tokens")}},
    "samples": {"candidates": ("a list of objects", _list_of(lambda value: isinstance(value, dict))),
                "pick": ("a count", _count), "how": TEXT, "task": TEXT},
    "agent": {"forked_from": ("null or an object", lambda value: value is None or isinstance(value, dict)),
              **{name: TEXT_OR_NONE for name in ("script", "agent", "role")}},
}


def record_problem(record: Any) -> str | None:
    """Why a parsed line is not a session record every reader can use, or None when it is one."""
    if not isinstance(record, dict):
        return "not a JSON object"
    kind = record.get("type")
    if not isinstance(kind, str):
        return "no 'type' string"
    for name in REQUIRED.get(kind, ()):
        if name not in record:
            return f"a {kind} record without '{name}'"
    for name, (what, check) in {**COMMON, **BY_TYPE.get(kind, {})}.items():
        if name in record and not check(record[name]):
            return f"'{name}' of a {kind} record must be {what}"
    return None


def ratio(part: int, whole: int) -> float | None:
    """A hit rate: `part` of `whole`, or None when there is nothing to divide by."""
    return part / whole if whole else None


def _page_capped(tokens: int, prompt_tokens: int, page_size: int) -> int:
    """`tokens` capped, like an engine hit, at the last full page before the prompt's final token."""
    return min(tokens, max(prompt_tokens - 1, 0)) // page_size * page_size


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    cached_tokens: int = 0
    computed_tokens: int = 0
    completion_tokens: int = 0
    extra: dict[str, int] = field(default_factory=dict)  # backend-specific counts: disk_tokens, cache_write_tokens

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Usage:
        return cls(*(int(data.get(name, 0)) for name in USAGE_FIELDS),
                   extra={k: v for k, v in data.items() if k not in USAGE_FIELDS})

    def to_json(self) -> dict[str, Any]:
        return {**{name: getattr(self, name) for name in USAGE_FIELDS}, **self.extra}

    @property
    def hit_rate(self) -> float | None:
        return ratio(self.cached_tokens, self.prompt_tokens)

    @property
    def disk_tokens(self) -> int:
        """Tokens the local engine served from its disk tier (0 for a backend without one)."""
        return int(self.extra.get("disk_tokens", 0))


# request keys written only when set
OPTIONAL_KEYS = ("tool_call", "tool_result", "error", "stopped", "layout", "routing_key", "replica", "at", "purpose",
                 "tool_format")


@dataclass(slots=True)
class Request:
    """One model request: what was sent (blocks, layers, tools), what it cost (usage, timings) and what came back."""

    turn: int | None = None  # None and zero usage only in a partial dict: a line on disk has both (REQUIRED)
    usage: Usage = field(default_factory=Usage)
    context_id: str | None = None
    backend: str = "local"
    model: str | None = None
    fingerprint: str | None = None
    salt: str | None = None
    cache_ttl: str | None = None
    layers: dict[str, Any] = field(default_factory=dict)
    blocks: list[dict[str, str]] = field(default_factory=list)
    segment_tokens: list[int] = field(default_factory=list)
    prefix_tokens: int | None = None
    timings: dict[str, Any] = field(default_factory=dict)
    trace: dict[str, Any] = field(default_factory=dict)
    enabled_tools: list[str] = field(default_factory=list)
    reply: str | None = None
    finish_reason: str | None = None
    appended: list[dict[str, str]] = field(default_factory=list)
    tool_call: dict[str, Any] | None = None  # the ten below are written only when set
    tool_result: dict[str, Any] | None = None
    error: str | None = None
    stopped: str | None = None  # why the run ended after this request when the loop itself stopped it ("stuck")
    layout: str | None = None  # render.SYSTEM_TURN: L1+L2 sent as one system turn; absent: one message per block
    routing_key: str | None = None  # the key a router was given to keep the request with its own (openai backend)
    replica: str | None = None  # which replica served it, where the server says so
    at: float | None = None  # when it was sent, Unix seconds: the gap between requests (a provider's cache TTL)
    purpose: str | None = None  # "compaction": the request that wrote a summary, not an agent turn
    tool_format: str | None = None  # how the reply was to be written: "json" or "native" (agentcache.render)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Request:
        names = [name for name in cls.__slots__ if name not in ("turn", "usage") and data.get(name) is not None]
        return cls(turn=data.get("turn"), usage=Usage.from_json(data.get("usage") or {}),
                   **{name: data[name] for name in names})

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "request"}
        for name in self.__slots__:
            value = getattr(self, name)
            if name not in OPTIONAL_KEYS or value is not None:
                out[name] = value
        out["usage"] = self.usage.to_json()
        return out

    @property
    def ttft_s(self) -> float | None:
        return self.timings.get("ttft_s")

    @property
    def queue_s(self) -> float | None:
        return self.timings.get("queue_s")

    @property
    def stop_reason(self) -> str | None:
        """Why the engine's prefix match stopped (absent, evicted, salt, ...); None without an engine trace."""
        return self.trace.get("stop_reason")

    @property
    def block_hashes(self) -> list[str]:
        return [b.get("hash", "") for b in self.blocks]

    @property
    def page_size(self) -> int:
        return max(int(self.trace.get("page_size") or 1), 1)

    @property
    def tool(self) -> str | None:
        return self.tool_call.get("name") if self.tool_call else None


@dataclass(slots=True)
class BlockText:
    """A block's text, stored once per session under its hash."""

    hash: str
    text: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BlockText:
        return cls(data["hash"], data["text"])

    def to_json(self) -> dict[str, Any]:
        return {"type": "block", "hash": self.hash, "text": self.text}


@dataclass(slots=True)
class Compaction:
    """The L3 entries that replace the whole L3 after the oldest `dropped` were folded into a summary, and the
    prompt tokens around it: every later request is `tokens_before - tokens_after` shorter; the tokens after
    `kept_tokens` (the prefix and the task) are prefilled again once."""

    l3: list[dict[str, str]]
    dropped: int = 0
    context_id: str | None = None
    trigger: str | None = None  # "window": the next request would not have fit
    tokens_before: int | None = None
    tokens_after: int | None = None
    kept_tokens: int | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Compaction:
        return cls(data["l3"], data.get("dropped", 0), data.get("context_id"), data.get("trigger"),
                   data.get("tokens_before"), data.get("tokens_after"), data.get("kept_tokens"))

    def to_json(self) -> dict[str, Any]:
        counts = {"trigger": self.trigger, "tokens_before": self.tokens_before, "tokens_after": self.tokens_after,
                  "kept_tokens": self.kept_tokens}  # written when known (older compactions have none)
        return {"type": "compaction", "dropped": self.dropped, "context_id": self.context_id, "l3": self.l3,
                **{name: value for name, value in counts.items() if value is not None}}


@dataclass(slots=True)
class ResumeCheck:
    """What `--resume` found before sending anything: the request rebuilt from the session against the session's
    last request (block hashes, per-segment tokens, model and salt). `problems` empty: verified."""

    problems: list[str]
    matched_blocks: int = 0
    blocks: int = 0
    reusable_tokens: int = 0  # of the last request's prompt, what the rebuilt one can still reuse
    recompute_tokens: int = 0  # of the last request's prompt, what will be prefilled again

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ResumeCheck:
        return cls(data["problems"], *(int(data.get(name) or 0) for name in
                                       ("matched_blocks", "blocks", "reusable_tokens", "recompute_tokens")))

    def to_json(self) -> dict[str, Any]:
        return {"type": "resume", "problems": self.problems, "matched_blocks": self.matched_blocks,
                "blocks": self.blocks, "reusable_tokens": self.reusable_tokens,
                "recompute_tokens": self.recompute_tokens}


@dataclass(slots=True)
class UserTurn:
    """The user's task, in `appended`."""

    appended: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UserTurn:
        return cls(data.get("appended", []))

    def to_json(self) -> dict[str, Any]:
        return {"type": "user", "appended": self.appended}


@dataclass(slots=True)
class AgentStart:
    """A script agent's first record; a fork's inherited L3 is in `appended`."""

    script: str | None
    agent: str | None
    role: str | None
    forked_from: dict[str, Any] | None = None
    context_id: str | None = None
    appended: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AgentStart:
        return cls(data.get("script"), data.get("agent"), data.get("role"), data.get("forked_from"),
                   data.get("context_id"), data.get("appended", []))

    def to_json(self) -> dict[str, Any]:
        return {"type": "agent", "script": self.script, "agent": self.agent, "role": self.role,
                "forked_from": self.forked_from, "context_id": self.context_id, "appended": self.appended}


Record = Request | BlockText | Compaction | UserTurn | AgentStart | ResumeCheck
TYPES: dict[str, Any] = {"request": Request, "block": BlockText, "compaction": Compaction, "user": UserTurn,
                         "agent": AgentStart, "resume": ResumeCheck}


def parse_record(data: dict[str, Any]) -> Record | None:
    """The typed record of a line that passed `record_problem`; None for a type this version does not know."""
    kind = TYPES.get(data["type"])
    return kind.from_json(data) if kind is not None else None


def block_refs(blocks: Iterable[Any]) -> list[dict[str, str]]:
    """Blocks (layers.Block) as a request records them."""
    return [{"layer": b.layer.name, "kind": b.kind, "key": b.key, "hash": b.hash} for b in blocks]


def requests_of(records: list[dict[str, Any]]) -> list[Request]:
    return [Request.from_json(r) for r in records if r.get("type") == "request"]


def block_texts(records: list[dict[str, Any]]) -> dict[str, str]:
    """Block texts by hash, from the content-addressed `block` records the agent writes."""
    return {b.hash: b.text for b in map(BlockText.from_json, (r for r in records if r.get("type") == "block"))}


def reusable_after_previous(previous: Request | None, current: Request) -> int:
    """Inspect's reusable tokens: the tokens of `current`'s prompt the previous request of the same session let it
    reuse. The previous request computed (and cached) its whole prompt; had `current` extended it unchanged, every
    full page of it would hit. So: the previous prompt's length, page-capped. Anything cached below this is a miss
    that `inspect --explain` explains (content change, reorder, eviction, salt, ...)."""
    if previous is None:
        return 0
    return _page_capped(previous.usage.prompt_tokens, current.usage.prompt_tokens, current.page_size)


def shared_block_tokens(earlier: Request, current: Request) -> int:
    """Scripts' reusable tokens against one earlier request (of any agent): the tokens of `current`'s leading blocks
    identical (same hash, same place) to `earlier`'s, page-capped."""
    shared = 0
    for index, (a, b) in enumerate(zip(earlier.block_hashes, current.block_hashes)):
        if a != b or index >= len(current.segment_tokens):
            break
        shared += current.segment_tokens[index]
    return _page_capped(shared, current.usage.prompt_tokens, current.page_size)
