"""Lint for volatile content (dates, ids, temp and home paths, PIDs, hostname) in L1/L2 blocks."""
from __future__ import annotations

import re
import socket
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from layers.block import Block, Layer
from layers.errors import VolatileContentError

_DATE = r"\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])"
_TIME = r"[T ](?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?"

RULES: dict[str, re.Pattern[str]] = {
    "datetime": re.compile(rf"(?<![\w-]){_DATE}{_TIME}(?![\w:])"),
    "date": re.compile(rf"(?<![\w-]){_DATE}(?![\w:-]|[T ]\d)"),
    "uuid": re.compile(r"(?<![\w-])[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}(?![\w-])"),
    "temp_path": re.compile(
        r"(?<![\w.])(?:/private)?(?:/tmp|/var/folders)/[^\s\"'`)]*"
        r"|\b[A-Za-z]:\\Users\\[^\\\s]+\\AppData\\Local\\Temp\b[^\s\"'`)]*"
    ),
    "pid": re.compile(r"\bpid\s*[=:]?\s*\d+\b", re.IGNORECASE),
    "home_path": re.compile(r"(?<![\w.])/(?:home|Users)/[^/\s\"'`)]+|\b[A-Za-z]:\\Users\\[^\\\s\"'`)]+"),
}


@dataclass(frozen=True, slots=True)
class Finding:
    layer: str
    kind: str
    key: str
    offset: int
    rule: str
    match: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.layer} {self.kind} {self.key} at byte {self.offset}: {self.rule} {self.match!r}"


def _rules(hostname: str | None) -> dict[str, re.Pattern[str]]:
    host = socket.gethostname() if hostname is None else hostname
    if len(host) < 4:
        return RULES
    pattern = re.compile(rf"(?<![\w.-]){re.escape(host)}(?![\w-])", re.IGNORECASE)
    return {**RULES, "hostname": pattern}


def lint_block(block: Block, hostname: str | None = None) -> list[Finding]:
    if block.layer is Layer.L3:
        return []
    text = block.content.decode("utf-8", errors="replace")
    found = []
    for rule, pattern in _rules(hostname).items():
        for m in pattern.finditer(text):
            offset = len(text[: m.start()].encode("utf-8"))
            found.append(Finding(block.layer.name, block.kind, block.key, offset, rule, m.group()))
    return sorted(found, key=lambda f: (f.offset, f.rule))


def lint_blocks(blocks: Iterable[Block], *, strict: bool = False, hostname: str | None = None) -> list[Finding]:
    findings = [f for block in blocks for f in lint_block(block, hostname)]
    if strict and findings:
        more = f" (and {len(findings) - 1} more)" if len(findings) > 1 else ""
        raise VolatileContentError(f"volatile content in {findings[0]}{more}")
    return findings
