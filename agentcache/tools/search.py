"""The search tool: a Python regex over the repo's safe text files, filtered by an optional glob."""
from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any

from agentcache.tools.base import ToolError, ToolOutcome
from agentcache.tools.workspace import Workspace
from layers.repo import BINARY_SNIFF_BYTES, PRIVATE_KEY_MARKER

MAX_MATCHES = 200
MAX_MATCH_CHARS = 300
GLOB_PART = re.compile(r"\*\*/|\*\*|\*|\?|\[[^\]]*\]|[^*?\[]+|\[")


def glob_regex(glob: str) -> re.Pattern[str]:
    pieces = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    parts = []
    for token in GLOB_PART.findall(glob):
        if token in pieces:
            parts.append(pieces[token])
        elif token.startswith("[") and token.endswith("]") and len(token) > 2:
            parts.append("[" + token[1:-1].replace("\\", "\\\\").replace("!", "^", 1) + "]")
        else:
            parts.append(re.escape(token))
    return re.compile("".join(parts))


def glob_filter(glob: str) -> re.Pattern[str]:
    glob = glob.strip().removeprefix("./")
    if glob.startswith("/") or ".." in PurePosixPath(glob).parts:
        raise ToolError(f"path glob '{glob}' is outside the repository root")
    return glob_regex(glob.rstrip("/"))


def matches_glob(path: str, regex: re.Pattern[str], anywhere: bool) -> bool:
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    candidates = prefixes + parts if anywhere else prefixes
    return any(regex.fullmatch(c) for c in candidates)


def file_matches(data: bytes, regex: re.Pattern[str]) -> list[tuple[int, str]]:
    if b"\0" in data[:BINARY_SNIFF_BYTES] or PRIVATE_KEY_MARKER in data:
        return []
    text = data.decode("utf-8", errors="replace")
    return [(n, line) for n, line in enumerate(text.splitlines(), 1) if regex.search(line)]


def shorten(line: str) -> str:
    return line if len(line) <= MAX_MATCH_CHARS else line[:MAX_MATCH_CHARS] + " [line truncated]"


def search(ws: Workspace, args: dict[str, Any]) -> ToolOutcome:
    pattern = args["pattern"]
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise ToolError(f"invalid regular expression {pattern!r}: {exc}") from None
    files = ws.files()
    if "path" in args:
        glob = args["path"]
        wanted = glob_filter(glob)
        files = [f for f in files if matches_glob(f, wanted, anywhere="/" not in glob.strip("/"))]
    found: list[str] = []
    total = 0
    for rel in files:
        for number, line in file_matches((ws.root / rel).read_bytes(), regex):
            total += 1
            if len(found) < MAX_MATCHES:
                found.append(f"{rel}:{number}:{shorten(line)}")
    if not found:
        return ToolOutcome(f"(no matches in {len(files)} files)")
    if total > len(found):
        found.append(f"[truncated: {total - len(found)} more matches]")
    return ToolOutcome("\n".join(found))
