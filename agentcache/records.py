"""Session record shapes: the one check every reader (inspect, resume, scripts) applies to a parsed line."""

from __future__ import annotations

from typing import Any, Callable

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
REQUIRED = {"request": ("turn", "usage"), "block": ("hash", "text"), "compaction": ("l3",)}
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
        **{name: TEXT_OR_NONE for name in ("error", "reply", "model", "salt", "fingerprint", "cache_ttl")},
    },
    "block": {"hash": TEXT, "text": TEXT},
    "compaction": {"l3": ENTRIES, "dropped": ("a count", _count)},
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
