"""Best-of-n (`run --samples N`): the candidates run at once with their own seeds and sessions; a question's pick is
the vote over what the answers name, an edit's is the candidate whose tests pass in its own copy of the repository,
and only its changes reach the repository. The server answers by the request's seed (candidate i > 1 samples with
seed i-1, each reply's seed is (seed << 8) + turn), so the replies do not depend on the order the threads run in."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from agentcache.agent import Outcome
from agentcache.config import RunConfig
from agentcache.samples import Candidate, answer_keys, candidate_configs, pick_by_tests, vote
from agentcache.session import Session
from tests.agentcache.http_helpers import MODELS_THEN_NO_CONTEXTS, chat_reply, run_scripted

CALC = "def add(a, b):\n    return a - b\n"
TEST_CALC = "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"
TEST_COMMAND = f"{sys.executable} -m pytest -q -p no:cacheprovider"


def candidate_of(body: dict[str, Any]) -> tuple[int, int]:
    """(candidate index, turn) of a chat request: greedy (no seed) is candidate 0, whose turn is its message count."""
    seed = body.get("seed")
    replies = sum(m["role"] == "assistant" for m in body["messages"])
    return (0, replies + 1) if seed is None else (seed >> 8, seed & 0xFF)


def by_candidate(replies: list[list[tuple[int, Any]]]):
    def reply(path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        if not path.endswith("/chat/completions"):
            return MODELS_THEN_NO_CONTEXTS[0] if path.endswith("/models") else MODELS_THEN_NO_CONTEXTS[1]
        index, turn = candidate_of(body)
        script = replies[index]
        return script[min(turn, len(script)) - 1]
    return reply


def session_records(repo: Path, session_id: str) -> list[dict[str, Any]]:
    path = repo / ".agentcache" / "sessions" / f"{session_id}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_answer_keys_are_what_the_answer_names_beyond_the_task() -> None:
    task = "Which file defines `ttl_cache`? Answer with its path."
    assert answer_keys("The decorator `ttl_cache` is defined in `src/cachetools/func.py`.", task) == \
        ["src/cachetools/func.py"]
    assert answer_keys("src/cachetools/func.py", task) == ["src/cachetools/func.py"]
    assert answer_keys("It has 3 syllables, see line 11.", "How many syllables has banana?") == ["3", "11"]
    assert answer_keys("TTLCache", task) == ["ttlcache"]
    assert answer_keys("Nowhere at all.", task) == ["nowhere at all"]


def candidates_answering(*answers: str | None) -> list[Candidate]:
    out = []
    for i, answer in enumerate(answers):
        c = Candidate(i, RunConfig(), Session(Path(f"/nonexistent/{i}.jsonl")), Path("."))
        c.outcome = Outcome("answered" if answer else "invalid_output", answer, 1)
        c.keys = answer_keys(answer, "Where is it?") if answer else []
        out.append(c)
    return out


def test_the_vote_picks_the_most_given_name_and_the_earliest_on_a_tie() -> None:
    assert vote(candidates_answering("`a.py`", "It is b.py.", "b.py", None)) == (1, {"a.py": 1, "b.py": 2})
    assert vote(candidates_answering("a.py", "b.py"))[0] == 0
    assert vote(candidates_answering(None, None)) == (0, {})
    assert vote(candidates_answering(None, "`c.py` line 4", "c.py"))[0] == 1


def test_the_test_pick_prefers_passing_then_changed_then_most_passed() -> None:
    cs = candidates_answering("x", "y", "z")
    for c, tests, changed in zip(cs, ({"exit_code": 1, "passed": 4}, {"exit_code": 0, "passed": 3},
                                      {"exit_code": 0, "passed": 3}), ([], ["a.py"], ["a.py"])):
        c.tests, c.changed = tests, changed
    assert pick_by_tests(cs) == 1
    cs[1].tests = {"exit_code": 1, "passed": 2}
    assert pick_by_tests(cs) == 2
    cs[2].tests = {"exit_code": None, "passed": 0}
    assert pick_by_tests(cs) == 1  # failing, but it changed something; the first passed more without changing
    cs[0].changed = ["a.py"]
    assert pick_by_tests(cs) == 0


def test_candidate_configs_sample_all_but_the_first() -> None:
    configs = candidate_configs(RunConfig(seed=5), 3)
    assert [(c.temperature, c.seed) for c in configs] == [(0.0, 5), (0.7, 6), (0.7, 7)]
    assert [(c.temperature, c.seed) for c in candidate_configs(RunConfig(temperature=0.3), 2)] == [(0.3, 0), (0.3, 1)]


def test_a_question_is_answered_by_the_vote_and_every_candidate_is_recorded(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("def thing():\n    pass\n")
    (tmp_path / "pkg" / "b.py").write_text("def other():\n    pass\n")  # a path the tree shows: no answer is unseen
    answers = ["It is in `pkg/a.py`.", "`pkg/b.py`", "The file is pkg/b.py."]
    server = by_candidate([[chat_reply({"answer": answer})] for answer in answers])
    run = run_scripted(tmp_path, "Which file defines `thing`?", [server], "--mode", "read-only", "--samples", "3")
    assert run.summary["answer"] == "`pkg/b.py`"
    record = run.summary["samples"]
    assert record["how"] == "vote" and record["pick"] == 1 and record["votes"] == {"pkg/a.py": 1, "pkg/b.py": 2}
    assert [c["answer"] for c in record["candidates"]] == answers
    assert [(c["temperature"], c["seed"]) for c in record["candidates"]] == [(0.0, 0), (0.7, 1), (0.7, 2)]
    ids = [c["session_id"] for c in record["candidates"]]
    assert len(set(ids) | {run.summary["session_id"]}) == 4
    for c in record["candidates"]:
        answered = [r for r in session_records(tmp_path, c["session_id"]) if r["type"] == "request"]
        assert [r["reply"] for r in answered] == [json.dumps({"answer": c["answer"]})]
    assert len(run.sent) == 3 and {body.get("seed") for body in run.sent} == {None, (1 << 8) + 1, (2 << 8) + 1}
    shown = subprocess.run([sys.executable, "-m", "agentcache.cli", "inspect", "--repo", str(tmp_path),
                            run.summary["session_id"]], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "COLUMNS": "200"})
    assert shown.returncode == 0, shown.stderr
    assert "samples: 3 candidates, pick by vote" in shown.stdout and "pick: candidate 2" in shown.stdout
    assert "pkg/b.py 2" in shown.stdout and ids[2] in shown.stdout


def edit_script(content: str | None) -> list[tuple[int, Any]]:
    """Write calc.py with `content` (None: look only), then answer."""
    first = chat_reply({"name": "write_file", "arguments": {"path": "calc.py"}}, content) if content is not None \
        else chat_reply({"name": "list_files", "arguments": {}})
    return [first, chat_reply({"answer": "done"})]


def test_an_edit_is_picked_by_its_tests_and_only_the_pick_reaches_the_repo(tmp_path: Path) -> None:
    (tmp_path / "calc.py").write_text(CALC)
    (tmp_path / "test_calc.py").write_text(TEST_CALC)
    scripts = [edit_script("def add(a, b):\n    return a * b\n"), edit_script("def add(a, b):\n    return a + b\n"),
               edit_script(None)]
    run = run_scripted(tmp_path, "Fix add in calc.py.", [by_candidate(scripts)], "--samples", "3",
                       "--test-command", TEST_COMMAND)
    record = run.summary["samples"]
    assert record["how"] == "tests" and record["pick"] == 1 and record["applied"] == ["calc.py"]
    assert [c["tests"]["exit_code"] for c in record["candidates"]] == [1, 0, 1]
    assert [c["tests"]["passed"] for c in record["candidates"]] == [0, 1, 0]
    assert [c["changed"] for c in record["candidates"]] == [["calc.py"], ["calc.py"], []]
    assert (tmp_path / "calc.py").read_text() == "def add(a, b):\n    return a + b\n"
    assert (tmp_path / "test_calc.py").read_text() == TEST_CALC
    changes = [r["tool_result"].get("change") for r in session_records(tmp_path, record["candidates"][1]["session_id"])
               if r["type"] == "request" and r.get("tool_result")]
    assert changes == [{"path": "calc.py", "line": 1, "before": CALC, "after": "def add(a, b):\n    return a + b\n"}]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".agentcache", "calc.py", "test_calc.py"]


def test_samples_in_edit_mode_need_a_test_command_and_bad_counts_are_refused(tmp_path: Path) -> None:
    (tmp_path / "calc.py").write_text(CALC)
    for flags, message in ((["--samples", "2"], "needs the project's test command"),
                           (["--samples", "0"], "samples must be between 1 and 16, got 0"),
                           (["--samples", "17"], "samples must be between 1 and 16, got 17")):
        proc = subprocess.run([sys.executable, "-m", "agentcache.cli", "run", "Fix add.", "--repo", str(tmp_path),
                               "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", *flags],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr
    sessions = tmp_path / ".agentcache" / "sessions"
    assert (tmp_path / "calc.py").read_text() == CALC and not (sessions.exists() and any(sessions.iterdir()))


def test_one_sample_is_a_plain_run(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x = 1\n")
    run = run_scripted(tmp_path, "What is x?", [chat_reply({"answer": "1"})], "--samples", "1")
    assert run.summary["answer"] == "1" and "samples" not in run.summary
