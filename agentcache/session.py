"""Sessions: `.agentcache/sessions/<id>.jsonl`, one JSON record per line, appended and flushed per record. Only regular
files in real directories are opened (see agentcache.safe_files); a file over MAX_STATE_FILE_BYTES is refused."""

from __future__ import annotations

import json
import os
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentcache.errors import AgentcacheError
from agentcache.records import record_problem
from agentcache.safe_files import STATE_DIR, kind, open_regular, private_dir, read_capped, state_dirs

SESSIONS_DIR = Path(STATE_DIR) / "sessions"


def new_session_id() -> str:
    """UTC time to the microsecond, then random hex: ids sort in creation order, also within one second."""
    now = time.time_ns()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now // 1_000_000_000))
    return f"{stamp}-{now // 1000 % 1_000_000:06d}-{secrets.token_hex(3)}"


@dataclass(frozen=True, slots=True)
class BadLine:
    number: int
    problem: str
    torn: bool = False  # the last line, cut short without its newline: what a killed run can leave

    def warning(self, session_id: str) -> str:
        return f"warning: session {session_id} line {self.number} is not a valid record ({self.problem}); skipped"


class Session:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.id = path.stem

    @classmethod
    def create(cls, repo: Path) -> Session:
        directory = state_dirs(repo / SESSIONS_DIR, create=True)
        private_dir(directory)  # also one an older version made
        return cls(directory / f"{new_session_id()}.jsonl")

    @classmethod
    def open(cls, repo: Path, ref: str = "latest") -> Session:
        directory = repo / SESSIONS_DIR
        if ref == "latest":
            names = _session_names(directory)
            if not names:
                raise AgentcacheError(f"no sessions in {SESSIONS_DIR} of this repo")
            return cls(_regular(directory / names[-1]))
        path = directory / f"{ref}.jsonl"
        if Path(ref).name != ref or state_dirs(directory) is None or not os.path.lexists(path):
            raise AgentcacheError(f"no session '{ref}' in {SESSIONS_DIR} of this repo")
        return cls(_regular(path))

    def lineage(self) -> str:
        """The id of the session this one descends from by forks (its own id when it is not a fork): the routing key
        of `routing: session`. A fork's first record names its parent (`forked_from`)."""
        session, seen = self, {self.id}
        while True:
            try:
                records = session.read()[0]
            except AgentcacheError:  # not written yet, or refused: the chain ends here
                records = []
            first = records[0] if records else {}
            parent = first.get("forked_from") if first.get("type") == "agent" else None
            parent_id = parent.get("session_id") if isinstance(parent, dict) else None
            if not isinstance(parent_id, str) or Path(parent_id).name != parent_id or parent_id in seen:
                return session.id
            path = session.path.with_name(f"{parent_id}.jsonl")
            if not _is_regular(path):
                return session.id
            seen.add(parent_id)
            session = Session(path)

    def append(self, record: dict[str, Any]) -> None:
        """One whole line per write, flushed and synced, so a killed run leaves only complete records."""
        line = (json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
        fd = self._open(os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def records(self) -> list[dict[str, Any]]:
        """Every record; a bad line is an error (resume must not silently skip a turn)."""
        out, bad = self.read()
        if bad:
            raise AgentcacheError(f"session {self.id} line {bad[0].number} is not a valid record ({bad[0].problem})")
        return out

    def read(self) -> tuple[list[dict[str, Any]], list[BadLine]]:
        """The valid records and the lines that are not one: not JSON, torn, or a record of the wrong shape.
        Lines end at "\\n" only: a record's text may hold other line separators (U+2028, NEL)."""
        out, bad = [], []
        data = self._read(self._open(os.O_RDONLY))
        lines = data.decode("utf-8", errors="replace").split("\n")
        if lines[-1] == "":
            lines.pop()
        for number, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):  # also numbers of too many digits, nesting too deep
                if line.strip():
                    torn = number == len(lines) and not data.endswith(b"\n")
                    bad.append(BadLine(number, "torn: the end of a killed write" if torn else "not valid JSON", torn))
                continue
            problem = record_problem(record)
            if problem is None:
                out.append(record)
            else:
                bad.append(BadLine(number, problem))
        return out, bad

    def end_at_line(self) -> None:
        """Before appending to an old file: a torn last line (never a whole record) is cut off, a whole last line
        without its newline gets one, so the next record is a line of its own."""
        fd = self._open(os.O_RDWR | os.O_APPEND)
        try:
            data = self._read(fd, close=False)
            if not data or data.endswith(b"\n"):
                return
            start = data.rfind(b"\n") + 1
            try:
                json.loads(data[start:])
            except (ValueError, RecursionError):
                os.ftruncate(fd, start)
                return
            os.write(fd, b"\n")
        finally:
            os.close(fd)

    def _open(self, flags: int) -> int:
        """A descriptor of this session's file, once `.agentcache`, its sessions dir and the file itself are what
        they must be: never a link, a FIFO, a device or a directory."""
        state_dirs(self.path.parent)
        return open_regular(self.path, flags, "session file")

    def _read(self, fd: int, close: bool = True) -> bytes:
        try:
            return read_capped(fd, f"session file {self.path}")
        finally:
            if close:
                os.close(fd)


def _session_names(directory: Path) -> list[str]:
    """The session file names in directory, oldest first (none when it is missing; refused when it is a link)."""
    if state_dirs(directory) is None:
        return []
    try:
        names = [entry.name for entry in os.scandir(directory)]
    except OSError as exc:
        raise AgentcacheError(f"cannot list {directory}: {exc.strerror or exc}") from None
    return sorted(name for name in names if name.endswith(".jsonl") and not name.startswith("."))


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _regular(path: Path) -> Path:
    """path when it is a regular file itself; a session named by a link, a FIFO or a directory is refused."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        raise AgentcacheError(f"no session '{path.stem}' in {SESSIONS_DIR} of this repo") from None
    if not stat.S_ISREG(mode):
        raise AgentcacheError(f"session file {path} is {kind(mode)}, not a regular file; remove it or name another "
                              "session")
    return path
