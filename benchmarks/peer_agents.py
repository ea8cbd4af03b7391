"""Peer agent harnesses (mini-swe-agent, Aider) driving a model through a real `agentcache serve`: one task per
call, each peer run by its own venv's python (`make peers-agents`), its answer, turns, tokens and what it was shown.

    python -m benchmarks.peer_agents --harness aider --kind question \\
        "In which file is the function split_sentences defined? Answer with its path."

Tokens and turns are the server's own counters (/metrics deltas around the task), so a peer that hides or drops a
response's usage is still counted; the server must serve one peer at a time. How each peer is configured and how
its turns are counted: docs/peer-agents.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HARNESSES = ("mini-swe-agent", "aider")
VENVS = {"mini-swe-agent": ROOT / ".venv-mini-swe", "aider": ROOT / ".venv-aider"}
QUESTION_KINDS = ("question", "multi-step")
METRIC_PREFIX = "agentcache_"
COUNTERS = ("requests_total", "prompt_tokens_total", "cached_tokens_total", "computed_tokens_total",
            "generation_tokens_total")
START_TIMEOUT_S = 600.0
# Environment every peer runs under: no telemetry, no update checks, no price-map download, no pager, no browser.
QUIET_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False", "LITELLM_LOG": "ERROR",
    "MSWEA_SILENT_STARTUP": "1", "MSWEA_COST_TRACKING": "ignore_errors", "AIDER_ANALYTICS": "false",
    "AIDER_CHECK_UPDATE": "false", "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1", "PAGER": "cat", "BROWSER": "true",
    "GIT_TERMINAL_PROMPT": "0", "PYTHONUNBUFFERED": "1",
}
# A peer's shell commands (mini-swe-agent's actions) run in their own mount and network namespace: the root file
# system read-only except the task's repo and the scratch TMPDIR, no network at all, and no capabilities left to
# remount with. Used where `unshare` and `setpriv` can do it.
SANDBOX = ('mount --make-rprivate / && for d in "$PEER_REPO" "$TMPDIR"; do mount --bind "$d" "$d"; done && '
           'mount -o remount,bind,ro / && for d in "$PEER_REPO" "$TMPDIR"; do mount -o remount,bind,rw "$d"; done && '
           'cd "$PEER_CWD" && exec setpriv --bounding-set=-all --inh-caps=-all sh -c "$PEER_COMMAND"')
GIT_ENV = {"GIT_AUTHOR_NAME": "peer", "GIT_AUTHOR_EMAIL": "peer@localhost", "GIT_COMMITTER_NAME": "peer",
           "GIT_COMMITTER_EMAIL": "peer@localhost", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


@dataclass
class PeerRun:
    answer: str | None
    reason: str
    turns: int
    wall_s: float
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    tool_outputs: list[str] = field(default_factory=list)
    version: str = ""


def parse_metrics(text: str) -> dict[str, float]:
    """The unlabelled samples of a Prometheus text exposition, by name without the `agentcache_` prefix."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or "{" in line:
            continue
        name, _, value = line.rpartition(" ")
        try:
            values[name.removeprefix(METRIC_PREFIX)] = float(value)
        except ValueError:
            continue
    return values


def counter_deltas(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    return {name: int(after.get(name, 0) - before.get(name, 0)) for name in COUNTERS}


def usage_sums(usages: list[dict[str, Any]]) -> dict[str, int]:
    """Prompt, cached and completion tokens summed over OpenAI `usage` objects (a missing one counts as zero)."""
    sums = {"prompt_tokens": 0, "cached_tokens": 0, "completion_tokens": 0}
    for usage in usages:
        details = usage.get("prompt_tokens_details") or {}
        sums["prompt_tokens"] += int(usage.get("prompt_tokens") or 0)
        sums["cached_tokens"] += int(details.get("cached_tokens") or 0)
        sums["completion_tokens"] += int(usage.get("completion_tokens") or 0)
    return sums


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A real `agentcache serve` process on a free loopback port, up until the `with` block ends."""

    def __init__(self, model: str, quant: str = "auto", log: Path | None = None):
        self.model, self.quant, self.log = model, quant, log
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None

    def __enter__(self) -> Server:
        command = [str(Path(sys.executable).with_name("agentcache")), "serve", "--port", str(self.port),
                   "--model", self.model, "--quant", self.quant]
        self._log_file = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        self._process = subprocess.Popen(command, stdout=self._log_file, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self.__exit__()
                raise RuntimeError(f"agentcache serve exited with {self._process.returncode} before it was up")
            try:
                self._get("/health")
                return self
            except OSError:
                time.sleep(0.5)
        self.__exit__()
        raise RuntimeError(f"agentcache serve was not up after {START_TIMEOUT_S:.0f} s")

    def __exit__(self, *exc: object) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._log_file not in (None, subprocess.DEVNULL):
            self._log_file.close()

    def _get(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as response:
            return response.read().decode()

    def metrics(self) -> dict[str, float]:
        return parse_metrics(self._get("/metrics"))


# Run by .venv-mini-swe/bin/python: its own DefaultAgent, text-based model (litellm) and LocalEnvironment, with the
# shipped mini_textbased.yaml; a question is submitted as `echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT && echo ANSWER`.
MINI_DRIVER = r'''
import json, os, shlex, sys
import yaml
from minisweagent import __version__, package_dir
from minisweagent.agents.default import DefaultAgent
from minisweagent.environments.local import LocalEnvironment
from minisweagent.models.litellm_textbased_model import LitellmTextbasedModel

job = json.load(sys.stdin)
config = yaml.safe_load((package_dir / "config" / "mini_textbased.yaml").read_text())
agent_config = config["agent"]
if job["question"]:
    head, _, rest = agent_config["instance_template"].partition("## Recommended Workflow")
    _, _, rules = rest.partition("## Important Rules")
    agent_config["instance_template"] = head.replace("Please solve this issue:", "Please answer this question:") + (
        "## Recommended Workflow\n\n1. Find and read the relevant files\n"
        "2. When you know the answer, submit it with the following command, putting only the answer in the echo: "
        "`echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT && echo 'ANSWER'`.\n"
        "   <important>After this command, you cannot continue working on this task.</important>\n\n"
        "## Important Rules" + rules)
agent_config.pop("mode", None)
agent_config.update(step_limit=job["max_turns"], cost_limit=0, wall_time_limit_seconds=0,
                    output_path=job["out"].replace("result.json", "trajectory.json"))
model_kwargs = dict(config["model"].pop("model_kwargs", {}), api_base=job["base_url"], api_key="none",
                    temperature=job["temperature"])
if job["seed"] is not None:
    model_kwargs["seed"] = job["seed"]
model = LitellmTextbasedModel(model_name="openai/" + job["model"], model_kwargs=model_kwargs,
                              cost_tracking="ignore_errors", **config["model"])
class SandboxedEnvironment(LocalEnvironment):
    def execute(self, action, cwd="", *, timeout=None):
        if not job["sandbox"]:
            return super().execute(action, cwd, timeout=timeout)
        os.environ.update(PEER_COMMAND=action.get("command", ""), PEER_CWD=cwd or job["repo"], PEER_REPO=job["repo"])
        wrapped = {**action, "command": "unshare --mount --net --fork sh -c " + shlex.quote(job["sandbox"])}
        return super().execute(wrapped, cwd, timeout=timeout)

env = SandboxedEnvironment(cwd=job["repo"], **config["environment"])
agent = DefaultAgent(model, env, **agent_config)
try:
    info = agent.run(job["text"])
    status, submission, error = info.get("exit_status", ""), info.get("submission", ""), ""
except Exception as exc:
    status, submission, error = type(exc).__name__, "", f"{type(exc).__name__}: {exc}"
usages, outputs = [], []
for message in agent.messages:
    extra = message.get("extra") or {}
    response = extra.get("response")
    if isinstance(response, dict) and response.get("usage"):
        usages.append(response["usage"])
    if message.get("role") == "user" and "raw_output" in extra:
        outputs.append(extra["raw_output"])
json.dump({"status": status, "submission": submission, "error": error, "turns": agent.n_calls,
           "usages": usages, "tool_outputs": outputs, "version": __version__}, open(job["out"], "w"))
'''

# Run by .venv-aider/bin/python: aider's own main() builds the coder from its CLI flags; a question runs in ask mode
# (no edits). Files aider adds to the chat after the model names them are recorded with their content, and so is
# each new repo map; every litellm response's usage is kept.
AIDER_DRIVER = r'''
import json, sys
from pathlib import Path
from aider import __version__
from aider.main import main
from aider.models import Model

job = json.load(sys.stdin)
usages, outputs, turns = [], [], [0]
send = Model.send_completion

def counted(self, messages, functions, stream, temperature=None):
    turns[0] += 1
    hashed, response = send(self, messages, functions, stream, temperature)
    usage = getattr(response, "usage", None)
    if usage is not None:
        usages.append(usage.model_dump() if hasattr(usage, "model_dump") else dict(usage))
    return hashed, response

Model.send_completion = counted
coder = main(job["argv"], return_coder=True)
if not hasattr(coder, "run"):
    json.dump({"status": "error", "error": f"aider exited with {coder}", "turns": 0, "usages": [],
               "tool_outputs": [], "version": __version__, "answer": ""}, open(job["out"], "w"))
    sys.exit(0)
coder.max_reflections = max(job["max_turns"] - 1, 0)
add_rel_fname, get_repo_map = coder.add_rel_fname, coder.get_repo_map

def adding(rel_fname):
    add_rel_fname(rel_fname)
    path = Path(coder.abs_root_path(rel_fname))
    outputs.append(f"{rel_fname}\n" + (path.read_text(errors="replace") if path.is_file() else ""))

def mapping(*args, **kwargs):
    repo_map = get_repo_map(*args, **kwargs)
    if repo_map and repo_map not in outputs:
        outputs.append(repo_map)
    return repo_map

coder.add_rel_fname, coder.get_repo_map = adding, mapping
try:
    coder.run(with_message=job["text"])
    limited = bool(coder.reflected_message) and coder.num_reflections >= coder.max_reflections
    status, error = ("max_turns" if limited else "done"), ""
except Exception as exc:
    status, error = "error", f"{type(exc).__name__}: {exc}"
json.dump({"status": status, "error": error, "answer": coder.partial_response_content or "", "turns": turns[0],
           "usages": usages, "tool_outputs": outputs, "version": __version__}, open(job["out"], "w"))
'''


def mini_reason(status: str, question: bool, error: str = "") -> str:
    if status == "Submitted":
        return "answered" if question else "done"
    if status == "LimitsExceeded":
        return "max_turns"
    return f"error: {error or status or 'no exit status'}"


def mini_answer(submission: str | None) -> str | None:
    """The text a mini-swe-agent run submitted (the output after COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT)."""
    text = (submission or "").strip()
    return text or None


def aider_answer(reply: str | None) -> str | None:
    """Aider's last reply as it stands (ask mode): the peer's own final answer, not cut down to a candidate."""
    text = (reply or "").strip()
    return text or None


def aider_argv(job: dict[str, Any], work: Path) -> list[str]:
    """Aider's flags: loopback model, nothing asked or fetched, no commits, history files outside the repo."""
    settings = work / "model-settings.yml"
    extra = {"seed": job["seed"]} if job["seed"] is not None else {}
    settings.write_text(json.dumps([{"name": "openai/" + job["model"], "edit_format": "whole",
                                     "use_temperature": job["temperature"], "extra_params": extra}]))
    metadata = work / "model-metadata.json"
    metadata.write_text(json.dumps({"openai/" + job["model"]: {
        "max_input_tokens": 32768, "max_output_tokens": 512, "max_tokens": 32768, "input_cost_per_token": 0,
        "output_cost_per_token": 0, "litellm_provider": "openai", "mode": "chat"}}))
    return ["--model", "openai/" + job["model"], "--openai-api-base", job["base_url"], "--openai-api-key", "none",
            "--model-settings-file", str(settings), "--model-metadata-file", str(metadata),
            "--edit-format", "ask" if job["question"] else "whole",
            "--yes-always", "--no-check-update", "--analytics-disable", "--no-show-release-notes",
            "--no-show-model-warnings", "--no-auto-commits", "--no-dirty-commits", "--no-gitignore",
            "--no-auto-lint", "--no-auto-test", "--no-suggest-shell-commands", "--no-detect-urls", "--no-stream",
            "--no-pretty", "--no-fancy-input", "--no-restore-chat-history", "--map-tokens", "1024",
            "--chat-history-file", str(work / "chat.md"), "--input-history-file", str(work / "input.txt"),
            "--llm-history-file", str(work / "llm.txt"), str(job["repo"])]


def init_git(repo: Path) -> bool:
    """Make `repo` a git repository with one commit of its files (no hooks); False when it already was one."""
    if (repo / ".git").exists():
        return False
    env = {**os.environ, **GIT_ENV}
    for command in (["init", "-q"], ["config", "user.name", "peer"], ["config", "user.email", "peer@localhost"],
                    ["add", "-A"], ["commit", "-q", "--no-verify", "-m", "task snapshot"]):
        subprocess.run(["git", "-c", "core.hooksPath=" + os.devnull, *command], cwd=repo, env=env, check=True,
                       capture_output=True)
    return True


def sandbox_works(scratch: Path) -> bool:
    """Whether SANDBOX runs here (it needs root or unprivileged user namespaces with mount rights)."""
    if shutil.which("unshare") is None or shutil.which("setpriv") is None:
        return False
    env = {**os.environ, "PEER_REPO": str(scratch), "PEER_CWD": str(scratch), "TMPDIR": str(scratch),
           "PEER_COMMAND": "true"}
    probe = subprocess.run(["unshare", "--mount", "--net", "--fork", "sh", "-c", SANDBOX], env=env,
                           capture_output=True, timeout=30)
    return probe.returncode == 0


def peer_env(home: Path) -> dict[str, str]:
    """The peer's environment: a scratch HOME (aider's caches, mini's config dir) and no secrets of ours."""
    keep = {name: os.environ[name] for name in ("PATH", "LANG", "LC_ALL", "TERM") if name in os.environ}
    aider_cache = home / ".aider" / "caches"
    aider_cache.mkdir(parents=True, exist_ok=True)
    (aider_cache / "model_prices_and_context_window.json").write_text('{"_offline": {}}')  # never fetched
    return {**keep, **QUIET_ENV, **GIT_ENV, "HOME": str(home), "MSWEA_GLOBAL_CONFIG_DIR": str(home / "mswea"),
            "XDG_CONFIG_HOME": str(home / ".config"), "OPENAI_API_KEY": "none", "TMPDIR": str(home)}


def run_driver(harness: str, job: dict[str, Any], env: dict[str, str], timeout_s: float) -> dict[str, Any] | None:
    """The driver's JSON result, or None when it ran past `timeout_s` (its whole process group is killed)."""
    python = VENVS[harness] / "bin" / "python"
    if not python.exists():
        raise FileNotFoundError(f"{python} is missing: run `make peers-agents`")
    driver = MINI_DRIVER if harness == "mini-swe-agent" else AIDER_DRIVER
    out = Path(job["out"])
    with open(out.with_name("driver.log"), "wb") as log:
        process = subprocess.Popen([str(python), "-c", driver], stdin=subprocess.PIPE, stdout=log, stderr=log,
                                   cwd=job["repo"], env=env, start_new_session=True)
        try:
            process.communicate(json.dumps(job).encode(), timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return None
    if not out.exists():
        lines = out.with_name("driver.log").read_text(errors="replace").strip().splitlines() or [""]
        return {"status": "error", "error": f"driver exited with {process.returncode}: {lines[-1][:200]}"}
    return json.loads(out.read_text())


def peer_run(harness: str, question: bool, result: dict[str, Any] | None, deltas: dict[str, int],
             wall_s: float) -> PeerRun:
    """A PeerRun from the driver's result and the server's counter deltas over the task."""
    tokens = dict(turns=deltas["requests_total"], wall_s=wall_s, prompt_tokens=deltas["prompt_tokens_total"],
                  cached_tokens=deltas["cached_tokens_total"], completion_tokens=deltas["generation_tokens_total"])
    if result is None:
        return PeerRun(None, "timeout", **tokens)
    outputs, version = list(result.get("tool_outputs", [])), result.get("version", "")
    status, error = result.get("status", ""), result.get("error", "")
    if harness == "mini-swe-agent":
        answer = mini_answer(result.get("submission")) if question else None
        return PeerRun(answer, mini_reason(status, question, error), tool_outputs=outputs, version=version, **tokens)
    answer = aider_answer(result.get("answer")) if question else None
    if status == "error":
        reason = f"error: {error}"
    elif status == "max_turns":
        reason = "max_turns"
    else:
        reason = ("answered" if answer else "error: no answer") if question else "done"
    return PeerRun(answer, reason, tool_outputs=outputs, version=version, **tokens)


def run_peer(harness: str, text: str, kind: str, repo: Path, server: Server, model: str, max_turns: int,
             temperature: float = 0.0, seed: int | None = None, timeout_s: float = 900,
             trace: Path | None = None) -> PeerRun:
    """One task by one peer on `repo` (edited in place), through `server`; `trace`: a folder to keep the peer's
    own transcripts in (mini-swe-agent's trajectory.json; aider's chat.md and llm.txt; the driver's log)."""
    if harness not in HARNESSES:
        raise ValueError(f"unknown harness {harness!r}; known: {', '.join(HARNESSES)}")
    repo = repo.resolve()
    with tempfile.TemporaryDirectory(prefix="peer-") as scratch:
        work = Path(scratch)
        job = {"text": text, "question": kind in QUESTION_KINDS, "repo": str(repo), "base_url": server.base_url,
               "model": model, "max_turns": max_turns, "temperature": temperature, "seed": seed,
               "out": str(work / "result.json"), "sandbox": None}
        if harness == "mini-swe-agent" and sandbox_works(work):
            job["sandbox"] = SANDBOX
        created_git = harness == "aider" and init_git(repo)
        if harness == "aider":
            job["argv"] = aider_argv(job, work)
        before, start = server.metrics(), time.perf_counter()
        try:
            result = run_driver(harness, job, peer_env(work / "home"), timeout_s)
        finally:
            wall_s = time.perf_counter() - start
            if created_git:
                shutil.rmtree(repo / ".git", ignore_errors=True)
            shutil.rmtree(repo / ".aider.tags.cache.v4", ignore_errors=True)
            if trace is not None:
                shutil.copytree(work, trace, ignore=shutil.ignore_patterns("home"), dirs_exist_ok=True)
        return peer_run(harness, job["question"], result, counter_deltas(before, server.metrics()), wall_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run one task by a peer harness through agentcache serve.")
    parser.add_argument("text")
    parser.add_argument("--harness", choices=HARNESSES, default="mini-swe-agent")
    parser.add_argument("--kind", choices=("question", "multi-step", "edit"), default="question")
    parser.add_argument("--repo", type=Path, default=ROOT / "examples" / "repo", help="copied, never edited")
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--quant", default="auto")
    parser.add_argument("--max-turns", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--keep", type=Path, help="keep the edited copy of the repo here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="peer-repo-") as scratch, Server(args.model, args.quant) as server:
        repo = Path(scratch) / "repo"
        shutil.copytree(args.repo, repo, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
        run = run_peer(args.harness, args.text, args.kind, repo, server, args.model, args.max_turns,
                       args.temperature, args.seed)
        if args.keep:
            shutil.copytree(repo, args.keep, dirs_exist_ok=True)
    print(json.dumps(asdict(run), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
