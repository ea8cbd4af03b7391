"""The search tool: a regex over the repo's safe text files, filtered by an optional glob, under a time budget.

The output starts with the count of matching lines ("at least" when a budget or a size cap stopped the search; not
the count of files, which a small model gave when asked how many tests there are), then the hits grouped by file:
the path once, then each hit as `N: text`, preceded by the header lines of the classes and functions that hold it
(`N- text`, from the file's outline) when those are not hits themselves, so a hit in a docstring or a method body
shows whose it is. A file is outlined only when it has a hit and is at most MAX_OUTLINE_BYTES; a file with no
outline (another language, or text that does not parse) shows its hits alone.

The pattern and the glob both run on the `regex` module with a timeout, so catastrophic backtracking in either
stops: the glob and the whole search share TOTAL_BUDGET_S, and each file gets FILE_BUDGET_S seconds; the output says
where it stopped. Files are read a bounded line at a time (MAX_LINE_BYTES of a line, MAX_FILE_BYTES of a file). The
budgets are wall-clock between lines; within one line the regex module counts the process's CPU time, so a
pathological line on a loaded machine may take longer than its budget in wall time, but never without bound.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import PurePosixPath
from typing import Any

import regex

from agentcache.tools.base import ToolError, ToolOutcome
from agentcache.tools.workspace import Workspace
from layers.errors import RepoError
from layers.outline import enclosing, outline
from layers.repo import BINARY_SNIFF_BYTES, capped_lines, has_private_key, open_listed

MAX_MATCHES = 200
MAX_FILE_MATCHES = 20  # hits shown per file; the rest are counted
MAX_OUTLINE_BYTES = 1024 * 1024  # of a file outlined for the scope lines above its hits
MAX_MATCH_CHARS = 300
MAX_LINE_BYTES = 64 * 1024  # of one line searched; the rest of a longer line is not
MAX_FILE_BYTES = 16 * 1024 * 1024  # of one file searched; the rest is not, and the output says so
MAX_GLOB_CHARS = 512
FILE_BUDGET_S = 2.0
TOTAL_BUDGET_S = 10.0
NO_MATCH_HINT = " for this pattern; read_file shows a whole file"
GLOB_PART = re.compile(r"\*\*/|\*\*|\*|\?|\[[^\]]*\]|[^*?\[]+|\[")


def glob_regex(glob: str) -> regex.Pattern:
    pieces = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    parts = []
    for token in GLOB_PART.findall(glob):
        if token in pieces:
            parts.append(pieces[token])
        elif token.startswith("[") and token.endswith("]") and len(token) > 2:
            parts.append("[" + token[1:-1].replace("\\", "\\\\").replace("!", "^", 1) + "]")
        else:
            parts.append(re.escape(token))
    try:
        return regex.compile("".join(parts))
    except (regex.error, ValueError) as exc:
        raise ToolError(f"invalid path glob {glob!r}: {exc}") from None


def glob_filter(glob: str) -> regex.Pattern:
    glob = glob.strip().removeprefix("./")
    if len(glob) > MAX_GLOB_CHARS:
        raise ToolError(f"path glob is longer than {MAX_GLOB_CHARS} characters")
    if glob.startswith("/") or ".." in PurePosixPath(glob).parts:
        raise ToolError(f"path glob '{glob}' is outside the repository root")
    return glob_regex(glob.rstrip("/"))


def matches_glob(path: str, wanted: regex.Pattern, anywhere: bool, deadline: float) -> bool:
    """Whether the glob matches the path, a folder above it or (`anywhere`) one of its names; TimeoutError past
    the deadline."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    candidates = prefixes + parts if anywhere else prefixes
    return any(wanted.fullmatch(c, timeout=max(deadline - time.monotonic(), 0)) for c in candidates)


def file_matches(ws: Workspace, rel: str, listed: set[str], pattern: regex.Pattern,
                 deadline: float) -> tuple[list[tuple[int, str]], int | None, list[str] | None]:
    """The matching (line number, line) of one text file, the line a deadline or MAX_FILE_BYTES stopped it at
    (None if it ran to the end), and all its lines when it was read whole and is at most MAX_OUTLINE_BYTES (else
    None); a binary, private-key or unopenable file has none. The file is opened once at the listed name it
    resolves to, no link followed (open_listed)."""
    try:
        file = os.fdopen(open_listed(ws.root, rel, listed), "rb")
    except RepoError:
        return [], None, None
    found, read = [], 0
    lines: list[str] | None = []
    with file:
        if b"\0" in file.read(BINARY_SNIFF_BYTES):
            return [], None, None
        file.seek(0)
        for number, (raw, length) in enumerate(capped_lines(file, MAX_LINE_BYTES), 1):
            if has_private_key(raw):
                return [], None, None
            if read >= MAX_FILE_BYTES:
                return found, number, None
            read += length
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if read > MAX_OUTLINE_BYTES or length > len(raw):
                lines = None
            elif lines is not None:
                lines.append(line)
            try:
                hit = pattern.search(line, timeout=max(deadline - time.monotonic(), 0))
            except TimeoutError:
                return found, number, None
            if hit:
                found.append((number, line))
    return found, None, lines


def file_group(rel: str, matches: list[tuple[int, str]], lines: list[str] | None, shown: int) -> list[str]:
    """One file's part of the output: its path, then its first `shown` hits, each after the header lines of the
    classes and functions holding it that are not hits and not shown yet, then how many hits were left out."""
    symbols = outline(rel, "\n".join(lines) + "\n") if lines is not None else None
    hits = {number for number, _ in matches}
    group, scopes = [rel], set()
    for number, line in matches[:shown]:
        for symbol in enclosing(symbols, number) if symbols else []:
            if symbol.line not in hits and symbol.line not in scopes:
                scopes.add(symbol.line)
                group.append(f"  {symbol.line}- {shorten(lines[symbol.line - 1])}")
        group.append(f"  {number}: {shorten(line)}")
    if len(matches) > shown:
        group.append(f"  [{len(matches) - shown} more in this file]")
    return group


def stop_reason(file_end: float, end: float) -> str:
    if time.monotonic() < file_end:
        return f"the first {MAX_FILE_BYTES >> 20} MiB of a file are searched"
    budget = f"the search's {TOTAL_BUDGET_S:g} s" if file_end == end else f"the {FILE_BUDGET_S:g} s per-file"
    return f"the pattern ran past {budget} budget"


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def shorten(line: str) -> str:
    return line if len(line) <= MAX_MATCH_CHARS else line[:MAX_MATCH_CHARS] + " [line truncated]"


def compile_pattern(text: str) -> regex.Pattern:
    try:
        return regex.compile(text)
    except (regex.error, ValueError, TypeError) as exc:
        raise ToolError(f"invalid regular expression {text!r}: {exc}") from None


def search(ws: Workspace, args: dict[str, Any]) -> ToolOutcome:
    pattern = compile_pattern(args["pattern"])
    end = time.monotonic() + TOTAL_BUDGET_S
    files = ws.files()
    listed = set(files)
    if "path" in args:
        glob = args["path"]
        wanted = glob_filter(glob)
        try:
            files = [f for f in files if matches_glob(f, wanted, "/" not in glob.strip("/"), end)]
        except TimeoutError:
            raise ToolError(f"path glob {glob!r} ran past the search's {TOTAL_BUDGET_S:g} s budget while matching file "
                            "names; use a simpler glob") from None
    found: list[str] = []
    stopped: list[str] = []
    shown = untold = searched = total = 0
    for rel in files:
        if time.monotonic() >= end:
            break
        searched += 1
        file_end = min(time.monotonic() + FILE_BUDGET_S, end)
        matches, stopped_at, source = file_matches(ws, rel, listed, pattern, file_end)
        total += len(matches)
        room = min(MAX_FILE_MATCHES, MAX_MATCHES - shown)
        if matches and room:
            found += file_group(rel, matches, source if time.monotonic() < end else None, room)
            shown += min(room, len(matches))
        else:
            untold += len(matches)
        if stopped_at is not None:
            stopped.append(f"[search stopped in {rel} at line {stopped_at}: {stop_reason(file_end, end)}; later lines "
                           "were not searched]")
    if untold:
        found.append(f"[truncated: {untold} more matches]")
    if not found and not stopped:
        return ToolOutcome(f"(no matches in {plural(len(files), 'file')}){NO_MATCH_HINT}")
    complete = not stopped and searched == len(files)
    count = f"{'' if complete else 'at least '}{plural(total, 'matching line')}"
    lines = [f"[{count}]", *found] if found else [f"(no matches in {plural(searched, 'searched file')}){NO_MATCH_HINT}"]
    lines += stopped
    if searched < len(files):
        lines.append(f"[search stopped at its {TOTAL_BUDGET_S:g} s budget: {len(files) - searched} of "
                     f"{len(files)} files not searched]")
    return ToolOutcome("\n".join(lines))
