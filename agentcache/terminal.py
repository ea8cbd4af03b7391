"""What the CLI prints of text it did not write (replies, file names, session fields): every character a terminal
could act on shown as a visible escape, rich markup kept as text, and `--json` in ASCII."""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from rich.console import Console
from rich.text import Text

# C0 controls but tab and newline, DEL, C1 controls (U+009B is CSI to some terminals), the bidi embeddings,
# overrides, isolates and marks (they reorder what is shown), and lone surrogates (no UTF-8 can hold them)
UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def inert(text: str) -> str:
    """`text` with each unsafe character written as its escape: ESC as the four characters `\\x1b`, U+202E as
    `\\u202e`; tab, newline and every printable character unchanged."""
    return UNSAFE.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def cell(value: object) -> Text:
    """Data as a table cell or title: inert plain text. (A str cell is parsed as markup, and rich.markup.escape
    is not enough: it drops the backslash of a `\\[` that does not open a tag.)"""
    return Text(inert(str(value)))


def console(stderr: bool = False) -> Console:
    """The console a command prints with: no highlighting, and `:name:` in data is not turned into an emoji."""
    return Console(highlight=False, emoji=False, stderr=stderr)


def write_json(value: Any) -> None:
    """A `--json` report on stdout. ASCII only: json.dumps escapes C0 controls either way, but with
    ensure_ascii=False it writes C1 and bidi characters raw; here every non-ASCII character is `\\uXXXX`."""
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=True) + "\n")
