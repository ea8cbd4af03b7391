"""Loopback HTTP for tests: uvicorn serving an app in a thread, and a scripted server that records requests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import uvicorn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def uvicorn_running(app: Any) -> Iterator[str]:
    """Serve app on a free loopback port; yields its base URL (no /v1)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def http(method: str, url: str, body: Any = None, raw: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """One request with the standard library; returns (status, parsed JSON or text)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode()
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


class RecordingServer:
    """Answers each request with the next scripted (status, JSON body or raw bytes), or what a scripted function of
    the request's path and parsed body returns, and records (method, path, parsed body),
    and each request's headers in `headers`."""

    def __init__(self, script: list[tuple[int, Any]], repeat_last: bool = True) -> None:
        self.script, self.repeat_last = list(script), repeat_last
        self.requests: list[tuple[str, str, Any]] = []
        self.headers: list[dict[str, str]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                parsed = json.loads(raw) if raw else None
                owner.requests.append((self.command, self.path, parsed))
                owner.headers.append({name.lower(): value for name, value in self.headers.items()})
                item = owner.script.pop(0) if len(owner.script) > 1 or not owner.repeat_last else owner.script[0]
                status, body = item(self.path, parsed) if callable(item) else item  # a function of the request
                payload = body if isinstance(body, bytes) else json.dumps(body).encode()  # bytes: sent as they are
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> RecordingServer:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


def chat_reply(content: Any, *blocks: str) -> tuple[int, dict[str, Any]]:
    """A scripted chat completion whose message is `content` as JSON (a tool call or {"answer": ...}), then a ```
    block for each of `blocks` (a raw argument's lines, each with its newline)."""
    text = json.dumps(content) + "".join(f"\n```\n{block}```" for block in blocks)
    return (200, {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m",
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                               "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}})


@dataclass
class ScriptedRun:
    """An `agentcache run --json` against fixed replies: its summary, stderr, the session's request records and the
    chat requests the server was sent."""
    summary: dict[str, Any]
    stderr: str
    requests: list[dict[str, Any]]
    sent: list[dict[str, Any]]


MODELS_THEN_NO_CONTEXTS = [(200, {"object": "list", "data": []}), (404, {"error": {"message": "Not Found"}})]


def run_scripted(repo: Path, task: str, replies: list[Any], *flags: str,
                 env: dict[str, str] | None = None) -> ScriptedRun:
    """`agentcache run TASK --json` on the openai backend against a loopback server answering `replies` in order
    (the last one repeated), after an empty model list and no contexts endpoint; a reply that is a function of the
    request's path and body answers every request from there on, those two included."""
    script = replies if callable(replies[0]) else [*MODELS_THEN_NO_CONTEXTS, *replies]
    with RecordingServer(script, repeat_last=True) as server:
        proc = subprocess.run(
            [sys.executable, "-m", "agentcache.cli", "run", task, "--repo", str(repo), "--backend", "openai",
             "--base-url", server.url + "/v1", "--model", "m", "--json", *flags],
            capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}, timeout=120)
        sent = [body for _, path, body in server.requests if path.endswith("/chat/completions")]
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    session = repo / ".agentcache" / "sessions" / f"{summary['session_id']}.jsonl"
    records = [json.loads(line) for line in session.read_text().splitlines()]
    return ScriptedRun(summary, proc.stderr, [r for r in records if r["type"] == "request"], sent)
