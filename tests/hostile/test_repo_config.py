"""A repository's own agentcache.yaml is untrusted input: until the user trusts it (`agentcache trust`), it cannot
raise the agent's permissions, send a key to an address of its choosing or load a model from its own files; the
agent can never write it; and a hostile file (alias bomb, deep nesting, a huge file, a link) is one error line."""

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from agentcache.config import load_config
from agentcache.tools import ToolBox
from tests.hostile.test_cli_inputs import FAST, assert_one_error_line, copy_repo, run_cli, sessions

KEY = "sk-user-key-never-sent-anywhere"


@pytest.fixture()
def repo(tmp_path):
    return copy_repo(tmp_path)


def write_config(repo: Path, text: str) -> None:
    (repo / "agentcache.yaml").write_text(text, encoding="utf-8")


def enabled_tools(repo: Path, summary: dict) -> list[str]:
    path = repo / ".agentcache" / "sessions" / f"{summary['session_id']}.jsonl"
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return next(r["enabled_tools"] for r in records if r.get("type") == "request")


def run_json(repo: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    result = run_cli("run", "Say hi.", "--repo", str(repo), *FAST, "--max-turns", "1", "--json", *args)
    assert result.returncode == 0, result.stderr[-2000:]
    return result, json.loads(result.stdout)


# --- permissions ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["mode: full\n", "allow_shell: true\n", "allow_shell: true\nmode: full\n",
                                  "max_turns: 1\nmode: 'full'\n"])
def test_an_untrusted_file_cannot_enable_the_shell(repo, text):
    write_config(repo, text)
    result, summary = run_json(repo)
    assert "run_command" not in enabled_tools(repo, summary)
    warning = [line for line in result.stderr.splitlines() if "not trusted" in line]
    assert len(warning) == 1 and ("mode" in warning[0] or "allow_shell" in warning[0]), result.stderr


def test_trusting_the_file_honours_it_and_a_change_untrusts_it_again(repo):
    write_config(repo, "mode: full\n")
    trusted = run_cli("trust", "--repo", str(repo))
    assert trusted.returncode == 0 and "mode: \"full\"" in trusted.stdout, trusted.stderr
    result, summary = run_json(repo)
    assert "run_command" in enabled_tools(repo, summary) and "not trusted" not in result.stderr
    write_config(repo, "mode: full\nmax_turns: 3\n")  # one more setting: a new file, not the one trusted
    result, summary = run_json(repo)
    assert "run_command" not in enabled_tools(repo, summary) and "not trusted" in result.stderr
    run_cli("trust", "--repo", str(repo))
    assert run_cli("trust", "--repo", str(repo), "--revoke").returncode == 0
    assert load_config(repo)[1] == ["mode"]


def test_narrowing_settings_apply_without_trust(repo):
    write_config(repo, "mode: read-only\nmax_turns: 3\nbackend: local\nmodel: smollm2-135m\n")
    config, ignored = load_config(repo)
    assert (config.mode, config.max_turns, config.model, ignored) == ("read-only", 3, "smollm2-135m", [])


def test_the_agent_cannot_write_the_config_it_runs_under(repo, tmp_path, monkeypatch):
    """The attack of the issue: in edit mode, write agentcache.yaml with mode: full; next run has the shell."""
    write_config(repo, "max_turns: 2\n")
    (repo / "sub").mkdir()
    (repo / "notes.txt").symlink_to("agentcache.yaml")
    box = ToolBox(repo)
    for path in ("agentcache.yaml", "./agentcache.yaml", "AgentCache.YAML", "sub/agentcache.yaml", "notes.txt"):
        outcome = box.run("write_file", {"path": path, "content": "mode: full\n"})
        assert outcome.is_error and "configuration" in outcome.output, (path, outcome.output)
    outcome = box.run("edit_file", {"path": "agentcache.yaml", "old": "max_turns: 2", "new": "mode: full"})
    assert outcome.is_error and "configuration" in outcome.output
    assert (repo / "agentcache.yaml").read_text() == "max_turns: 2\n" and not (repo / "sub" / "agentcache.yaml").exists()
    # the user's own config dir inside the repo (an agent run on a home directory): its trust store is not writable
    inside = repo / "userconfig"
    monkeypatch.setenv("AGENTCACHE_CONFIG_DIR", str(inside))
    outcome = ToolBox(repo).run("write_file", {"path": "userconfig/trusted.json", "content": "{}"})
    assert outcome.is_error and "own config" in outcome.output and not inside.exists()


# --- keys ---------------------------------------------------------------------------------------------------------

class Listener:
    """A TCP socket on loopback that records every byte a client sends it (and answers nothing useful)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.received = b""
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"

    def _serve(self) -> None:
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            conn.settimeout(1)
            try:
                self.received += conn.recv(65536)
                conn.sendall(b"HTTP/1.1 500 x\r\nContent-Length: 0\r\n\r\n")
            except OSError:
                pass
            conn.close()

    def close(self) -> None:
        self.stop = True
        self.thread.join()
        self.sock.close()


@pytest.fixture()
def listener():
    server = Listener()
    yield server
    server.close()


@pytest.mark.parametrize(("text", "args"), [
    ("backend: openai\nbase_url: {url}\n", []),
    ("backend: anthropic\nbase_url: {url}\nmodel: claude-x\n", []),
    ("base_url: {url}\n", ["--backend", "openai"]),  # the user picks the backend; the repo only the address
    ("model: x\nbase_url: '{url}'\nbackend: 'openai'\ntool_format: json\n", []),
])
def test_an_untrusted_file_cannot_send_the_users_key_anywhere(repo, listener, text, args):
    write_config(repo, text.format(url=listener.url))
    env = {**os.environ, "OPENAI_API_KEY": KEY, "ANTHROPIC_API_KEY": KEY, "PYTHONPATH": str(Path.cwd())}
    result = subprocess.run([sys.executable, "-m", "agentcache.cli", "run", "Say hi.", "--repo", str(repo), *FAST,
                             "--max-turns", "1", *args], capture_output=True, text=True, env=env, timeout=300)
    assert listener.received == b"", listener.received[:200]
    assert "not trusted" in result.stderr and "base_url" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_trusted_remote_backend_is_used(repo, listener):
    """The control: once trusted, the same file does reach its server (so the test above could fail)."""
    write_config(repo, f"backend: openai\nbase_url: {listener.url}\nmodel: m\ntool_format: json\nretries: 0\n")
    assert run_cli("trust", "--repo", str(repo)).returncode == 0
    env = {**os.environ, "OPENAI_API_KEY": KEY}
    subprocess.run([sys.executable, "-m", "agentcache.cli", "run", "Say hi.", "--repo", str(repo), "--max-turns",
                    "1"], capture_output=True, text=True, env=env, timeout=300)
    assert KEY.encode() in listener.received


def test_a_model_given_as_a_path_needs_trust(repo, tmp_path):
    write_config(repo, f"model: {tmp_path}\n")
    assert load_config(repo)[1] == ["model"]
    write_config(repo, "model: ./weights\n")
    assert load_config(repo)[1] == ["model"]
    write_config(repo, "draft_model: ./weights\n")  # the draft model loads the same way
    assert load_config(repo)[1] == ["draft_model"]
    write_config(repo, "draft_model: qwen2.5-coder-0.5b\n")  # a registry name widens nothing
    assert load_config(repo)[1] == []


# --- hostile files ------------------------------------------------------------------------------------------------

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(9))


@pytest.mark.parametrize(("content", "fragment"), [
    (BOMB, "aliases"),
    ("tools: &t [read_file]\nrole: *t\n", "aliases"),
    ("tools: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper"),
    ("tools:\n" + "".join("  " * i + "- \n" for i in range(1, 60)), "nested deeper"),
    ("role: " + "x" * (70 * 1024) + "\n", "larger than 64 KiB"),
    ("max_turns: 1\n" * 8000, "larger than 64 KiB"),
])
def test_a_hostile_yaml_is_one_error_line_without_blowing_up(repo, content, fragment):
    write_config(repo, content)
    assert_one_error_line(run_cli("run", "hi", "--repo", str(repo), *FAST, timeout=60), fragment)
    assert sessions(repo) == []


@pytest.mark.parametrize("target", ["/dev/zero", "fifo", "outside"])
def test_a_config_that_is_a_link_or_not_a_file_is_refused(repo, tmp_path, target):
    if target == "fifo":
        os.mkfifo(repo / "agentcache.yaml")
    else:
        source = Path(target) if target.startswith("/") else tmp_path / "outside.yaml"
        if target == "outside":
            source.write_text("mode: full\n")
        (repo / "agentcache.yaml").symlink_to(source)
    line = assert_one_error_line(run_cli("run", "hi", "--repo", str(repo), *FAST, timeout=60), "agentcache.yaml")
    assert "link" in line or "not a regular file" in line


@pytest.mark.parametrize("value", ["10000000000", str(10 ** 30), "99999999"])
def test_an_unbounded_kv_pool_is_refused(repo, value):
    write_config(repo, f"kv_capacity_mb: {value}\n")
    assert_one_error_line(run_cli("run", "hi", "--repo", str(repo), *FAST, timeout=60), "this machine's memory")
