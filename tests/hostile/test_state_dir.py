"""The harness's own state (`.agentcache/`, its sessions dir, session files) that is a link, a FIFO, a device, a
socket, a directory or too large: the real CLI refuses it with one `error:` line at once, and nothing outside the
repo is written, chmod-ed or read."""

import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agentcache.errors import AgentcacheError
from agentcache.safe_files import MAX_STATE_FILE_BYTES
from agentcache.session import Session

ROOT = Path(__file__).resolve().parents[2]
SESSION_ID = "20250101-000000-000000-abcdef"
RECORD = b'{"type": "user", "appended": []}\n'
PROMPT_S = 120  # far beyond a refusal, which comes before any model loads; a hang fails instead of blocking


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "agentcache.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=PROMPT_S)


def assert_one_error_line(result: subprocess.CompletedProcess, *fragments: str) -> str:
    lines = result.stderr.splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert all(f in lines[0] for f in fragments), lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    return lines[0]


def read_only_run(repo: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_cli("run", "Say hi.", "--repo", str(repo), "--mode", "read-only", "--model", "smollm2-135m",
                   "--max-turns", "1", "--max-tokens", "8", *extra)


def snapshot(directory: Path) -> tuple[int, dict[str, bytes]]:
    """The directory's mode and every file under it with its bytes."""
    files = {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}
    return stat.S_IMODE(directory.lstat().st_mode), files


@pytest.fixture()
def repo(tmp_path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "README.md").write_text("# a repo\n")
    return root


@pytest.fixture()
def outside(tmp_path) -> Path:
    """A directory outside the repo, with its own mode and a file, which no run may touch."""
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "notes.txt").write_text("mine\n")
    (directory / f"{SESSION_ID}.jsonl").write_bytes(RECORD)
    directory.chmod(0o755)
    return directory


@pytest.fixture()
def prompt_return():
    """In-process calls on hostile files must return at once: an alarm fails a hang instead of blocking the suite."""
    def hung(signum, frame):
        raise AssertionError("hung on a hostile session file")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def sessions_dir(repo: Path) -> Path:
    directory = repo / ".agentcache" / "sessions"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


# --- the state directories ---------------------------------------------------------------------------------------

def test_a_sessions_dir_that_links_outside_is_refused_and_the_outside_dir_is_untouched(repo, outside):
    (repo / ".agentcache").mkdir()
    (repo / ".agentcache" / "sessions").symlink_to(outside, target_is_directory=True)
    before = snapshot(outside)
    for extra in ([], ["--resume", "latest"], ["--resume", SESSION_ID]):
        assert_one_error_line(read_only_run(repo, *extra), "sessions is a symbolic link")
        assert snapshot(outside) == before
    assert_one_error_line(run_cli("inspect", "--repo", str(repo)), "sessions is a symbolic link")


def test_an_agentcache_dir_that_is_a_link_is_refused_even_to_a_dir_inside_the_repo(repo, outside):
    (repo / ".agentcache").symlink_to(outside, target_is_directory=True)
    before = snapshot(outside)
    assert_one_error_line(read_only_run(repo), ".agentcache is a symbolic link")
    assert snapshot(outside) == before
    (repo / ".agentcache").unlink()
    (repo / "state" / "sessions").mkdir(parents=True)
    (repo / ".agentcache").symlink_to("state", target_is_directory=True)
    assert_one_error_line(read_only_run(repo), ".agentcache is a symbolic link")
    assert list((repo / "state" / "sessions").iterdir()) == []


@pytest.mark.parametrize("plant", ["file", "dangling link", "fifo"])
def test_state_dirs_that_are_not_directories_are_refused(repo, tmp_path, plant):
    for name in (".agentcache", ".agentcache/sessions"):
        path = repo / name
        path.parent.mkdir(exist_ok=True)
        if plant == "file":
            path.write_text("x")
        elif plant == "fifo":
            os.mkfifo(path)
        else:
            path.symlink_to(tmp_path / "nowhere")
        line = assert_one_error_line(read_only_run(repo), f"{path.name} is ")
        assert "not a directory" in line
        assert not (tmp_path / "nowhere").exists()
        path.unlink()


# --- session files -----------------------------------------------------------------------------------------------

def plant_fifo(path: Path) -> None:
    os.mkfifo(path)


def plant_dev_zero(path: Path) -> None:
    path.symlink_to("/dev/zero")


def plant_directory(path: Path) -> None:
    path.mkdir()
    (path / "inner.jsonl").write_bytes(RECORD)


def plant_sparse(path: Path) -> None:
    with path.open("wb") as f:
        f.write(RECORD)
        f.truncate(MAX_STATE_FILE_BYTES + 1)


def plant_link_to_a_valid_session_outside(path: Path) -> None:
    target = path.parents[3] / "elsewhere.jsonl"
    target.write_bytes(RECORD)
    path.symlink_to(target)


def plant_socket(path: Path) -> None:
    here = Path.cwd()
    os.chdir(path.parent)  # a socket's path must be short: bind by name
    try:
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(path.name)
    finally:
        os.chdir(here)


PLANTS = {
    "fifo": (plant_fifo, "a FIFO"),
    "link to /dev/zero": (plant_dev_zero, "a symbolic link"),
    "directory named .jsonl": (plant_directory, "a directory"),
    "sparse, over the cap": (plant_sparse, "larger than 64 MiB"),
    "link to a valid session outside": (plant_link_to_a_valid_session_outside, "a symbolic link"),
    "socket": (plant_socket, "a socket"),
}


@pytest.mark.parametrize("plant", PLANTS)
def test_a_session_file_that_is_not_a_bounded_regular_file_is_one_error_line_at_once(repo, plant):
    make, fragment = PLANTS[plant]
    path = sessions_dir(repo) / f"{SESSION_ID}.jsonl"
    make(path)
    before = path.lstat()
    for args in (["inspect"], ["inspect", SESSION_ID], ["inspect", "--json"], ["inspect", "--explain"],
                 ["inspect", "--diff", f"{SESSION_ID}:1", f"{SESSION_ID}:-1"]):
        assert_one_error_line(run_cli(*args, "--repo", str(repo)), SESSION_ID, fragment)
    assert_one_error_line(read_only_run(repo, "--resume", "latest"), SESSION_ID, fragment)
    after = path.lstat()
    assert (after.st_mode, after.st_size, after.st_mtime_ns) == (before.st_mode, before.st_size, before.st_mtime_ns)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no new session beside it


def test_latest_refuses_a_newer_fifo_rather_than_resume_an_older_session(repo):
    directory = sessions_dir(repo)
    older = directory / "20240101-000000-000000-000000.jsonl"
    older.write_bytes(RECORD)
    os.mkfifo(directory / f"{SESSION_ID}.jsonl")
    assert_one_error_line(run_cli("inspect", "--repo", str(repo)), SESSION_ID, "a FIFO", "remove it")
    shown = run_cli("inspect", older.stem, "--repo", str(repo), "--json")
    assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr


def test_inspect_layers_still_works_beside_a_bad_latest_session(repo):
    os.mkfifo(sessions_dir(repo) / f"{SESSION_ID}.jsonl")
    shown = run_cli("inspect", "--layers", "--repo", str(repo))
    assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr


# --- the Session calls below the CLI: append and end_at_line open nothing but regular files ----------------------

@pytest.mark.parametrize("plant", ["fifo", "link to /dev/zero", "link to a valid session outside",
                                   "directory named .jsonl"])
def test_append_and_end_at_line_refuse_what_read_refuses(repo, plant, prompt_return):
    path = sessions_dir(repo) / f"{SESSION_ID}.jsonl"
    PLANTS[plant][0](path)
    outside = repo.parent / "elsewhere.jsonl"
    before = outside.read_bytes() if outside.exists() else None
    session = Session(path)
    for call in (lambda: session.append({"type": "user", "appended": []}), session.end_at_line, session.read):
        with pytest.raises(AgentcacheError, match="not a regular file"):
            call()
    assert (outside.read_bytes() if outside.exists() else None) == before


def test_a_sessions_dir_swapped_for_a_link_after_open_is_refused_on_append(repo, outside):
    session = Session.create(repo)
    session.append({"type": "user", "appended": []})
    directory = repo / ".agentcache" / "sessions"
    directory.rename(repo / "moved")
    directory.symlink_to(outside, target_is_directory=True)
    before = snapshot(outside)
    with pytest.raises(AgentcacheError, match="sessions is a symbolic link"):
        session.append({"type": "user", "appended": []})
    assert snapshot(outside) == before


def test_a_new_sessions_dir_is_private_and_an_old_one_made_private(repo):
    directory = sessions_dir(repo)
    directory.chmod(0o755)
    Session.create(repo).append({"type": "user", "appended": []})
    assert stat.S_IMODE(directory.lstat().st_mode) == 0o700
    fresh = repo.parent / "fresh"
    fresh.mkdir()
    Session.create(fresh)
    assert stat.S_IMODE((fresh / ".agentcache").lstat().st_mode) == 0o700
    assert stat.S_IMODE((fresh / ".agentcache" / "sessions").lstat().st_mode) == 0o700
