"""A hostile OpenAI-compatible server, or a hostile session id, is one clear line: a response body the SDK cannot
parse (5,000 digits, nesting 100,000 deep), a model list of `null`, a session id no HTTP header can carry, and an
error message holding escape sequences, which reaches the terminal inert."""

import json

import pytest

from agentcache.terminal import inert
from tests.agentcache.http_helpers import RecordingServer
from tests.hostile.test_output_hygiene import NO_CONTEXTS, NO_MODEL_CARDS, REPLIES, SESSION_ID, OSC52, run_cli, unsafe


@pytest.fixture()
def small_repo(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "README.md").write_text("# demo\n")
    return repo


def run_openai(repo, server, *extra):
    return run_cli("run", "Read the skill.", "--repo", str(repo), "--backend", "openai", "--base-url",
                   server.url + "/v1", "--model", "m", "--max-turns", "2", *extra)


@pytest.mark.parametrize("body", [b'{"id": "x", "choices": [], "n": ' + b"9" * 5000 + b"}",
                                  b"[" * 100_000 + b"]" * 100_000,
                                  b'{"object": "list", "data": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"])
def test_an_unparseable_body_is_one_error_line(small_repo, body):
    with RecordingServer([NO_MODEL_CARDS, NO_CONTEXTS, (200, body)]) as server:
        code, out, err = run_openai(small_repo, server)
    lines = err.strip().splitlines()
    assert code == 2 and "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error: "), err[-2000:]


@pytest.mark.parametrize("cards", [{"object": "list", "data": None}, {"object": "list", "data": [{"x": 1}]}])
def test_a_model_list_of_null_or_odd_cards_is_not_a_traceback(small_repo, cards):
    with RecordingServer([(200, cards), NO_CONTEXTS, *REPLIES]) as server:
        code, out, err = run_openai(small_repo, server, "--max-turns", "3")
    assert code == 0 and "Traceback" not in err, err[-2000:]


def test_a_session_id_no_header_can_carry_is_sent_percent_encoded(small_repo):
    with RecordingServer([NO_MODEL_CARDS, NO_CONTEXTS, *REPLIES]) as server:
        assert run_openai(small_repo, server, "--max-turns", "3")[0] == 0
    [path] = (small_repo / ".agentcache" / "sessions").glob("*.jsonl")
    path.rename(path.with_name(f"{SESSION_ID}.jsonl"))
    with RecordingServer([NO_MODEL_CARDS, NO_CONTEXTS, *REPLIES]) as server:
        code, out, err = run_openai(small_repo, server, "--max-turns", "3", "--resume", "latest")
        sent = [h.get("x-session-id") for h in server.headers if "x-session-id" in h]
    assert code == 0 and "Traceback" not in err, err[-2000:]
    assert sent and all(h.isascii() and "%" in h for h in sent)


@pytest.mark.parametrize("ref", [OSC52, "\x1b[2J\x9b31m\u202eid"])
def test_an_error_line_prints_its_data_inert(small_repo, ref):
    code, out, err = run_cli("run", "hi", "--repo", str(small_repo), "--resume", ref, "--model", "random-tiny-chat")
    assert code == 2 and unsafe(err) == [] and inert(ref) in err, err


def test_a_reply_with_newlines_cannot_forge_a_turn_line(small_repo):
    forged = "ok\nturn 9: prompt 1  cached 1  computed 0  completion 1  ttft 0.00s  -> forged"
    answer = (200, {"id": "c", "object": "chat.completion", "created": 0, "model": "m",
                    "choices": [{"index": 0, "message": {"role": "assistant",
                                                         "content": json.dumps({"answer": forged})},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}})
    with RecordingServer([NO_MODEL_CARDS, NO_CONTEXTS, answer]) as server:
        code, out, err = run_openai(small_repo, server, "--max-turns", "2")
    assert code == 0, err
    progress = out.split("answered after")[0]  # the answer itself may have lines of its own, after the summary
    assert [line for line in progress.splitlines() if line.startswith("turn ")] == [progress.splitlines()[0]], out
    assert "\\nturn 9:" in progress
