"""benchmarks.resume end to end on the embedded model: a resumed session in a new process with the disk tier
caches what the same request got in one process, none without the disk tier, and the resume check's promise for
an edited AGENTS.md matches the miss inspect finds, within a page."""

from __future__ import annotations

import json

from benchmarks import resume


def test_resume_report(tmp_path):
    path = tmp_path / "resume.json"
    assert resume.main(["--model", "smollm2-135m", "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    same, new, cold = report["same_process"], report["new_process"], report["new_process_no_disk"]
    assert same["prompt_tokens"] == new["prompt_tokens"] == cold["prompt_tokens"]  # the same request three ways
    assert report["difference_tokens"] == same["cached_tokens"] - new["cached_tokens"]
    assert report["within_one_page"] and abs(report["difference_tokens"]) <= report["page_size"]
    assert new["disk_tokens"] == new["cached_tokens"] > 0 and cold["cached_tokens"] == 0
    edited = report["edited_agents_md"]
    assert edited["ledger"] == "prefix_edit" and "AGENTS.md changed and moved" in edited["problems"][0]
    assert abs(edited["predicted_recompute_tokens"] - edited["missed_tokens"]) <= report["page_size"]
