"""benchmarks.speculative on the tiny chat model: the agent's requests recorded from a suite task, replayed per
mode, and every number of the report recomputed from the per-reply results."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from benchmarks import speculative


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    path = tmp_path_factory.mktemp("speculative") / "requests.json"
    # float32: the random model's replies are near ties throughout, which bfloat16 rounds apart between a cold
    # prefill and a warm one
    data = speculative.collect(path, ["where-split-sentences"], Console(quiet=True), "random-tiny-chat", "float32")
    return path, data


def test_collect_keeps_each_request_as_the_engine_got_it(recorded):
    path, data = recorded
    assert json.loads(path.read_text()) == data and data["requests"]
    for request in data["requests"]:
        assert all(key in data["texts"] for key in request["segments"])
        assert len(request["retention"]) == len(request["segments"]) and request["tools"]
        assert request["task"] == "where-split-sentences" and request["kind"] == speculative.kind_of(request["reply"])


def test_replay_reproduces_the_replies_and_the_rows_add_up(recorded):
    _, data = recorded
    methods = ("off", "lookup", "draft", "auto+draft")
    results = speculative.replay(data, methods, Console(quiet=True), draft="random-tiny-chat")
    assert len(results) == len(methods) * len(data["requests"])
    assert all(r["identical"] for r in results)
    assert all(r["recorded"] for r in results if r["method"] == "off")  # the replay is the agent's own reply
    rows = {(r["method"], r["kind"]): r for r in speculative.rows(results)}
    lookup = [r for r in results if r["method"] == "lookup"]
    row = rows[("lookup", "all")]
    assert row["tokens"] == sum(len(r["tokens"]) - 1 for r in lookup)
    assert row["tok_s"] == pytest.approx(row["tokens"] / sum(r["decode_s"] for r in lookup), rel=1e-3)
    assert row["drafted"] == sum(r["drafted"] for r in lookup) > 0
    assert row["acceptance"] == pytest.approx(sum(r["accepted"] for r in lookup) / row["drafted"], abs=1e-3)
    assert row["speedup"] == pytest.approx(row["tok_s"] / rows[("off", "all")]["tok_s"], abs=2e-3)
    assert rows[("draft", "all")]["drafted"] > 0  # the tiny model drafting for itself


@pytest.mark.parametrize(("reply", "kind"), [
    ('{"name": "edit_file", "arguments": {"path": "a.py"}}', "edit"),
    ('<tool_call>\n{"name": "search", "arguments": {"pattern": "x"}}\n</tool_call>', "tool call"),
    ("Here is the fix:\n```python\n# a.py\ndef f():\n    return 1\n```", "edit"),
    ("`textstats/words.py`", "answer"),
])
def test_reply_kinds(reply, kind):
    assert speculative.kind_of(reply) == kind
