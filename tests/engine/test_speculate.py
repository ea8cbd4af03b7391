"""Speculative decoding (engine.speculate): the lookup index, the draft-length rule, the accept/reject rule's
distribution, and the engine's output with speculation against its output without, on the tiny random model (its
greedy replies repeat themselves, so lookup drafts) and on a random Qwen2 model on GGUF blocks (the block kernels'
verification)."""

from __future__ import annotations

import pytest
import torch

from engine import Engine, EngineError, LoadedModel, Request, load_model
from engine.request import SamplingParams
from engine.sampling import check_drafted, distribution
from engine.speculate import MAX_DRAFT, LookupIndex, Speculation, draft_length
from engine.gguf.build import kernels
from tests.engine.test_decode_paths import gguf_model

PATTERN = [5, 6, 7, 8, 9, 10, 11, 12] * 6 + [5, 6, 7]


def index_of(tokens: list[int]) -> LookupIndex:
    index = LookupIndex()
    index.extend(tokens)
    return index


def test_lookup_proposes_what_followed_the_latest_occurrence():
    assert index_of([1, 2, 3, 9, 1, 2, 3, 4, 5, 1, 2, 3]).propose(3) == [4, 5, 1]
    assert index_of([1, 2, 3, 4, 1, 2]).propose(8) == [3, 4, 1, 2]


def test_lookup_prefers_the_longest_ngram():
    # the last two tokens (7, 8) occur most recently before 0; the last three (6, 7, 8) only before 1
    assert index_of([6, 7, 8, 1, 2, 7, 8, 0, 3, 6, 7, 8]).propose(1) == [1]


def test_lookup_without_an_earlier_ngram_proposes_nothing():
    assert index_of([1, 2, 3, 4, 5]).propose(4) == []
    assert index_of([1, 2, 3, 1]).propose(4) == []  # one matching token is not a draft
    assert index_of([]).propose(4) == []


def test_lookup_extended_piece_by_piece_equals_at_once():
    tokens = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 1, 4, 1, 5]
    index = LookupIndex()
    for i in range(0, len(tokens), 4):
        index.extend(tokens[i : i + 4])
    assert index.follows == index_of(tokens).follows
    assert index.propose(3) == [9, 2, 6]


def test_draft_length_pays_only_where_tokens_per_cost_rise():
    assert draft_length(0.2, 0.5, MAX_DRAFT) == 0
    assert draft_length(0.9, 0.0, MAX_DRAFT) == MAX_DRAFT  # free positions: draft all
    assert 0 < draft_length(0.8, 0.5, MAX_DRAFT) < draft_length(0.95, 0.5, MAX_DRAFT) <= MAX_DRAFT
    assert draft_length(0.99, 0.1, 3) == 3


def test_check_drafted_greedy_keeps_the_draft_only_when_it_is_the_argmax():
    logits = torch.tensor([0.0, 3.0, 1.0, 2.0])
    greedy = SamplingParams()
    assert check_drafted(logits, 1, greedy, None) == (1, True)
    assert check_drafted(logits, 3, greedy, None) == (1, False)


@pytest.mark.parametrize("drafted", [0, 2, 4])
def test_check_drafted_sampled_keeps_the_target_distribution(drafted):
    """Whatever is drafted (likely, unlikely, outside the nucleus), the chosen token is distributed as the target's
    distribution: 40,000 draws each, within 0.012 of it in every token's frequency."""
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -3.0])
    params = SamplingParams(temperature=0.8, top_p=0.95, seed=0)
    target = distribution(logits, params)
    target = target / target.sum()
    generator = torch.Generator().manual_seed(7)
    counts, kept = torch.zeros(5), 0
    for _ in range(40_000):
        token, accepted = check_drafted(logits, drafted, params, generator)
        counts[token] += 1
        kept += accepted
    assert float((counts / counts.sum() - target).abs().max()) < 0.012
    assert abs(kept / 40_000 - float(target[drafted])) < 0.012  # kept with the target's probability of it


def generate(engine_model, mode: str, prompt: list[int] = PATTERN, draft=None, threads: str = "auto",
             **kwargs) -> tuple[Engine, object]:
    engine = Engine(engine_model, draft=draft, threads=threads)
    return engine, engine.generate(Request([prompt], max_tokens=48, speculate=mode, **kwargs))


@pytest.mark.parametrize("mode", ["lookup", "auto"])
def test_greedy_output_is_the_same_token_for_token(tiny, mode):
    _, plain = generate(tiny, "off")
    engine, spec = generate(tiny, mode)
    assert spec.token_ids == plain.token_ids
    assert spec.text == plain.text
    assert spec.usage.drafted_tokens > 0 and spec.usage.accepted_tokens > 0
    assert engine.stats()["verify_steps"] > 0
    assert plain.usage.drafted_tokens == 0


@pytest.mark.parametrize("right", [True, False])
def test_greedy_output_is_the_same_on_the_block_kernels(models_dir, monkeypatch, right):
    """A random model's reply does not repeat itself, so the drafts here are given: the plain reply's next tokens
    (all must be kept: verification computes what the plain steps did) or wrong ones (none kept)."""
    model = gguf_model(kernels(models_dir / "kernels"))
    _, plain = generate(model, "off")
    reply = plain.token_ids

    def given(self, tokens, room, costs, after=None):
        done = len(tokens) - len(PATTERN)
        return [t if right else (t + 1) % 512 for t in reply[done : done + min(room, 4)]]

    monkeypatch.setattr(Speculation, "propose", given)
    engine, spec = generate(model, "lookup")
    assert spec.token_ids == reply
    assert spec.usage.drafted_tokens > 0
    assert spec.usage.accepted_tokens == (spec.usage.drafted_tokens if right else 0)
    assert engine.stats()["verify_steps"] > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_verified_row_is_the_decode_steps_logits_bit_for_bit(models_dir, monkeypatch, dtype):
    """Drafts of 8 given tokens (the plain reply's next ones, so all kept: 9 rows a verification) on a random Qwen2
    model on GGUF blocks: each verification row's logits equal the decode step's at that position bit for bit (in
    bfloat16 on a CPU with its dot product, rows of one sequence must not take prefill's repacked attention, whose
    softmax weights are rounded to bfloat16)."""
    from engine.model_runner import ModelRunner

    model = gguf_model(kernels(models_dir / "kernels"), dtype)
    steps: list[torch.Tensor] = []
    rows: list[torch.Tensor] = []
    decode, verify = ModelRunner.decode, ModelRunner.verify
    monkeypatch.setattr(ModelRunner, "decode", lambda self, batch: steps.append(decode(self, batch)) or steps[-1])
    _, plain = generate(model, "off")
    reply = plain.token_ids

    def given(self, tokens, room, costs, after=None):
        done = len(tokens) - len(PATTERN)
        return reply[done : done + min(room, MAX_DRAFT)]

    monkeypatch.setattr(ModelRunner, "verify", lambda self, batch, draft: rows.append(verify(self, batch, draft))
                        or rows[-1])
    monkeypatch.setattr(Speculation, "propose", given)
    _, spec = generate(model, "lookup")
    assert spec.token_ids == reply and spec.usage.accepted_tokens == spec.usage.drafted_tokens > 0
    verified = torch.cat(rows)
    assert max(len(r) for r in rows) == MAX_DRAFT + 1
    assert torch.equal(verified, torch.cat(steps)[: len(verified)])


def test_a_mask_cuts_the_draft_and_still_decides_every_token(tiny):
    """The mask forbids a token the tiny model's greedy reply would repeat: drafts never hold it, the output
    never does, and it equals plain decoding under the same mask."""
    _, free = generate(tiny, "off")
    banned = max(set(free.token_ids), key=free.token_ids.count)
    allowed = torch.ones(tiny.config.vocab_size, dtype=torch.bool)
    allowed[banned] = False
    asked: list[list[int]] = []

    def mask(ids: list[int]) -> torch.Tensor:
        asked.append(list(ids))
        return allowed

    _, plain = generate(tiny, "off", logits_mask=lambda ids: allowed)
    _, spec = generate(tiny, "lookup", logits_mask=mask)
    assert banned not in spec.token_ids and spec.token_ids == plain.token_ids
    assert not any(banned in ids for ids in asked)
    assert spec.usage.drafted_tokens > 0


def test_the_grammars_forced_tokens_are_drafted_and_the_reply_is_unchanged(models_dir):
    """A tool-call grammar on the tiny chat model: what it forces (`{"`, the rest of a tool's name, `", "arguments":
    {"`) is drafted even where lookup finds nothing, and every token is still the plain reply's."""
    from agentcache.backends.constrain import ToolCallGrammar
    from agentcache.backends.local import tensor_mask
    from agentcache.wiring import load_registry
    from engine import load_model

    model = load_model("random-tiny-chat", cache_dir=models_dir)
    grammar = ToolCallGrammar(model.tokenizer, list(load_registry()), allow_answer=False)

    def reply(mode: str):
        mask = tensor_mask(grammar.new_mask(model.config.vocab_size))
        engine = Engine(model)
        return engine.generate(Request(["Find the file."], max_tokens=40, logits_mask=mask,
                                       forced_tokens=mask.forced, speculate=mode))

    plain, spec = reply("off"), reply("lookup")
    assert spec.token_ids == plain.token_ids and spec.text.startswith('{"name": "')
    assert spec.usage.accepted_tokens >= len(model.tokenizer.encode('{"', add_special_tokens=False))


def test_sampled_speculation_runs_and_is_reproducible_by_seed(tiny):
    params = SamplingParams(temperature=0.7, seed=3)
    _, a = generate(tiny, "lookup", sampling=params)
    _, b = generate(tiny, "lookup", sampling=SamplingParams(temperature=0.7, seed=3))
    assert a.token_ids == b.token_ids and len(a.token_ids) == 48


def test_stop_inside_a_draft_ends_the_reply_there(tiny):
    _, free = generate(tiny, "off")
    stop = free.token_ids[30]
    _, plain = generate(tiny, "off", stop_token_ids=[stop])
    _, spec = generate(tiny, "lookup", stop_token_ids=[stop])
    assert spec.token_ids == plain.token_ids and spec.token_ids[-1] == stop and spec.finish_reason == "stop"


def test_unknown_mode_is_one_clear_error(tiny):
    with pytest.raises(EngineError, match="unknown speculate mode 'fast'"):
        Engine(tiny).generate(Request([PATTERN], max_tokens=2, speculate="fast"))


def other_tiny(seed: int) -> LoadedModel:
    """Another random tiny model with the tiny model's vocabulary: a draft model that guesses badly."""
    from engine.model import random_tiny_model

    model = random_tiny_model(seed=seed)
    return LoadedModel(f"random-tiny-{seed}", model, None, f"seed-{seed}", torch.device("cpu"), torch.float32)


def test_a_draft_model_that_is_the_target_guesses_every_token(tiny):
    """The target as its own draft model: every guess is what the target chooses, so every drafted token is kept,
    and the output is plain decoding's. (On all threads: the two engines then sum in the same order whatever else
    runs on the machine.)"""
    prompt = list(range(3, 40))
    _, plain = generate(tiny, "off", prompt, threads="all")
    engine, spec = generate(tiny, "draft", prompt, draft=tiny, threads="all")
    assert spec.token_ids == plain.token_ids
    assert spec.usage.drafted_tokens > 0 and spec.usage.accepted_tokens == spec.usage.drafted_tokens
    assert engine.stats()["verify_steps"] < len(spec.token_ids)


def test_auto_with_a_draft_model_leaves_the_output_unchanged(tiny):
    prompt = list(range(3, 40))
    _, plain = generate(tiny, "off", prompt)
    _, spec = generate(tiny, "auto", prompt, draft=tiny)
    assert spec.token_ids == plain.token_ids and spec.usage.drafted_tokens > 0


def test_a_draft_model_that_guesses_badly_leaves_the_output_unchanged(tiny):
    _, plain = generate(tiny, "off")
    _, spec = generate(tiny, "draft", draft=other_tiny(5))
    assert spec.token_ids == plain.token_ids and spec.usage.drafted_tokens > 0
    assert spec.usage.accepted_tokens < spec.usage.drafted_tokens


def test_sampled_speculation_with_a_draft_model_is_reproducible_by_seed(tiny):
    runs = [generate(tiny, "draft", draft=other_tiny(5), sampling=SamplingParams(temperature=0.7, seed=3))[1]
            for _ in range(2)]
    assert runs[0].token_ids == runs[1].token_ids and len(runs[0].token_ids) == 48


def test_the_draft_models_prefix_is_cached_in_its_own_pool(tiny):
    engine, _ = generate(tiny, "draft", list(range(3, 60)), draft=other_tiny(5))
    draft_stats = engine.drafter.engine.stats()
    assert draft_stats["requests"] > 1 and draft_stats["cached_tokens_total"] > 0


def test_a_draft_model_with_another_tokenizer_is_refused(tiny, models_dir):
    with pytest.raises(EngineError, match="does not share the tokenizer"):
        Engine(tiny, draft=load_model("random-tiny-chat", cache_dir=models_dir))


def test_draft_mode_without_a_draft_model_is_one_clear_error(tiny):
    with pytest.raises(EngineError, match="needs a draft model"):
        Engine(tiny).generate(Request([PATTERN], max_tokens=2, speculate="draft"))


def test_a_draft_ends_at_a_stop_token_so_the_mask_never_follows_past_it(tiny, monkeypatch):
    """Drafts of 8 given tokens (the free reply's next ones, so all kept, 9 tokens a forward) run on past the stop
    token: the draft ends at it, so the mask (a grammar is stopped there) is never asked about tokens after one, and
    the reply ends where plain decoding's does."""
    _, free = generate(tiny, "off")
    full = free.token_ids
    # a token first seen where a draft (starting at 1, 10, 19, ...) has room after it
    stop = next(full[p] for p in range(5, 40) if full.index(full[p]) == p and (p - 1) % 9 < 6)

    def given(self, tokens, room, costs, after=None):
        done = len(tokens) - len(PATTERN)
        return full[done : done + 8]

    def mask(ids: list[int]) -> torch.Tensor:
        assert stop not in ids[:-1], ids
        return torch.ones(tiny.config.vocab_size, dtype=torch.bool)

    _, plain = generate(tiny, "off", stop_token_ids=[stop])
    monkeypatch.setattr(Speculation, "propose", given)
    _, spec = generate(tiny, "lookup", stop_token_ids=[stop], logits_mask=mask)
    assert spec.token_ids == plain.token_ids and spec.token_ids[-1] == stop
    assert spec.usage.drafted_tokens > 0
