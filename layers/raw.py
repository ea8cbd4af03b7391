"""Raw parameters: code a tool call carries as ``` blocks after its JSON, never escaped inside it.

A tool spec names its raw parameters (`raw:`, e.g. write_file's `content`). The call's JSON object leaves them out,
and each follows it, in the order the spec lists them, as a block of lines:

    {"name": "write_file", "arguments": {"path": "hello.py"}}
    ```
    print("hi")
    ```

The value is the block's lines, each with its newline (a block with no lines is ""); so a value a block can
carry is "" or ends with a newline, and none of its lines starts with ```. The grammar also takes an info string
after the opening fence (```python), which the value ignores. A call whose raw values a block cannot carry (a
call made before raw parameters, or by hand) keeps them in its JSON: the same call always has the same text.
"""
from __future__ import annotations

import re
from typing import Any

from layers.canonical import canonical_json

FENCE = "```"
INFO = r"[A-Za-z0-9_+.#-]*"  # an info string the opening fence may carry (```python); the value ignores it
LINES = r"(?:`{0,2}(?:[^`\n][^\n]*)?\n)*"  # lines none of which starts with ```
BLOCK_REGEX = rf"\n{FENCE}{INFO}\n{LINES}{FENCE}"  # one block, with the newline before it (grammar terminal)
BLOCK = re.compile(rf"\s*{FENCE}{INFO}\n({LINES}){FENCE}")  # parsing: any white space before a block


def fits(value: Any) -> bool:
    """Whether a block carries `value` exactly."""
    return isinstance(value, str) and (value == "" or value.endswith("\n")) and \
        not any(line.startswith(FENCE) for line in value.split("\n"))


def block(value: str) -> str:
    """The text of one block, with the newline before it."""
    return f"\n{FENCE}\n{value}{FENCE}"


def split_raw(arguments: dict[str, Any], raw: tuple[str, ...]) -> tuple[dict[str, Any], list[str]]:
    """The call's JSON arguments and its block values: the raw ones taken out when blocks carry them all."""
    if not raw or not all(name in arguments and fits(arguments[name]) for name in raw):
        return arguments, []
    return {k: v for k, v in arguments.items() if k not in raw}, [arguments[name] for name in raw]


def call_text(name: str, arguments: dict[str, Any], raw: tuple[str, ...] = ()) -> str:
    """The canonical text of a call: its canonical JSON (one line) and then its blocks."""
    json_arguments, values = split_raw(arguments, raw)
    return canonical_json({"name": name, "arguments": json_arguments}) + "".join(map(block, values))


def read_blocks(text: str, names: tuple[str, ...]) -> list[str]:
    """The values of the blocks, one per name, that are all of `text` (white space around them aside); ValueError
    if `text` is anything else."""
    values, at = [], 0
    for name in names:
        found = BLOCK.match(text, at)
        if found is None:
            problem = "is not closed (was it cut off?)" if text[at:].lstrip().startswith(FENCE) else "is missing"
            raise ValueError(f"the {name} block {problem}")
        values.append(found.group(1))
        at = found.end()
    if text[at:].strip():
        after = "the JSON object and its blocks" if names else "the JSON object"
        raise ValueError(f"unexpected text after {after}: {text[at:][:80]!r}")
    return values


def where(raw: tuple[str, ...]) -> str:
    """Where a call's raw parameters go, in words."""
    if len(raw) == 1:
        return f"{raw[0]} goes in a {FENCE} block on the line after the call"
    return f"{' and '.join(raw)} go in {FENCE} blocks after the call, one each, in that order"
