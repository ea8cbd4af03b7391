"""benchmarks.prefix_reuse end to end on the random tiny model: JSON shape, cached tokens, ratios, argmax."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import prefix_reuse
from engine import load_model

PAGE_SIZE = 16  # the engine page size the benchmark documents
SIZES = (72, 136)  # not page multiples, so the warm hit must round down
SUFFIX = 16
METHODS = {"plain", "hand_cache", "transformers_cb", "cold", "warm"}
SIZE_KEYS = {"prefix_tokens", "suffix_tokens", "ttft_s", "cached_tokens_warm"}
ONE_TOKEN_CB = "transformers_cb_one_token_warmup"
SIZE_EXTRAS = {"cached_tokens_transformers_cb", "engine_ttft_s", "ratios", "argmax_match", "notes", ONE_TOKEN_CB}
RATIOS = {"plain/warm": ("plain", "warm"), "warm/hand_cache": ("warm", "hand_cache"),
          "cold/plain": ("cold", "plain"), "transformers_cb/warm": ("transformers_cb", "warm")}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    path = tmp_path_factory.mktemp("prefix_reuse") / "out.json"
    argv = ["--model", "random-tiny", "--sizes", ",".join(map(str, SIZES)), "--suffix", str(SUFFIX),
            "--repeats", "1", "--capacity-mb", "8", "--json", str(path)]
    assert prefix_reuse.main(argv) == 0
    return json.loads(path.read_text())


def test_json_has_the_documented_structure(report: dict) -> None:
    assert set(report) == {"model", "sizes", "settings", "notes"}
    assert report["model"] == "random-tiny"
    assert [s["prefix_tokens"] for s in report["sizes"]] == list(SIZES)
    for size in report["sizes"]:
        assert set(size) == SIZE_KEYS | SIZE_EXTRAS
        assert size["suffix_tokens"] == SUFFIX
        assert set(size["ttft_s"]) == METHODS
        for method, seconds in size["ttft_s"].items():
            if seconds is None:
                assert method == "transformers_cb" and size["notes"]["transformers_cb"]
            else:
                assert isinstance(seconds, float) and 0 < seconds < 60
        assert isinstance(size["cached_tokens_warm"], int)


def test_warm_hit_is_the_prefix_rounded_down_to_whole_pages(report: dict) -> None:
    for size in report["sizes"]:
        expected = size["prefix_tokens"] - size["prefix_tokens"] % PAGE_SIZE
        assert size["cached_tokens_warm"] == expected
        if size["cached_tokens_transformers_cb"] is not None:
            assert size["cached_tokens_transformers_cb"] == expected


def test_ratios_follow_from_the_medians(report: dict) -> None:
    for size in report["sizes"]:
        assert set(size["ratios"]) == set(RATIOS)
        for name, (numerator, denominator) in RATIOS.items():
            a, b = size["ttft_s"][numerator], size["ttft_s"][denominator]
            if a is None or b is None:
                assert size["ratios"][name] is None
            else:
                assert math.isclose(size["ratios"][name], a / b, rel_tol=0.01, abs_tol=0.002)


def test_one_token_warmup_shares_no_block_and_its_ratio_follows(report: dict) -> None:
    """transformers CB warmed with a single token never registers the prefix's blocks: nothing is shared."""
    for size in report["sizes"]:
        one_token = size[ONE_TOKEN_CB]
        if one_token["ttft_s"] is None:
            assert size["notes"][ONE_TOKEN_CB]
            continue
        assert one_token["cached_tokens"] == 0
        assert one_token["argmax_match"] is True
        assert math.isclose(one_token["ratio_to_warm"], one_token["ttft_s"] / size["ttft_s"]["warm"],
                            rel_tol=0.01, abs_tol=0.002)


def test_cold_and_warm_first_tokens_match_plain(report: dict) -> None:
    for size in report["sizes"]:
        assert size["argmax_match"]["cold"] is True
        assert size["argmax_match"]["warm"] is True
        assert size["argmax_match"]["hand_cache"] is True


def test_prompts_have_exact_lengths_and_distinct_suffixes() -> None:
    prompts = prefix_reuse.make_prompts(load_model("random-tiny"), 100, 8, repeats=3)
    assert len(prompts.prefix) == 100
    suffixes = [prompts.warmup_suffix, *prompts.timed_suffixes]
    assert len(suffixes) == 4 and all(len(s) == 8 for s in suffixes)
    assert len({tuple(s) for s in suffixes}) == 4
