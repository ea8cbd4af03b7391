"""Resume in a new process against a continuation in the same one, and what the resume check promises.

One task, then a second one on the same session, three ways, on copies of examples/repo in git:
- same process: one agent, one engine (no disk tier), the second task right after the first;
- new process: `agentcache run` for the first, `agentcache run --resume latest` for the second, each its own
  process, with the disk tier on (a fresh cache dir of the run's own);
- new process, no disk tier: the same with `--no-disk-cache` (what a resume costs without it).
Then an edited, uncommitted AGENTS.md before a third resume: the tokens the resume check says will be prefilled
again against the tokens `inspect --explain` finds the request missed.

    python -m benchmarks.resume [--model M] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from agentcache.agent import Agent
from agentcache.cache_dir import models_dir
from agentcache.config import RunConfig
from agentcache.session import Session
from agentcache.wiring import build_backend
from benchmarks.report import write_json

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "repo"
FIRST, SECOND, THIRD = "Where are words counted?", "And sentences?", "And lines?"
SETTINGS = ["--max-turns", "1", "--max-tokens", "32"]


def git_copy(target: Path, files: dict[str, str] | None = None) -> Path:
    """examples/repo (with `files` added) copied to `target` and committed: every file clean in git."""
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache", ".agentcache"))
    for name, text in (files or {}).items():
        (target / name).write_text(text, encoding="utf-8")
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "example"]):
        subprocess.run(["git", "-c", "user.email=bench@example.invalid", "-c", "user.name=bench", *args],
                       cwd=target, check=True, capture_output=True)
    return target


def cli_run(repo: Path, env: dict[str, str], task: str, *args: str) -> tuple[list[str], dict[str, Any]]:
    """`agentcache run ... --json` in its own process: its stderr lines and the new requests' usage."""
    done = subprocess.run([sys.executable, "-m", "agentcache.cli", "run", task, "--repo", str(repo), "--json",
                           *SETTINGS, *args], env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"agentcache run failed: {done.stderr.strip()[-500:]}")
    return done.stderr.splitlines(), json.loads(done.stdout)


def first_new(summary: dict[str, Any], turns_before: int) -> dict[str, Any]:
    return next(r for r in summary["requests"] if r["turn"] > turns_before)["usage"]


def same_process(model: str, work: Path) -> dict[str, Any]:
    repo = git_copy(work / "same")
    config = RunConfig(model=model, max_turns=1, max_tokens=32, disk_cache=False)
    session = Session.create(repo)
    agent = Agent(repo, build_backend(config, None), config, session)
    agent.run(FIRST)
    agent.run(SECOND)
    return [r for r in session.records() if r["type"] == "request"][-1]["usage"]


def new_process(model: str, work: Path, name: str, disk: bool) -> tuple[dict[str, Any], Path, dict[str, str]]:
    repo = git_copy(work / name)
    cache = work / f"cache-{name}"
    cache.mkdir()
    (cache / "models").symlink_to(models_dir(), target_is_directory=True)
    env = {**os.environ, "AGENTCACHE_CACHE_DIR": str(cache), "AGENTCACHE_MODEL": model}
    flags = [] if disk else ["--no-disk-cache"]
    _, first = cli_run(repo, env, FIRST, *flags)
    _, second = cli_run(repo, env, SECOND, "--resume", "latest", *flags)
    return first_new(second, len(first["requests"])), repo, env


def edited_resume(repo: Path, env: dict[str, str]) -> dict[str, Any]:
    """AGENTS.md edited and not committed, then a third resume: the check's promise against the miss found."""
    with (repo / "AGENTS.md").open("a", encoding="utf-8") as file:
        file.write("\nAnswer in one sentence.\n")
    before = Session.open(repo, "latest")
    turns = sum(1 for r in before.records() if r["type"] == "request")
    _, summary = cli_run(repo, env, THIRD, "--resume", "latest")
    check = next(r for r in reversed(Session.open(repo, "latest").records()) if r["type"] == "resume")
    done = subprocess.run([sys.executable, "-m", "agentcache.cli", "inspect", "--explain", "--json", "--repo",
                           str(repo)], env=env, capture_output=True, text=True, timeout=600, check=True)
    miss = json.loads(done.stdout)["requests"][turns]["miss"] or {}
    return {"problems": check["problems"], "predicted_recompute_tokens": check["recompute_tokens"],
            "missed_tokens": miss.get("missed_tokens", 0), "ledger": miss.get("ledger"),
            "cached_tokens": first_new(summary, turns)["cached_tokens"]}


def report(model: str, work: Path, console: Console) -> dict[str, Any]:
    same = same_process(model, work)
    console.print(f"same process: cached {same['cached_tokens']} of {same['prompt_tokens']}")
    disk, repo, env = new_process(model, work, "disk", disk=True)
    console.print(f"new process, disk tier: cached {disk['cached_tokens']} of {disk['prompt_tokens']}")
    cold, _, _ = new_process(model, work, "nodisk", disk=False)
    console.print(f"new process, no disk tier: cached {cold['cached_tokens']} of {cold['prompt_tokens']}")
    edited = edited_resume(repo, env)
    page = 16
    return {"model": model, "page_size": page,
            "same_process": {k: same[k] for k in ("prompt_tokens", "cached_tokens")},
            "new_process": {k: disk[k] for k in ("prompt_tokens", "cached_tokens", "disk_tokens")},
            "new_process_no_disk": {k: cold[k] for k in ("prompt_tokens", "cached_tokens")},
            "difference_tokens": same["cached_tokens"] - disk["cached_tokens"],
            "within_one_page": abs(same["cached_tokens"] - disk["cached_tokens"]) <= page,
            "edited_agents_md": edited}


def table(result: dict[str, Any]) -> Table:
    t = Table(title=f"resume, {result['model']}: the first request of the second task")
    for name in ("how", "prompt", "cached"):
        t.add_column(name, justify="left" if name == "how" else "right")
    for key, how in (("same_process", "same process (continuation)"), ("new_process", "new process, disk tier"),
                     ("new_process_no_disk", "new process, no disk tier")):
        t.add_row(how, str(result[key]["prompt_tokens"]), str(result[key]["cached_tokens"]))
    return t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=RunConfig().model)
    p.add_argument("--json", type=Path, help="write the report here")
    args = p.parse_args(argv)
    console = Console(width=120)
    with tempfile.TemporaryDirectory(prefix="agentcache-resume-") as tmp:
        result = report(args.model, Path(tmp), console)
    console.print(table(result))
    edited = result["edited_agents_md"]
    console.print(f"difference same - new process: {result['difference_tokens']} tokens "
                  f"({'within' if result['within_one_page'] else 'NOT within'} one page of {result['page_size']})")
    console.print(f"edited AGENTS.md: the resume check said {edited['predicted_recompute_tokens']} tokens of the last "
                  f"prompt would be prefilled again; inspect found {edited['missed_tokens']} missed "
                  f"({edited['ledger']}); problems: {'; '.join(edited['problems'])}", markup=False)
    write_json(args.json, result, console)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
