"""benchmarks.fanout end to end on the random tiny model: JSON shape, prefill tokens per mode, fixed decode."""

from __future__ import annotations

import json

from benchmarks import fanout

PREFIX, AGENTS, OUTPUT, PAGE = 200, 8, 6, 16


def test_fanout_report(tmp_path) -> None:
    path = tmp_path / "fanout.json"
    argv = ["--model", "random-tiny", "--prefix", str(PREFIX), "--agents", str(AGENTS), "--output", str(OUTPUT),
            "--capacity-mb", "8", "--json", str(path)]
    assert fanout.main(argv) == 0
    report = json.loads(path.read_text())
    assert set(report) == {"model", "modes", "ratios", "targets_met", "greedy_outputs_equal_to_a", "settings", "notes"}
    suffixes = report["settings"]["suffix_tokens"]
    assert len(suffixes) == AGENTS and len(set(suffixes)) > 1
    prompts = [PREFIX + s for s in suffixes]
    shared = PREFIX // PAGE * PAGE  # full pages of the prefix, the most any later agent can reuse
    a, b, c = (report["modes"][m] for m in fanout.MODES)
    assert a["prefill_computed_tokens"] == sum(prompts) and a["cached_tokens"] == 0
    reused = sum(p - shared for p in prompts[1:]) + prompts[0]
    assert b["prefill_computed_tokens"] == c["prefill_computed_tokens"] == reused
    for mode in (a, b, c):
        assert mode["completion_tokens"] == AGENTS * OUTPUT  # EOS is masked out, every agent decodes OUTPUT
        assert mode["prompt_tokens"] == sum(prompts)
    assert report["greedy_outputs_equal_to_a"] == {"b_sequential_cache": AGENTS, "c_concurrent_batched": AGENTS}
    assert report["ratios"]["c_wall/a_wall"] == round(c["wall_s"] / a["wall_s"], 3)
