"""The agent loop on the real embedded model and engine: warm turns, sessions, resume, tool safety."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentcache.agent import COMPACT_PROMPT, Agent
from agentcache.backends.local import LocalBackend
from agentcache.cache_dir import models_dir
from agentcache.config import RunConfig
from agentcache.render import ChatRenderer
from agentcache.session import Session
from agentcache.display import turn_line
from engine import load_model
from layers import Context, Layer

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "repo"


@pytest.fixture(scope="module")
def backend():
    return LocalBackend(load_model("smollm2-135m", cache_dir=models_dir()))


def requests_of(session: Session) -> list[dict]:
    return [r for r in session.records() if r["type"] == "request"]


def test_chat_template_is_prefix_stable_and_segments_concatenate(backend):
    renderer = backend.renderer
    assert renderer.template_stable
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                {"role": "assistant", "content": "a"}]
    render = backend.model.tokenizer.apply_chat_template
    assert "".join(renderer.segments(messages)) == render(messages, tokenize=False, add_generation_prompt=True)
    longer = messages + [{"role": "tool", "content": "t"}]
    assert "".join(renderer.segments(longer)) == render(longer, tokenize=False, add_generation_prompt=True)
    edited = [messages[0], {"role": "user", "content": "changed"}, *longer[2:]]  # reused renders must not leak
    assert "".join(renderer.segments(edited)) == render(edited, tokenize=False, add_generation_prompt=True)


def test_unstable_template_falls_back_to_chatml():
    class DateTemplate:
        chat_template = "x"
        calls = 0

        def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
            DateTemplate.calls += 1
            return f"{DateTemplate.calls}:" + "".join(m["content"] for m in messages)

    renderer = ChatRenderer(DateTemplate())
    assert not renderer.template_stable
    assert renderer.segments([{"role": "user", "content": "hi"}]) == \
        ["<|im_start|>user\nhi<|im_end|>\n", "<|im_start|>assistant\n"]


def test_three_turn_run_keeps_the_prefix_warm(backend, repo):
    session = Session.create(repo)
    agent = Agent(repo, backend, RunConfig(max_turns=3, max_tokens=48, retries=5), session)
    agent.run_start("List the Python files of this project, then read the main module.")
    for turn in (1, 2, 3):  # three requests whatever the model replies: the mechanics, not its choices
        agent.step(turn)
    records = requests_of(session)
    assert len(records) == 3
    for record in records[1:]:
        assert record["usage"]["cached_tokens"] >= 0.9 * record["prefix_tokens"]
        assert record["layers"]["L1"] == records[0]["layers"]["L1"]
        assert record["layers"]["L2"] == records[0]["layers"]["L2"]
        assert [b for b in record["blocks"] if b["layer"] != "L3"] == \
            [b for b in records[0]["blocks"] if b["layer"] != "L3"]
    for record in records:
        usage = record["usage"]
        assert usage["prompt_tokens"] == sum(record["segment_tokens"])
        assert usage["cached_tokens"] + usage["computed_tokens"] == usage["prompt_tokens"]


def test_tool_calls_parse_and_name_enabled_tools_even_after_disabling(backend, repo):
    session = Session.create(repo)
    agent = Agent(repo, backend, RunConfig(max_turns=4, max_tokens=48, retries=5), session)
    agent.run_start("Look around the repository.")
    agent.step(1)
    l1_before = agent.context.layer_hashes()["L1"]
    agent.enabled = {"read_file", "finish"}
    agent.step(2)
    assert agent.context.layer_hashes()["L1"] == l1_before
    records = requests_of(session)
    assert records[1]["enabled_tools"] == ["finish", "read_file"]
    for record in records:
        if record.get("tool_call"):
            assert record["tool_call"]["name"] in record["enabled_tools"]
        else:
            assert record.get("error") or json.loads(record["reply"])
    assert records[1]["layers"]["L1"] == records[0]["layers"]["L1"]


def test_refused_tools_become_errors_and_the_run_continues(backend, repo, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("secret-outside-content")
    (repo / "link.txt").symlink_to(outside)
    agent = Agent(repo, backend, RunConfig(max_turns=1), Session.create(repo))
    for name, args in [("read_file", {"path": "../outside.txt"}), ("read_file", {"path": "link.txt"}),
                       ("run_command", {"command": "echo hi"})]:
        outcome = agent.toolbox.run(name, args)
        assert outcome.is_error and "secret-outside-content" not in outcome.output
    assert "--allow-shell" in agent.toolbox.run("run_command", {"command": "echo hi"}).output


def test_resume_continues_with_a_warm_prefix_and_same_context_id(backend, repo):
    session = Session.create(repo)
    first = Agent(repo, backend, RunConfig(max_turns=1, max_tokens=32, retries=5), session)
    first.run("What is this project?")
    before = requests_of(session)[-1]
    again = Agent(repo, backend, RunConfig(max_turns=1, max_tokens=32, retries=5), Session.open(repo, session.id))
    assert again.resume() == before["context_id"]
    assert len(again.context.l3) == len(first.context.l3)
    assert [b.hash for b in again.context] == [b.hash for b in first.context]
    again.run("Continue.")
    after = requests_of(session)[-1]
    assert after["context_id"] == before["context_id"] and after["turn"] == before["turn"] + 1
    assert after["usage"]["cached_tokens"] >= after["prefix_tokens"] // 16 * 16


def test_killed_run_leaves_a_parseable_session(repo):
    (repo / "agentcache.yaml").write_text(  # never ends by itself; keeps the user cache untouched
        "retries: 1000\nmax_turns: 1000\nmax_tokens: 2\ndisk_cache: false\n")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "agentcache.cli", "run", "Explore the repo in detail.",
                             "--repo", str(repo)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    sessions = repo / ".agentcache" / "sessions"
    deadline = time.time() + 240
    files: list[Path] = []
    while time.time() < deadline and proc.poll() is None:
        files = list(sessions.glob("*.jsonl")) if sessions.is_dir() else []
        if files and len(files[0].read_bytes().splitlines()) >= 4:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    lines = files[0].read_text().splitlines()
    assert len(lines) >= 4
    assert all(isinstance(json.loads(line), dict) for line in lines)


@pytest.mark.parametrize("case", ["missing_repo", "unknown_model", "bad_yaml"])
def test_bad_input_is_one_line_exit_2(repo, case):
    args = ["run", "hello", "--repo", str(repo)]
    if case == "missing_repo":
        args[3] = str(repo / "nope")
    elif case == "unknown_model":
        args += ["--model", "no-such-org/no-such-model"]
    else:
        (repo / "agentcache.yaml").write_text("max_turns: [1,\n  role: x\n")
    proc = subprocess.run([sys.executable, "-m", "agentcache.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in proc.stderr


def test_compaction_is_a_summary_fork_on_the_live_prefix_and_rewrites_only_l3(backend, repo, capsys):
    session = Session.create(repo)
    agent = Agent(repo, backend, RunConfig(max_turns=1, max_tokens=16, retries=50), session)
    agent.run_start("Read files.")
    agent.step(1)
    for i in range(8):
        agent.toolbox.run("list_files", {})
        agent._append([b for b in agent.context.l3[-1:]], {"type": "filler", "i": i})
    before = list(agent.context)
    tokenizer = backend.model.tokenizer
    tokens_before = sum(len(tokenizer.encode(s, add_special_tokens=False))
                        for s in backend.renderer.block_segments(agent.context))

    class SmallWindow(LocalBackend):
        def window(self) -> int:
            return tokens_before + 16 + 256 + 128 - 1  # the next request and the summary request would not fit

    agent.backend = SmallWindow(backend.model, backend.engine)
    agent.step(2)
    rows = session.records()
    summary, compaction, after = (next(r for r in rows if r["type"] == "request" and r.get("purpose") == "compaction"),
                                  next(r for r in rows if r["type"] == "compaction"), requests_of(session)[-1])
    first = requests_of(session)[0]
    # the summary request: every block of the live context, then the instruction; the same tools listed
    assert [b["hash"] for b in summary["blocks"][:-1]] == [b.hash for b in before]
    texts = {r["hash"]: r["text"] for r in rows if r["type"] == "block"}
    assert texts[summary["blocks"][-1]["hash"]] == COMPACT_PROMPT.read_text()
    assert summary["usage"]["cached_tokens"] >= (first["usage"]["prompt_tokens"] - 1) // 16 * 16  # a cache hit
    assert summary["usage"]["prompt_tokens"] > tokens_before
    # the compaction: L1 and L2 untouched; task, summary, then what the payback rule kept
    assert [b.hash for b in agent.context.prefix] == [b.hash for b in before if b.layer != Layer.L3]
    assert compaction["tokens_before"] == tokens_before and compaction["trigger"] == "window"
    assert after["usage"]["prompt_tokens"] == compaction["tokens_after"] < tokens_before  # the engine's own count
    l3 = compaction["l3"]
    assert l3[0]["text"] == "Read files." and l3[1]["text"].startswith(f"[Summary of {compaction['dropped']} earlier")
    assert l3[1]["text"].endswith(json.loads(summary["reply"])["answer"])  # the model's own words
    assert len(l3) == 2 + (len(before) - len(agent.context.prefix) - 1 - compaction["dropped"])
    task = agent.context.l3[0]
    kept_prompt = sum(len(tokenizer.encode(s, add_special_tokens=False))
                      for s in backend.renderer.block_segments(Context([*agent.context.prefix, task])))
    assert compaction["kept_tokens"] == kept_prompt
    assert after["usage"]["cached_tokens"] >= (kept_prompt - 4) // 16 * 16  # up to the task, less its turn's end
    # the warning run prints before the next request: the tokens after the task it prefills again
    again = compaction["tokens_after"] - compaction["kept_tokens"]
    assert turn_line(compaction).startswith(f"warning: compaction: {compaction['dropped']} earlier entries replaced "
                                            f"by the model's summary; the next request prefills {again} tokens")
    assert turn_line(compaction).endswith(f"every later one is {tokens_before - compaction['tokens_after']} tokens "
                                          "shorter")
    assert 0 <= after["usage"]["computed_tokens"] - again <= 16 + 3  # the engine's page, the generation prompt
    # inspect's accounting, from the usage the engine reported
    view = json.loads(inspect_json(capsys, repo))
    row = view["compactions"][0]
    anyway = tokens_before - first["usage"]["prompt_tokens"]
    cost = (summary["usage"]["computed_tokens"] + summary["usage"]["completion_tokens"]
            + after["usage"]["computed_tokens"] - anyway)
    assert row["cost_tokens"] == cost and row["requests_after"] == 1
    assert row["saved_tokens"] == tokens_before - after["usage"]["prompt_tokens"]
    assert row["net_tokens"] == row["saved_tokens"] - cost


def inspect_json(capsys, repo: Path) -> str:
    from agentcache.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["inspect", "--json", "--repo", str(repo)])
    return capsys.readouterr().out


