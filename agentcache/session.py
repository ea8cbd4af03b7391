"""Sessions: `.agentcache/sessions/<id>.jsonl`, one JSON record per line, appended and flushed per record."""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from agentcache.errors import AgentcacheError

SESSIONS_DIR = Path(".agentcache") / "sessions"


def new_session_id() -> str:
    """UTC time to the microsecond, then random hex: ids sort in creation order, also within one second."""
    now = time.time_ns()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now // 1_000_000_000))
    return f"{stamp}-{now // 1000 % 1_000_000:06d}-{secrets.token_hex(3)}"


class Session:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.id = path.stem

    @classmethod
    def create(cls, repo: Path) -> Session:
        directory = repo / SESSIONS_DIR
        directory.mkdir(parents=True, exist_ok=True)
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

    def append(self, record: dict[str, Any]) -> None:
        """One whole line per write, flushed and synced, so a killed run leaves only complete records."""
        line = (json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def records(self) -> list[dict[str, Any]]:
        """Every record; a bad line is an error (resume must not silently skip a turn)."""
        out, bad = self.read()
        if bad:
            raise AgentcacheError(f"session {self.id} line {bad[0]} is not valid JSON")
        return out

    def read(self) -> tuple[list[dict[str, Any]], list[int]]:
        """The valid records and the numbers of the lines that are not a JSON object (corrupt or truncated)."""
        out, bad = [], []
        text = self.path.read_bytes().decode("utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if isinstance(record, dict):
                out.append(record)
            elif line.strip():
                bad.append(number)
        return out, bad
