"""The file tools: list_files, read_file (numbered lines), write_file and edit_file (one exact replacement)."""
from __future__ import annotations

import os
from typing import Any, BinaryIO

from agentcache.tools.base import ToolError, ToolOutcome
from agentcache.tools.workspace import Workspace
from layers.repo import BINARY_SNIFF_BYTES, capped_lines, has_private_key

MAX_LIST_FILES = 2000
MAX_LINES = 2000
MAX_OUTPUT_BYTES = 256 * 1024
MAX_LINE_CHARS = 2000
MAX_EDIT_BYTES = 1024 * 1024
MAX_LINE_BYTES = 4 * MAX_LINE_CHARS  # of a line held in memory: a 300 MB one-line file is read 8 KB at a time


def list_files(ws: Workspace, args: dict[str, Any]) -> ToolOutcome:
    rel = ws.directory(args.get("path", "."))
    files = ws.files() if rel == "." else [f for f in ws.files() if f.startswith(rel + "/")]
    if not files:
        return ToolOutcome("(no files)")
    shown = files[:MAX_LIST_FILES]
    if len(files) > len(shown):
        shown.append(f"[truncated: {len(files) - len(shown)} more files]")
    return ToolOutcome("\n".join(shown))


def check_text(shown_as: str, data: bytes) -> None:
    if b"\0" in data[:BINARY_SNIFF_BYTES]:
        raise ToolError(f"{shown_as} is a binary file; only text files can be read or edited")
    if has_private_key(data):
        raise ToolError(f"{shown_as} contains a private key; tools may not touch it")


def check_no_key(shown_as: str, file: BinaryIO) -> None:
    """Refuse a file holding a private key anywhere, reading it a bounded line at a time."""
    file.seek(0)
    for raw, _ in capped_lines(file, MAX_LINE_BYTES):
        if has_private_key(raw):
            raise ToolError(f"{shown_as} contains a private key; tools may not touch it")


def decode_line(raw: bytes, length: int, number: int, shown_as: str) -> str:
    """A line read as its first bytes and its whole length (capped_lines), cut at MAX_LINE_CHARS. A line longer
    than what was read may end inside a character: that partial character is dropped."""
    cut = length > len(raw)
    try:
        text = raw.decode("utf-8", errors="ignore" if cut else "strict").rstrip("\r\n")
    except UnicodeDecodeError:
        raise ToolError(f"{shown_as} is not UTF-8 text (line {number}); only text files can be read") from None
    if cut:
        return text[:MAX_LINE_CHARS] + f" [line truncated: {length} bytes in all]"
    if len(text) > MAX_LINE_CHARS:
        return text[:MAX_LINE_CHARS] + f" [line truncated: {len(text) - MAX_LINE_CHARS} more chars]"
    return text


def read_file(ws: Workspace, args: dict[str, Any]) -> ToolOutcome:
    shown_as = args["path"]
    start, end = args.get("start_line", 1), args.get("end_line")
    if end is not None and end < start:
        raise ToolError(f"end_line {end} is before start_line {start}")
    lines: list[str] = []
    size = omitted = total = 0
    with ws.read_handle(shown_as) as f:
        check_text(shown_as, f.read(BINARY_SNIFF_BYTES))
        f.seek(0)
        for total, (raw, length) in enumerate(capped_lines(f, MAX_LINE_BYTES), 1):
            check_text(shown_as, raw)
            if total < start:
                continue
            if end is not None and total > end:
                break
            if omitted or len(lines) >= MAX_LINES or size >= MAX_OUTPUT_BYTES:
                omitted += 1
                continue
            line = f"{total:>6}\t{decode_line(raw, length, total, shown_as)}"
            lines.append(line)
            size += len(line.encode()) + 1
    if not lines:
        if total == 0:
            return ToolOutcome(f"({shown_as} is empty)")
        raise ToolError(f"start_line {start} is past the end of {shown_as} ({total} lines)")
    if omitted:
        lines.append(f"[truncated: {omitted} more lines; continue with start_line={start + len(lines)}]")
    return ToolOutcome("\n".join(lines))


def replace_content(file: BinaryIO, data: bytes) -> None:
    file.seek(0)
    file.truncate()
    file.write(data)


def write_file(ws: Workspace, args: dict[str, Any]) -> ToolOutcome:
    data = args["content"].encode("utf-8")
    file, existed = ws.write_handle(args["path"])
    with file:
        try:
            check_no_key(args["path"], file)
        except ToolError:
            raise ToolError(f"path '{args['path']}' holds a private key; tools may not overwrite it") from None
        replace_content(file, data)
    return ToolOutcome(f"{'replaced' if existed else 'created'} {args['path']} ({len(data)} bytes)")


def edit_file(ws: Workspace, args: dict[str, Any]) -> ToolOutcome:
    shown_as, old, new = args["path"], args["old"], args["new"]
    if not old:
        raise ToolError("argument 'old' is empty; give the exact text to replace")
    with ws.edit_handle(shown_as) as file:
        if os.fstat(file.fileno()).st_size > MAX_EDIT_BYTES:
            raise ToolError(f"{shown_as} is larger than {MAX_EDIT_BYTES // 1024} KiB; edit_file refuses huge files")
        data = file.read(MAX_EDIT_BYTES + 1)
        check_text(shown_as, data)
        text, line = checked_edit(shown_as, data, old, new)
        replace_content(file, text.encode("utf-8"))
    return ToolOutcome(f"edited {shown_as}: replaced 1 occurrence at line {line}")


def checked_edit(shown_as: str, data: bytes, old: str, new: str) -> tuple[str, int]:
    """The file's text with its one occurrence of `old` replaced by `new`, and the line it starts on; refused for
    none or several."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ToolError(f"{shown_as} is not UTF-8 text; only text files can be edited") from None
    count = text.count(old)
    if count == 0:
        raise ToolError(f"old text not found in {shown_as}; read the file and copy the text exactly")
    if count > 1:
        raise ToolError(f"old text occurs {count} times in {shown_as}; include more context so it occurs once")
    index = text.index(old)
    return text[:index] + new + text[index + len(old):], text.count("\n", 0, index) + 1
