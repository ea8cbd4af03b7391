"""Sessions: `.agentcache/sessions/<id>.jsonl`, one JSON record per line, appended and flushed per record."""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentcache.errors import AgentcacheError
from agentcache.records import record_problem

SESSIONS_DIR = Path(".agentcache") / "sessions"


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
        directory = repo / SESSIONS_DIR
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.chmod(0o700)  # also one an older version made
        return cls(directory / f"{new_session_id()}.jsonl")

    @classmethod
    def open(cls, repo: Path, ref: str = "latest") -> Session:
        directory = repo / SESSIONS_DIR
        if ref == "latest":
            found = sorted(directory.glob("*.jsonl")) if directory.is_dir() else []
            if not found:
                raise AgentcacheError(f"no sessions in {SESSIONS_DIR} of this repo")
            return cls(found[-1])
        path = directory / f"{ref}.jsonl"
        if not path.is_file() or Path(ref).name != ref:
            raise AgentcacheError(f"no session '{ref}' in {SESSIONS_DIR} of this repo")
        return cls(path)

    def lineage(self) -> str:
        """The id of the session this one descends from by forks (its own id when it is not a fork): the routing key
        of `routing: session`. A fork's first record names its parent (`forked_from`)."""
        session, seen = self, {self.id}
        while True:
            records = session.read()[0] if session.path.is_file() else []
            first = records[0] if records else {}
            parent = first.get("forked_from") if first.get("type") == "agent" else None
            parent_id = parent.get("session_id") if isinstance(parent, dict) else None
            if not isinstance(parent_id, str) or Path(parent_id).name != parent_id or parent_id in seen:
                return session.id
            path = session.path.with_name(f"{parent_id}.jsonl")
            if not path.is_file():
                return session.id
            seen.add(parent_id)
            session = Session(path)

    def append(self, record: dict[str, Any]) -> None:
        """One whole line per write, flushed and synced, so a killed run leaves only complete records."""
        line = (json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
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
        data = self.path.read_bytes()
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
        data = self.path.read_bytes()
        if not data or data.endswith(b"\n"):
            return
        start = data.rfind(b"\n") + 1
        try:
            json.loads(data[start:])
        except (ValueError, RecursionError):
            os.truncate(self.path, start)
            return
        with open(self.path, "ab") as file:
            file.write(b"\n")
