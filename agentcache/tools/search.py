"""The search tool: a regex over the repo's safe text files, filtered by an optional glob, under a time budget.

The pattern runs on the `regex` module (Python `re` syntax) with a timeout, so catastrophic backtracking stops:
each file gets FILE_BUDGET_S seconds and the whole search TOTAL_BUDGET_S; the output says where it stopped. The
budgets are wall-clock between lines; within one line the regex module counts the process's CPU time, so a
pathological line on a loaded machine may take longer than its budget in wall time, but never without bound.
"""
from __future__ import annotations

import re
import time
from pathlib import Path, PurePosixPath
from typing import Any

import regex

from agentcache.tools.base import ToolError, ToolOutcome
from agentcache.tools.workspace import Workspace
from layers.repo import BINARY_SNIFF_BYTES, PRIVATE_KEY_MARKER

MAX_MATCHES = 200
MAX_MATCH_CHARS = 300
FILE_BUDGET_S = 2.0
TOTAL_BUDGET_S = 10.0
NO_MATCH_HINT = " for this pattern; read_file shows a whole file"
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


def matches_glob(path: str, wanted: re.Pattern[str], anywhere: bool) -> bool:
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    candidates = prefixes + parts if anywhere else prefixes
    return any(wanted.fullmatch(c) for c in candidates)


def file_matches(path: Path, pattern: regex.Pattern, deadline: float) -> tuple[list[tuple[int, str]], int | None]:
    """The matching (line number, line) of one text file, and the line the deadline stopped it at (None if it
    ran to the end); a binary or private-key file has none."""
    data = path.read_bytes()
    if b"\0" in data[:BINARY_SNIFF_BYTES] or PRIVATE_KEY_MARKER in data:
        return [], None
    found = []
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        try:
            hit = pattern.search(line, timeout=max(deadline - time.monotonic(), 0))
        except TimeoutError:
            return found, number
        if hit:
            found.append((number, line))
    return found, None


def shorten(line: str) -> str:
    return line if len(line) <= MAX_MATCH_CHARS else line[:MAX_MATCH_CHARS] + " [line truncated]"


def compile_pattern(text: str) -> regex.Pattern:
    try:
        return regex.compile(text)
    except (regex.error, ValueError, TypeError) as exc:
        raise ToolError(f"invalid regular expression {text!r}: {exc}") from None


def search(ws: Workspace, args: dict[str, Any]) -> ToolOutcome:
    pattern = compile_pattern(args["pattern"])
    files = ws.files()
    if "path" in args:
        glob = args["path"]
        wanted = glob_filter(glob)
        files = [f for f in files if matches_glob(f, wanted, anywhere="/" not in glob.strip("/"))]
    found: list[str] = []
    stopped: list[str] = []
    total = searched = 0
    end = time.monotonic() + TOTAL_BUDGET_S
    for rel in files:
        if time.monotonic() >= end:
            break
        searched += 1
        file_end = min(time.monotonic() + FILE_BUDGET_S, end)
        matches, stopped_at = file_matches(ws.root / rel, pattern, file_end)
        for number, line in matches:
            total += 1
            if len(found) < MAX_MATCHES:
                found.append(f"{rel}:{number}:{shorten(line)}")
        if stopped_at is not None:
            budget = f"the search's {TOTAL_BUDGET_S:g} s" if file_end == end else f"the {FILE_BUDGET_S:g} s per-file"
            stopped.append(f"[search stopped in {rel} at line {stopped_at}: the pattern ran past {budget} budget; "
                           "later lines were not searched]")
    if total > len(found):
        found.append(f"[truncated: {total - len(found)} more matches]")
    if not found and not stopped:
        return ToolOutcome(f"(no matches in {len(files)} files){NO_MATCH_HINT}")
    lines = found or [f"(no matches in {searched} searched files){NO_MATCH_HINT}"]
    lines += stopped
    if searched < len(files):
        lines.append(f"[search stopped at its {TOTAL_BUDGET_S:g} s budget: {len(files) - searched} of "
                     f"{len(files)} files not searched]")
    return ToolOutcome("\n".join(lines))
