"""benchmarks.peer_agents: its pure parts on samples captured from real runs (Aider 0.86.2 and mini-swe-agent 2.4.6
driving qwen2.5-coder-1.5b through `agentcache serve`). Running the peers needs `make peers-agents`, which the suite
does not install: the end-to-end runs live in the benchmark (`python -m benchmarks.peer_agents`)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from benchmarks import peer_agents
from benchmarks.task_checks import DefinedIn

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "repo"

# /metrics around Aider's question task: the counters as the server reported them (HELP/TYPE lines cut down; the
# TTFT sum and the labelled error row stand in for the rows the parser must read or skip).
METRICS_BEFORE = """# HELP agentcache_requests_total Chat completions answered.
# TYPE agentcache_requests_total counter
agentcache_requests_total 7
agentcache_prompt_tokens_total 7069
agentcache_cached_tokens_total 5792
agentcache_computed_tokens_total 1277
agentcache_generation_tokens_total 955
agentcache_kv_pages_total 1170
agentcache_time_to_first_token_seconds_sum 61.210843
# TYPE agentcache_request_errors_total counter
agentcache_request_errors_total{status="400"} 1
"""
METRICS_AFTER = METRICS_BEFORE.replace("requests_total 7", "requests_total 9").replace(
    "prompt_tokens_total 7069", "prompt_tokens_total 8341").replace(
    "cached_tokens_total 5792", "cached_tokens_total 6208").replace(
    "computed_tokens_total 1277", "computed_tokens_total 2133").replace(
    "generation_tokens_total 955", "generation_tokens_total 974")

# The Aider driver's result for "In which file is the function split_sentences defined? Answer with its path."
# (usages as litellm returned them; tool outputs shortened). Its first reply was "textstats/words.py"; Aider then
# added that file to the chat and asked again, and the model's last reply is what Aider ends with.
AIDER_RESULT = {
    "status": "done", "error": "", "answer": "I will add any other files you add to the chat.", "turns": 2,
    "usages": [
        {"completion_tokens": 6, "prompt_tokens": 544, "total_tokens": 550, "completion_tokens_details": None,
         "prompt_tokens_details": {"audio_tokens": None, "cached_tokens": 0, "text_tokens": None,
                                   "image_tokens": None}, "computed_tokens": 544},
        {"completion_tokens": 13, "prompt_tokens": 728, "total_tokens": 741, "completion_tokens_details": None,
         "prompt_tokens_details": {"audio_tokens": None, "cached_tokens": 416, "text_tokens": None,
                                   "image_tokens": None}, "computed_tokens": 312},
    ],
    "tool_outputs": ["I am working with you on code in a git repository.\n...",
                     'textstats/words.py\n"""Splitting text into words and sentences."""\n...'],
    "version": "0.86.2",
}

# The mini-swe-agent driver's result for the same question: six steps of the model searching a made-up path.
MINI_LIMITED = {"status": "LimitsExceeded", "submission": "", "error": "", "turns": 6, "usages": [],
                "tool_outputs": ["/bin/sh: 1: cd: can't cd to /path/to/your/repository\n./textstats/words.py\n"],
                "version": "2.4.6"}


def test_metrics_are_the_unlabelled_samples_by_short_name():
    metrics = peer_agents.parse_metrics(METRICS_BEFORE)
    assert metrics["requests_total"] == 7
    assert metrics["time_to_first_token_seconds_sum"] == pytest.approx(61.210843)
    assert not any("{" in name or name.startswith("agentcache_") for name in metrics)


def test_counter_deltas_agree_with_the_usage_the_server_returned():
    deltas = peer_agents.counter_deltas(peer_agents.parse_metrics(METRICS_BEFORE),
                                        peer_agents.parse_metrics(METRICS_AFTER))
    sums = peer_agents.usage_sums(AIDER_RESULT["usages"])
    assert deltas["requests_total"] == len(AIDER_RESULT["usages"]) == AIDER_RESULT["turns"]
    assert (deltas["prompt_tokens_total"], deltas["cached_tokens_total"], deltas["generation_tokens_total"]) == (
        sums["prompt_tokens"], sums["cached_tokens"], sums["completion_tokens"]) == (544 + 728, 416, 6 + 13)
    assert deltas["computed_tokens_total"] == sum(u["computed_tokens"] for u in AIDER_RESULT["usages"])


def test_usage_without_details_counts_no_cached_tokens():
    assert peer_agents.usage_sums([{"prompt_tokens": 5, "completion_tokens": 2}, {}]) == {
        "prompt_tokens": 5, "cached_tokens": 0, "completion_tokens": 2}


def deltas(requests: int = 2, prompt: int = 1272, cached: int = 416, generated: int = 19) -> dict[str, int]:
    return {"requests_total": requests, "prompt_tokens_total": prompt, "cached_tokens_total": cached,
            "computed_tokens_total": prompt - cached, "generation_tokens_total": generated}


def test_aider_answers_with_its_last_reply_and_the_checker_judges_it():
    run = peer_agents.peer_run("aider", True, AIDER_RESULT, deltas(), 84.6)
    assert (run.answer, run.reason, run.turns, run.version) == (AIDER_RESULT["answer"], "answered", 2, "0.86.2")
    assert (run.prompt_tokens, run.cached_tokens, run.completion_tokens) == (1272, 416, 19)
    assert run.tool_outputs == AIDER_RESULT["tool_outputs"]
    assert not DefinedIn("split_sentences")(run.answer, EXAMPLE, run.tool_outputs).passed


def test_a_submitted_mini_answer_is_the_text_after_the_marker():
    result = {**MINI_LIMITED, "status": "Submitted", "submission": "textstats/words.py\n"}
    run = peer_agents.peer_run("mini-swe-agent", True, result, deltas(3), 30.0)
    assert (run.answer, run.reason, run.turns) == ("textstats/words.py", "answered", 3)
    assert DefinedIn("split_sentences")(run.answer, EXAMPLE, run.tool_outputs).passed


@pytest.mark.parametrize(("harness", "question", "result", "answer", "reason"), [
    ("mini-swe-agent", True, MINI_LIMITED, None, "max_turns"),
    ("mini-swe-agent", True, {**MINI_LIMITED, "status": "Submitted", "submission": "\n"}, None, "answered"),
    ("mini-swe-agent", False, {**MINI_LIMITED, "status": "Submitted", "submission": ""}, None, "done"),
    ("mini-swe-agent", True, {**MINI_LIMITED, "status": "RepeatedFormatError"}, None,
     "error: RepeatedFormatError"),
    ("mini-swe-agent", True, {"status": "error", "error": "driver exited with 1: boom"}, None,
     "error: driver exited with 1: boom"),
    ("aider", True, {**AIDER_RESULT, "status": "max_turns"}, AIDER_RESULT["answer"], "max_turns"),
    ("aider", True, {**AIDER_RESULT, "answer": "  "}, None, "error: no answer"),
    ("aider", False, AIDER_RESULT, None, "done"),
    ("aider", False, {**AIDER_RESULT, "status": "error", "error": "APIConnectionError: x"}, None,
     "error: APIConnectionError: x"),
    ("aider", True, None, None, "timeout"),
])
def test_reasons(harness, question, result, answer, reason):
    run = peer_agents.peer_run(harness, question, result, deltas(), 1.0)
    assert (run.answer, run.reason) == (answer, reason)


def test_aider_flags_keep_it_on_loopback_and_the_sampling_in_its_model_settings(tmp_path):
    job = {"model": "qwen2.5-coder-1.5b", "base_url": "http://127.0.0.1:9/v1", "question": True,
           "temperature": 0.7, "seed": 3, "repo": str(tmp_path / "repo")}
    argv = peer_agents.aider_argv(job, tmp_path)
    assert argv[argv.index("--openai-api-base") + 1] == job["base_url"]
    assert argv[argv.index("--edit-format") + 1] == "ask"
    for flag in ("--no-check-update", "--analytics-disable", "--no-auto-commits", "--no-suggest-shell-commands",
                 "--no-detect-urls", "--yes-always"):
        assert flag in argv
    assert all(not arg.startswith(job["repo"] + "/") for arg in argv)  # history files stay out of the repo
    settings = json.loads((tmp_path / "model-settings.yml").read_text())[0]
    assert (settings["use_temperature"], settings["extra_params"]) == (0.7, {"seed": 3})
    edit = peer_agents.aider_argv({**job, "question": False, "seed": None}, tmp_path)
    assert edit[edit.index("--edit-format") + 1] == "whole"
    assert json.loads((tmp_path / "model-settings.yml").read_text())[0]["extra_params"] == {}


def test_init_git_commits_the_files_once(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    assert peer_agents.init_git(tmp_path)
    tracked = subprocess.run(["git", "ls-files"], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert tracked.stdout.split() == ["a.py"]
    assert not peer_agents.init_git(tmp_path)


def test_a_missing_peer_venv_names_the_make_target(tmp_path, monkeypatch):
    monkeypatch.setitem(peer_agents.VENVS, "aider", tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="make peers-agents"):
        peer_agents.run_driver("aider", {"repo": str(tmp_path), "out": str(tmp_path / "r.json")}, {}, 1)
