"""kill -9 a real `agentcache run` (the embedded model) at seeded random moments: after each kill every line of the
session parses, nothing written before is lost, and both inspect and --resume accept the session."""

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "repo"
SEED = 20250101
KILLS = 5
TASK = "Find where words are counted, read that file, then finish with its name."
RUN = ["--max-turns", "3", "--max-tokens", "48"]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "agentcache.cli", *args]


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def session_bytes(repo: Path) -> bytes:
    found = sorted((repo / ".agentcache" / "sessions").glob("*.jsonl"))
    assert len(found) <= 1, found
    return found[0].read_bytes() if found else b""


def whole_lines(data: bytes) -> bytes:
    """The bytes up to and with the last newline: what a later run must keep."""
    return data[: data.rfind(b"\n") + 1]


def assert_every_line_parses(data: bytes) -> None:
    *complete, tail = data.split(b"\n")
    for line in complete:
        assert isinstance(json.loads(line), dict), line[:200]
    if tail:  # at most one torn last line, and only without its newline
        try:
            json.loads(tail)
        except ValueError:
            pass


def wait_for_append(process: subprocess.Popen, repo: Path, before: bytes, timeout: float) -> bool:
    """True once the run has appended past `before` (so it accepted the session); False if it exited first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(session_bytes(repo)) > len(before):
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.05)
    raise AssertionError("the run appended nothing in time")


def test_kill_9_at_random_moments_leaves_a_session_inspect_and_resume_accept(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache", ".agentcache"))
    rng = random.Random(SEED)
    killed_at = []
    for kill in range(KILLS):
        before = session_bytes(repo)
        resume = ["--resume", "latest"] if kill else []
        log = tmp_path / f"run-{kill}.log"
        with log.open("wb") as errors:
            process = subprocess.Popen(cli("run", TASK, "--repo", str(repo), *RUN, *resume), cwd=ROOT,
                                       env=environment(), stdout=subprocess.DEVNULL, stderr=errors)
        assert wait_for_append(process, repo, before, timeout=300), log.read_text()
        moment = rng.uniform(0.0, 4.0)
        time.sleep(moment)
        process.kill()
        process.wait()
        killed_at.append(round(moment, 2))
        after = session_bytes(repo)
        assert after.startswith(whole_lines(before))
        assert_every_line_parses(after)
        shown = subprocess.run(cli("inspect", "--repo", str(repo), "--json"), cwd=ROOT, env=environment(),
                               capture_output=True, text=True)
        assert shown.returncode == 0 and "Traceback" not in shown.stderr, (killed_at, shown.stderr)
        assert json.loads(shown.stdout)["bad_lines"] in ([], [after.count(b"\n") + 1])
    before = session_bytes(repo)
    last = subprocess.run(cli("run", TASK, "--repo", str(repo), "--max-turns", "1", "--max-tokens", "16", "--resume",
                              "latest"), cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=300)
    assert last.returncode == 0, (killed_at, last.stderr)
    after = session_bytes(repo)
    assert after.startswith(whole_lines(before)) and len(after) > len(before)
    assert_every_line_parses(after)
    assert after.endswith(b"\n")
