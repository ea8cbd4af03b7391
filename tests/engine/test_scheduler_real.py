"""Batched decode on the real embedded model: the same greedy tokens and text as each request run alone."""

from engine import Engine, Request
from tests.engine.scheduling import run_together
from tests.engine.test_runner_real import chat

P = 16


def test_batched_greedy_equals_solo_on_real_model(smol):
    questions = ["Name a color.", "In one sentence, why do Python projects keep tests next to the code they check?",
                 "Count from 1 to 10, separated by commas."]
    systems = ["You are terse.", "You are a careful assistant for a small Python project. " * 4, "You count."]
    requests = [Request(chat(smol, s, q), max_tokens=10) for s, q in zip(systems, questions)]
    solo = [Engine(smol, P, 64 << 20).generate(r) for r in requests]
    stop = solo[2].text[3:5]
    requests.append(Request(chat(smol, systems[2], questions[2]), max_tokens=10, stop=[stop]))
    engine = Engine(smol, P, 64 << 20)
    batched = run_together(engine, requests)
    assert [r.token_ids for r in batched[:3]] == [r.token_ids for r in solo]
    assert [r.text for r in batched[:3]] == [r.text for r in solo]
    assert batched[3].finish_reason == "stop" and batched[3].text == solo[2].text[: solo[2].text.index(stop)]
    assert engine.stats()["decode_rows"] > engine.stats()["decode_steps"]  # they did share decode steps
