"""benchmarks.warm_start end to end on the random tiny model: three processes, disk hits, bytes per token."""

import json

from benchmarks import warm_start

PREFIX = 256  # a page multiple: the warm process's suffix starts a new page


def test_warm_start_report(tmp_path):
    out = tmp_path / "warm.json"
    assert warm_start.main(["--model", "random-tiny", "--prefix", str(PREFIX), "--repeats", "1",
                            "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    [writer], [warm], [cold] = (report["runs"][role] for role in ("writer", "warm", "cold"))
    assert writer["usage"]["cached_tokens"] == 0 and cold["usage"]["cached_tokens"] == 0
    assert warm["usage"]["disk_tokens"] == warm["usage"]["cached_tokens"] == PREFIX
    assert warm["token"] == cold["token"] and report["same_first_token"]
    formula = 2 * 2 * 16 * 2 * 4  # random-tiny: layers x kv_heads x head_dim x (k, v) x fp32
    disk = report["disk"]
    assert disk["formula_bytes_per_token"] == formula
    pages = PREFIX // 16 + 3 * warm_start.SUFFIX_TOKENS // 16  # the prefix, suffixes A (writer), B and C (warm)
    assert disk["files"] == pages and disk["tokens"] == pages * 16
    assert formula < disk["bytes_per_token"] < 1.1 * formula
    assert warm["memory_seconds"] > 0
    assert report["ratios"]["warm/cold"] == report["ttft_s"]["warm"] / report["ttft_s"]["cold"]
