"""The file tools: list_files, read_file (numbered lines), write_file and edit_file (one replacement).

A write or edit never loses what a file had without saying so: write_file over an existing file is refused when
the new content drops a definition the old one had (or, for a file with no outline, more than half of its
non-blank lines), and either tool is refused when it would leave a file that parsed unparsable. Refused means the
file is unchanged and the message says what would have been lost.
"""
from __future__ import annotations

import difflib
import os
from collections import Counter
from dataclasses import dataclass
from typing import Any, BinaryIO

from agentcache.tools.base import Change, ToolError, ToolOutcome
from agentcache.tools.workspace import Workspace
from layers.outline import Symbol, defined_names, outline, syntax_error
from layers.repo import BINARY_SNIFF_BYTES, capped_lines, has_private_key
from layers.repomap import outline_text

MAX_LIST_FILES = 2000
MAX_LINES = 2000  # a read with an end_line shows at most this many lines
READ_WINDOW = 300  # a read without one shows at most this many; a longer file read with no range, its outline
MAX_OUTPUT_BYTES = 256 * 1024
MAX_LINE_CHARS = 2000
MAX_EDIT_BYTES = 1024 * 1024
MAX_LINE_BYTES = 4 * MAX_LINE_CHARS  # of a line held in memory: a 300 MB one-line file is read 8 KB at a time
MAX_NAMED = 10  # dropped definitions or line ranges a refusal names
MIN_GUARDED_LINES = 10  # a file without an outline and with fewer non-blank lines may be rewritten whole
WHOLE_FILE_LINES = 150  # a longer file is changed by edit_file (search/replace), never rewritten whole
CLOSE_RATIO = 0.6  # how like old text's first line a line must be to be shown as the closest text
CLOSE_LINES = 30  # the most lines shown as the closest text
KEEP_HINT = "use edit_file to change part of the file, or write the whole file with them kept"


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


def file_outline(ws: Workspace, shown_as: str) -> tuple[int, list[Symbol] | None]:
    """The file's line count and outline; (0, None) for a file over MAX_EDIT_BYTES, not text or holding a key (the
    read that follows says which), (lines, None) for an unsupported language or a file that does not parse."""
    with ws.read_handle(shown_as) as f:
        data = f.read(MAX_EDIT_BYTES + 1)
    if len(data) > MAX_EDIT_BYTES or b"\0" in data[:BINARY_SNIFF_BYTES] or has_private_key(data):
        return 0, None
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return 0, None
    return len(text.splitlines()), outline(shown_as, text)


def definition_end(symbols: list[Symbol], start: int, end: int | None) -> tuple[int | None, str | None]:
    """With an end: `end` moved to the last line of the class or function that starts in [start, end] and runs past
    it (the outermost), so a read of a definition's first line shows the whole definition. Without: the end of the
    outermost definition that starts at `start`. Either with the definition's name; (end, None) when none does."""
    last = start if end is None else end
    cut = [s for s in symbols if s.kind != "constant" and start <= s.line <= last and s.end_line > (end or 0)]
    if not cut:
        return end, None
    widest = max(cut, key=lambda s: s.end_line)
    return widest.end_line, widest.name


def read_file(ws: Workspace, args: dict[str, Any]) -> ToolOutcome:
    """Numbered lines. A file of more than READ_WINDOW lines read with no range is shown as its outline: whole, it
    costs a small model on a CPU minutes of prefill and buries the line it needed."""
    shown_as, start = args["path"], args.get("start_line")
    end = args.get("end_line")
    if end is not None and start is not None and end < start:
        raise ToolError(f"end_line {end} is before start_line {start}")
    total, symbols = file_outline(ws, shown_as)
    if start is None and end is None and total > READ_WINDOW and symbols:
        return ToolOutcome(
            f"[{shown_as} has {total} lines; its outline follows. Read a part with start_line and end_line: a "
            f"range that starts at a definition's line shows the whole definition]\n{outline_text(symbols, every=True)}")
    most = MAX_LINES if end is not None else READ_WINDOW
    widened = None
    if start is not None or end is not None:
        end, widened = definition_end(symbols or [], start or 1, end)
    start = start or 1
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
            if omitted or len(lines) >= most or size >= MAX_OUTPUT_BYTES:
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
    elif widened:
        lines.append(f"[shown to line {end}, the end of `{widened}`, which starts in the lines asked for]")
    return ToolOutcome("\n".join(lines))


def replace_content(file: BinaryIO, data: bytes) -> None:
    file.seek(0)
    file.truncate()
    file.write(data)


def write_file(ws: Workspace, args: dict[str, Any]) -> ToolOutcome:
    shown_as, content = args["path"], args["content"]
    data = content.encode("utf-8")
    problem = syntax_error(shown_as, content)
    if problem is not None and is_new_file(ws, shown_as):
        raise ToolError(f"the content for {shown_as} does not parse ({problem}); the file was not created")
    file, existed = ws.write_handle(shown_as)
    before = None
    with file:
        try:
            check_no_key(shown_as, file)
        except ToolError:
            raise ToolError(f"path '{shown_as}' holds a private key; tools may not overwrite it") from None
        if existed:
            before = previous_text(shown_as, file)
            check_short(shown_as, before)
            check_still_parses(shown_as, before, problem)
            check_keeps(shown_as, before, content)
        replace_content(file, data)
    return ToolOutcome(f"{'replaced' if existed else 'created'} {shown_as} ({len(data)} bytes)",
                       change=Change(shown_as, 1, before, content))


def is_new_file(ws: Workspace, path: str) -> bool:
    """Whether `path` names no file yet; the path checks of write_handle come first, so their refusals win."""
    resolved = ws.resolve(path)
    ws.check_allowed(path, resolved)
    ws.check_not_config(path, resolved)
    return not os.path.lexists(resolved)


def previous_text(shown_as: str, file: BinaryIO) -> str:
    if os.fstat(file.fileno()).st_size > MAX_EDIT_BYTES:
        raise ToolError(f"{shown_as} is larger than {MAX_EDIT_BYTES // 1024} KiB; write_file will not replace a huge "
                        "file whole")
    file.seek(0)
    return file.read(MAX_EDIT_BYTES + 1).decode("utf-8", errors="replace")


def check_short(shown_as: str, before: str) -> None:
    """Refuse to rewrite a long file whole: retyping hundreds of lines to change a few is where small models drop
    or mangle code, so a file over WHOLE_FILE_LINES lines is changed with edit_file."""
    lines = before.count("\n") + (not before.endswith("\n") and bool(before))
    if lines > WHOLE_FILE_LINES:
        raise ToolError(f"{shown_as} has {lines} lines; write_file rewrites only files of up to {WHOLE_FILE_LINES} "
                        f"lines: use edit_file with the exact old lines and the new ones. {shown_as} is unchanged")


def check_still_parses(shown_as: str, before: str, problem: str | None) -> None:
    """Refuse new text that does not parse (`problem`, from syntax_error) over a file that did; a file that did not
    parse before may be mid-repair, so it is let through."""
    if problem is not None and syntax_error(shown_as, before) is None:
        raise ToolError(f"{shown_as} would no longer parse ({problem}); {shown_as} is unchanged")


def check_keeps(shown_as: str, before: str, after: str) -> None:
    """Refuse a whole-file write that drops what the file had: a definition (its outline's names) or, for a file
    with no outline or no definitions, more than half of its non-blank lines (files under MIN_GUARDED_LINES such
    lines excepted)."""
    names = defined_names(shown_as, before)
    if names:
        lost = sorted(names - (defined_names(shown_as, after) or set()))
        if lost:
            raise ToolError(f"the new content drops {len(lost)} of the names {shown_as} defines: {capped(lost)}; "
                            f"{KEEP_HINT}. {shown_as} is unchanged")
        return
    old = [(n, line.strip()) for n, line in enumerate(before.splitlines(), 1) if line.strip()]
    if len(old) < MIN_GUARDED_LINES:
        return
    kept = Counter(line.strip() for line in after.splitlines() if line.strip())
    dropped = []
    for number, line in old:
        if kept[line]:
            kept[line] -= 1
        else:
            dropped.append(number)
    if 2 * len(dropped) > len(old):
        raise ToolError(f"the new content drops {len(dropped)} of the {len(old)} non-blank lines {shown_as} has "
                        f"(lines {capped(line_ranges(dropped))}); {KEEP_HINT}. {shown_as} is unchanged")


def capped(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_NAMED])
    return shown + (f" and {len(items) - MAX_NAMED} more" if len(items) > MAX_NAMED else "")


def line_ranges(numbers: list[int]) -> list[str]:
    """Ascending line numbers as ranges: [3, 4, 5, 9] -> ["3-5", "9"]."""
    ranges: list[list[int]] = []
    for number in numbers:
        if ranges and number == ranges[-1][1] + 1:
            ranges[-1][1] = number
        else:
            ranges.append([number, number])
    return [f"{a}-{b}" if a != b else str(a) for a, b in ranges]


def edit_file(ws: Workspace, args: dict[str, Any]) -> ToolOutcome:
    shown_as, old, new = args["path"], args["old"], args["new"]
    if not old:
        raise ToolError("argument 'old' is empty; give the exact text to replace (to add code, old is the exact lines "
                        "it goes after, and new is those lines with the code after them)")
    with ws.edit_handle(shown_as) as file:
        if os.fstat(file.fileno()).st_size > MAX_EDIT_BYTES:
            raise ToolError(f"{shown_as} is larger than {MAX_EDIT_BYTES // 1024} KiB; edit_file refuses huge files")
        data = file.read(MAX_EDIT_BYTES + 1)
        check_text(shown_as, data)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ToolError(f"{shown_as} is not UTF-8 text; only text files can be edited") from None
        edit = located_edit(shown_as, text, old, new)
        after = text[:edit.start] + edit.new + text[edit.end:]
        check_still_parses(shown_as, text, syntax_error(shown_as, after))
        replace_content(file, after.encode("utf-8"))
    line = text.count("\n", 0, edit.start) + 1
    shifted = f"; new re-indented by {edit.shift:+d}" if edit.shift else ""
    how = "" if edit.exact else f" (matched ignoring whitespace at line {line}{shifted})"
    return ToolOutcome(f"edited {shown_as}: replaced 1 occurrence at line {line}{how}",
                       change=Change(shown_as, line, text[edit.start:edit.end], edit.new))


@dataclass(frozen=True, slots=True)
class Edit:
    """Replace text[start:end] with `new`; a loose (not exact) match re-indented `new` by `shift` characters."""
    start: int
    end: int
    new: str
    exact: bool = True
    shift: int = 0


def located_edit(shown_as: str, text: str, old: str, new: str) -> Edit:
    """Where the one occurrence of `old` is, exact first, else whole lines ignoring trailing whitespace and the
    block's common indentation (`new` re-indented by the same offset); refused for none or several."""
    count = text.count(old)
    if count == 1:
        start = text.index(old)
        return Edit(start, start + len(old), new)
    if count > 1:
        raise ToolError(f"old text occurs {count} times in {shown_as}; include more context so it occurs once")
    found = loose_matches(text, old)
    if not found:
        raise ToolError(f"old text not found in {shown_as}; {closest_text(text, old)}")
    if len(found) > 1:
        lines = capped([str(text.count("\n", 0, start) + 1) for start, *_ in found])
        raise ToolError(f"old text is not in {shown_as} exactly, and ignoring whitespace it matches {len(found)} "
                        f"places (lines {lines}); include more context so it occurs once")
    start, end, indent, old_indent = found[0]
    return Edit(start, end, reindented(new, old_indent, indent), exact=False, shift=len(indent) - len(old_indent))


def closest_text(text: str, old: str) -> str:
    """Where `old` was likely meant to be, for the message that it is not there: the file's lines from the one most
    like old's first non-blank line (a difflib ratio of at least CLOSE_RATIO), as many as old has and one more, at most
    CLOSE_LINES, to copy from; else to read the file. Small models write the old text from memory."""
    wanted = next((line.strip() for line in old.split("\n") if line.strip()), "")
    lines = text.split("\n")
    best, best_ratio = None, CLOSE_RATIO
    for number, line in enumerate(lines):
        matcher = difflib.SequenceMatcher(None, wanted, line.strip())
        if matcher.real_quick_ratio() >= best_ratio and matcher.quick_ratio() >= best_ratio and \
                (ratio := matcher.ratio()) >= best_ratio and (best is None or ratio > best_ratio):
            best, best_ratio = number, ratio
    if best is None:
        return "read the file and copy the text exactly"
    shown = lines[best:best + min(old.strip("\n").count("\n") + 2, CLOSE_LINES)]
    return (f"the closest text is at line {best + 1}; copy the old text exactly from it (or read the file):\n```\n"
            + "\n".join(line[:MAX_LINE_CHARS] for line in shown) + "\n```")


def block_shape(lines: list[str]) -> tuple[str, list[str]]:
    """A block's common indentation, and its lines without it and without trailing whitespace."""
    stripped = [line.rstrip() for line in lines]
    common = os.path.commonprefix([line[: len(line) - len(line.lstrip())] for line in stripped if line])
    return common, [line[len(common):] for line in stripped]


def loose_matches(text: str, old: str) -> list[tuple[int, int, str, str]]:
    """The whole-line blocks of `text` that are `old` up to trailing whitespace and common indentation: (start,
    end, the block's indentation, old's). A trailing newline of `old` takes the block's with it."""
    with_newline = old.endswith("\n")
    old_indent, wanted = block_shape(old.removesuffix("\n").split("\n"))
    if not any(wanted):
        return []
    lines = text.split("\n")
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line) + 1)
    found = []
    for i in range(len(lines) - len(wanted) + 1):
        if lines[i].strip() != wanted[0].strip():
            continue
        indent, shape = block_shape(lines[i:i + len(wanted)])
        if shape == wanted:
            end = starts[i + len(wanted)] - (0 if with_newline else 1)
            found.append((starts[i], min(end, len(text)), indent, old_indent))
    return found


def reindented(new: str, old_indent: str, indent: str) -> str:
    """`new` with `old_indent` swapped for `indent` at the start of each non-blank line that has it."""
    if old_indent == indent:
        return new
    return "\n".join(indent + line[len(old_indent):] if line.strip() and line.startswith(old_indent) else line
                     for line in new.split("\n"))
