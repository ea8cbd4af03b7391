"""The runner on the real embedded model: warm equals cold, greedy output is identical, text features work."""

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import Engine, Request
from tests.engine.conftest import reference_logits, rel_err

P = 16
SETTINGS = settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(seed=st.integers(0, 10_000), length=st.integers(20, 300), data=st.data())
def test_warm_logits_equal_cold_on_real_model(smol, seed, length, data):
    rng = random.Random(seed)
    tokens = [rng.randrange(3, smol.config.vocab_size) for _ in range(length)]
    split = data.draw(st.integers(1, length - 1))
    engine = Engine(smol, page_size=P, capacity_bytes=256 << 20)
    engine.generate(Request([tokens[:split]], max_tokens=1))
    warm = engine.generate(Request([tokens[:split], tokens[split:]], max_tokens=1, return_logits=True))
    assert warm.usage.cached_tokens == min(split, length - 1) // P * P
    assert rel_err(warm.first_logits, reference_logits(smol, tokens)) <= 1e-4


def chat(smol, system: str, question: str) -> list[str]:
    """System and user messages rendered by the model's own chat template, one segment each."""
    render = smol.tokenizer.apply_chat_template
    sys_text = render([{"role": "system", "content": system}], tokenize=False)
    full = render([{"role": "system", "content": system}, {"role": "user", "content": question}],
                  tokenize=False, add_generation_prompt=True)
    assert full.startswith(sys_text)
    return [sys_text, full[len(sys_text):]]


def test_greedy_output_identical_warm_and_cold_for_20_prompts(smol):
    system = ("You are a careful assistant for a small Python project called textstats. "
              "It counts words, lines and characters in text files and prints a summary table. ") * 3
    questions = [f"In one sentence, what does function number {i} of textstats probably do?" for i in range(20)]
    warm_engine = Engine(smol, page_size=P, capacity_bytes=256 << 20)
    for q in questions:
        cold = Engine(smol, page_size=P, capacity_bytes=64 << 20).generate(Request(chat(smol, system, q), max_tokens=8))
        warm = warm_engine.generate(Request(chat(smol, system, q), max_tokens=8))
        assert warm.token_ids == cold.token_ids and warm.text == cold.text
    assert warm.usage.cached_tokens >= len(smol.tokenizer.encode(system)) // P * P
    assert warm_engine.stats()["cached_tokens_total"] >= 19 * warm.usage.cached_tokens


def test_string_segments_tokenize_on_their_own(smol):
    engine = Engine(smol, page_size=P, capacity_bytes=64 << 20)
    a, b = "Hello there, ", "general Kenobi"
    result = engine.generate(Request([a, b], max_tokens=1))
    enc = smol.tokenizer.encode
    assert result.trace.segment_tokens == [len(enc(a, add_special_tokens=False)), len(enc(b, add_special_tokens=False))]
    assert result.usage.prompt_tokens == sum(result.trace.segment_tokens)


def test_stop_string_cuts_text(smol):
    engine = Engine(smol, page_size=P, capacity_bytes=64 << 20)
    segments = chat(smol, "You are a helpful assistant.", "Count from 1 to 20, separated by commas.")
    full = engine.generate(Request(segments, max_tokens=30))
    assert len(full.text) > 8
    stop = full.text[4:7]
    cut = engine.generate(Request(segments, max_tokens=30, stop=[stop]))
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[: full.text.index(stop)]
