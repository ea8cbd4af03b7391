"""Hostile input to the CLI, its settings and its session files: each is one `error:` line with exit code 2 (or a
warning and a skipped line), never a traceback, and nothing already written is lost."""

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentcache.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "repo"
FAST = ["--model", "random-tiny-chat", "--max-tokens", "16"]


def run_cli(*args: str | bytes, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "agentcache.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """The CLI in this process, as typer's runner would call it: exit code, stdout, stderr."""
    with pytest.raises(SystemExit) as done:
        main(list(args))
    out, err = capsys.readouterr()
    return done.value.code or 0, out, err


def assert_one_error(code: int, out: str, err: str, fragment: str) -> str:
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], err
    assert "Traceback" not in out + err
    return lines[0]


def assert_one_error_line(result: subprocess.CompletedProcess, fragment: str) -> str:
    return assert_one_error(result.returncode, result.stdout, result.stderr, fragment)


def copy_repo(tmp_path: Path) -> Path:
    target = tmp_path / "repo"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache", ".agentcache"))
    return target


def sessions(repo: Path) -> list[Path]:
    return sorted((repo / ".agentcache" / "sessions").glob("*.jsonl"))


@pytest.fixture()
def repo(tmp_path):
    return copy_repo(tmp_path)


@pytest.fixture(scope="module")
def session_file(tmp_path_factory) -> bytes:
    """The bytes of one real two-request session, made by the real CLI on random weights."""
    repo = copy_repo(tmp_path_factory.mktemp("made"))
    result = run_cli("run", "Say hi.", "--repo", str(repo), *FAST, "--max-turns", "2")
    assert result.returncode == 0, result.stderr
    [path] = sessions(repo)
    return path.read_bytes()


def planted(repo: Path, data: bytes) -> Path:
    directory = repo / ".agentcache" / "sessions"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "20250101-000000-000000-abcdef.jsonl"
    path.write_bytes(data)
    return path


# --- arguments and agentcache.yaml -------------------------------------------------------------------------------

def test_a_task_with_undecodable_bytes_is_one_error_line_and_writes_nothing(repo):
    result = run_cli("run", b"bad \xff task", "--repo", str(repo), *FAST)
    assert_one_error_line(result, "task is not valid UTF-8")
    assert sessions(repo) == []


def test_a_yaml_that_is_not_utf8_is_one_error_line(repo):
    (repo / "agentcache.yaml").write_bytes(b"role: caf\xe9\n")
    assert_one_error_line(run_cli("run", "hi", "--repo", str(repo), *FAST), "agentcache.yaml: not UTF-8")
    assert sessions(repo) == []


def test_yaml_tools_that_are_not_names_are_one_error_line(repo):
    (repo / "agentcache.yaml").write_text("tools: [1, 2]\n")
    assert_one_error_line(run_cli("run", "hi", "--repo", str(repo), *FAST), "tools must be a list of tool names")
    assert sessions(repo) == []


# Each setting's bad value as a flag and in agentcache.yaml: the same message, whichever the source.
BAD_SETTINGS = [
    ("max_turns", "-1", "at least 1"),
    ("max_turns", "0", "at least 1"),
    ("max_tokens", "0", "at least 1"),
    ("tools", "read_file,bogus", "tool names"),
    ("backend", "bogus", "one of local, openai, anthropic"),
    ("role", "''", "non-empty"),
    ("model", "''", "non-empty"),
]
YAML_ONLY = [
    ("token_budget", "-1", "at least 1"),
    ("retries", "-1", "at least 0"),
    ("temperature", "-1", "between 0 and 2"),
    ("temperature", "2.5", "between 0 and 2"),
    ("temperature", ".nan", "between 0 and 2"),
    ("cache_ttl", "7m", "one of 5m, 1h"),
    ("kv_capacity_mb", "0", "between 1 and"),
    ("tools", "[read_file, bogus]", "tool names"),
    ("tools", "[[read_file]]", "tool names"),
]


def yaml_error(capsys, repo: Path, name: str, value: str) -> str:
    (repo / "agentcache.yaml").write_text(f"{name}: {value}\n")
    line = assert_one_error(*cli(capsys, "run", "hi", "--repo", str(repo)), f"{name} must be")
    (repo / "agentcache.yaml").unlink()
    assert sessions(repo) == []
    return line


@pytest.mark.parametrize("name, value, fragment", BAD_SETTINGS)
def test_a_bad_setting_has_one_message_from_a_flag_or_the_yaml(repo, capsys, name, value, fragment):
    flag_value = "" if value == "''" else value
    flag = assert_one_error(*cli(capsys, "run", "hi", "--repo", str(repo), f"--{name.replace('_', '-')}", flag_value),
                            fragment)
    assert sessions(repo) == []
    yaml_value = f"[{value.replace(',', ', ')}]" if name == "tools" else value
    assert yaml_error(capsys, repo, name, yaml_value) == flag


@pytest.mark.parametrize("name, value, fragment", YAML_ONLY)
def test_a_bad_yaml_setting_is_one_error_line(repo, capsys, name, value, fragment):
    assert fragment in yaml_error(capsys, repo, name, value)


def test_run_help_gives_the_ranges(capsys):
    code, out, _ = cli(capsys, "run", "--help")
    assert code == 0 and "at least 1" in out


def test_cache_stats_of_a_file_is_an_error_and_of_a_missing_dir_an_empty_cache(tmp_path):
    a_file = tmp_path / "passwd"
    a_file.write_text("root:x:0:0::/root:/bin/sh\n")
    for verb in ("stats", "clear", "prune"):
        assert_one_error_line(run_cli("cache", verb, "--dir", str(a_file)), "is not a directory")
    assert a_file.read_text() == "root:x:0:0::/root:/bin/sh\n"
    missing = run_cli("cache", "stats", "--dir", str(tmp_path / "missing"), "--json")
    assert missing.returncode == 0 and json.loads(missing.stdout)["files"] == 0


def test_inspect_diff_refuses_an_option_taken_for_its_second_id(repo, session_file):
    path = planted(repo, session_file)
    result = run_cli("inspect", "--diff", path.stem, "--repo", str(repo))
    assert_one_error_line(result, "--diff takes two ids")


# --- session records ---------------------------------------------------------------------------------------------

USAGE = '{"prompt_tokens": 9, "cached_tokens": 0, "computed_tokens": 9, "completion_tokens": 1}'
WRONG_SHAPES = [
    '{"type": "request", "usage": "nope"}',
    '{"type": "request", "turn": 2, "usage": "nope"}',
    '{"type": "request"}',
    '{"type": "request", "usage": ' + USAGE + '}',
    '{"type": "request", "turn": "2", "usage": ' + USAGE + '}',
    '{"type": "request", "turn": 2, "usage": {"prompt_tokens": 9}}',
    '{"type": "request", "turn": 2, "usage": {"prompt_tokens": "9", "cached_tokens": 0, "computed_tokens": 9, '
    '"completion_tokens": 1}}',
    '{"type": "request", "turn": 2, "usage": ' + USAGE + ', "timings": "fast"}',
    '{"type": "request", "turn": 2, "usage": ' + USAGE + ', "trace": []}',
    '{"type": "request", "turn": 2, "usage": ' + USAGE + ', "trace": {"page_size": "16"}}',
    '{"type": "request", "turn": 2, "usage": ' + USAGE + ', "blocks": [5]}',
    '{"type": "request", "turn": 2, "usage": ' + USAGE + ', "blocks": [{"layer": "L2"}]}',
    '{"type": "request", "turn": 2, "usage": ' + USAGE + ', "segment_tokens": "many"}',
    '{"type": "request", "turn": 2, "usage": ' + USAGE + ', "tool_call": "read_file"}',
    '{"type": "request", "turn": 2, "usage": ' + USAGE + ', "tool_call": {"name": 1, "arguments": {}}}',
    '{"type": "request", "turn": 2, "usage": ' + USAGE + ', "appended": [{"kind": "user"}]}',
    '{"type": "block", "hash": 3, "text": "x"}',
    '{"type": "block", "text": "x"}',
    '{"type": "compaction", "l3": "x"}',
    '{"type": "user", "appended": [1]}',
    '{"type": "user", "appended": "text"}',
    '{"type": 7}',
    '{"usage": ' + USAGE + '}',
    '[{"type": "request"}]',
    '"a string"',
    'null',
    '1' * 5000,  # more digits than Python turns into an int
    '[' * 100_000 + ']' * 100_000,  # deeper than the JSON parser recurses
]


def inspect_views(repo: Path, session_id: str) -> list[list[str]]:
    base = ["--repo", str(repo)]
    return [["inspect", *base], ["inspect", session_id, "--json", *base], ["inspect", "--explain", *base],
            ["inspect", "--explain", "--json", *base], ["inspect", "--diff", f"{session_id}:1", f"{session_id}:-1",
                                                        "--json", *base], ["inspect", "--layers", *base]]


@pytest.mark.parametrize("line", WRONG_SHAPES, ids=lambda line: line[:60])
def test_a_wrong_shape_record_is_skipped_by_inspect_and_refused_by_resume(repo, session_file, capsys, line):
    lines = session_file.splitlines(keepends=True)
    data = b"".join([*lines[:-1], line.encode() + b"\n", lines[-1]])
    path = planted(repo, data)
    number = len(lines)
    for args in inspect_views(repo, path.stem):
        code, out, err = cli(capsys, *args)
        assert code == 0, (args, err)
        assert "Traceback" not in err
        assert [w for w in err.splitlines() if w.startswith("warning:")] == [
            w for w in err.splitlines() if f"line {number} is not a valid record" in w] != [], (args, err)
        if "--json" in args and "--diff" not in args:
            assert json.loads(out)["bad_lines"] == [number]
    code, out, err = cli(capsys, "run", "more", "--resume", "latest", "--repo", str(repo), *FAST)
    assert_one_error(code, out, err, f"line {number} is not a valid record")
    assert path.read_bytes() == data


def test_a_torn_last_line_is_resumed_past_with_one_warning(repo, session_file):
    torn = b'{"type": "request", "turn": 3, "usa'
    path = planted(repo, session_file + torn)
    shown = run_cli("inspect", "--repo", str(repo))
    assert shown.returncode == 0 and shown.stderr.count("warning:") == 1
    result = run_cli("run", "more", "--resume", "latest", "--repo", str(repo), *FAST, "--max-turns", "1")
    assert result.returncode == 0, result.stderr
    warnings = [w for w in result.stderr.splitlines() if w.startswith("warning:")]
    torn_line = session_file.count(b"\n") + 1
    assert len(warnings) == 1 and f"line {torn_line} " in warnings[0] and "torn" in warnings[0]
    after = path.read_bytes()
    assert after.startswith(session_file) and len(after) > len(session_file)
    records = [json.loads(line) for line in after.decode().split("\n") if line]  # every line whole now
    assert max(r.get("turn", 0) for r in records) == 3
    assert run_cli("inspect", "--repo", str(repo), "--json").stderr == ""


def test_a_bad_line_before_a_torn_last_line_still_refuses(repo, session_file, capsys):
    data = b"{not json\n" + session_file + b'{"type": "requ'
    path = planted(repo, data)
    code, out, err = cli(capsys, "run", "more", "--resume", "latest", "--repo", str(repo), *FAST)
    assert_one_error(code, out, err, "line 1 is not a valid record (not valid JSON)")
    assert path.read_bytes() == data


def test_a_whole_last_line_without_its_newline_is_kept_when_resumed(repo, session_file):
    path = planted(repo, session_file.rstrip(b"\n"))
    result = run_cli("run", "more", "--resume", "latest", "--repo", str(repo), *FAST, "--max-turns", "1")
    assert result.returncode == 0 and "warning" not in result.stderr, result.stderr
    after = path.read_bytes()
    assert after.startswith(session_file)
    assert all(json.loads(line) for line in after.decode().split("\n") if line)


def test_line_separators_inside_a_record_do_not_split_it(repo, capsys):
    code, _, err = cli(capsys, "run", "one\u2028two\x85three\u2029four", "--repo", str(repo), *FAST, "--max-turns", "1")
    assert code == 0, err
    code, out, err = cli(capsys, "inspect", "--repo", str(repo), "--json")
    assert code == 0 and json.loads(out)["bad_lines"] == [] and "warning" not in err
    code, _, err = cli(capsys, "run", "more", "--resume", "latest", "--repo", str(repo), *FAST, "--max-turns", "1")
    assert code == 0, err


def test_session_files_are_private(repo, capsys):
    code, _, err = cli(capsys, "run", "hi", "--repo", str(repo), *FAST, "--max-turns", "1")
    assert code == 0, err
    [path] = sessions(repo)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


# --- serve ---------------------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_beyond_loopback_needs_an_api_key_or_insecure_no_auth():
    refused = run_cli("serve", "--host", "0.0.0.0", "--port", str(free_port()), "--model", "random-tiny-chat")
    assert_one_error_line(refused, "--insecure-no-auth")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen([sys.executable, "-m", "agentcache.cli", "serve", "--host", "0.0.0.0", "--port",
                               str(free_port()), "--model", "random-tiny-chat", "--insecure-no-auth"],
                              cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        seen, deadline = [], time.monotonic() + 240
        while time.monotonic() < deadline and not any("serving" in line for line in seen):
            line = server.stderr.readline()
            if not line:
                break
            seen.append(line)
        assert any(line.startswith("warning:") and "without an API key" in line for line in seen), seen
        assert any("serving" in line for line in seen), seen
    finally:
        server.kill()
        server.wait()
