"""The 8-way fork on the real embedded model: the shared prefix is prefilled once, checked by counting tokens here."""

import shutil
from pathlib import Path

import pytest

from agentcache import PROMPTS_DIR
from agentcache.backends.local import LocalBackend
from agentcache.cache_dir import models_dir
from agentcache.config import RunConfig
from agentcache.render import block_message
from agentcache.script.format import parse_script
from agentcache.script.report import script_report
from agentcache.script.run import ScriptRun
from agentcache.session import Session
from engine import Engine, load_model
from layers import Block, Layer, build_prefix

ROOT = Path(__file__).resolve().parents[3]
CHILDREN = ["names", "docs", "edge", "tests", "speed", "types", "errors", "summary"]
SCRIPT = "\n".join([
    "agents:",
    "  - {name: reader, role: reviewer, tools: [read_file, finish], max_turns: 1, max_tokens: 24}",
    "steps:",
    "  - run: reader",
    "    task: Read textstats/stats.py, then summarise what it does in one sentence.",
    "  - fork: reader",
    "    max_turns: 1",
    "    max_tokens: 8",
    "    children:",
    *[f"      - {{name: {name}, instruction: 'Fork {name}: give one short remark on textstats/stats.py.'}}"
      for name in CHILDREN],
])


@pytest.fixture(scope="module")
def fanout(tmp_path_factory):
    repo = tmp_path_factory.mktemp("fork") / "repo"
    shutil.copytree(ROOT / "examples" / "repo", repo)
    model = load_model("smollm2-135m", cache_dir=models_dir())
    backend = LocalBackend(model, Engine(model, capacity_bytes=256 << 20))
    run = ScriptRun(parse_script(SCRIPT, "fanout"), repo, backend, RunConfig(), lambda state, record: None)
    run.run()
    return run, repo, model.tokenizer, script_report(run)


def entries(repo: Path, session_id: str, inherited: bool) -> list[Block]:
    """L3 blocks a session appended: with `inherited`, also those a fork copied from its parent."""
    records = Session.open(repo, session_id).records()
    return [Block(Layer.L3, e["kind"], e["key"], e["text"].encode("utf-8"))
            for r in records if inherited or r["type"] != "agent" for e in r.get("appended", [])]


def tokens(tokenizer, blocks: list[Block]) -> int:
    """Our own count: the whole conversation rendered by the chat template (L1+L2 joined into its one system
    turn) and tokenized in one piece."""
    system = "\n".join(block_message(b)["content"] for b in blocks if b.layer != Layer.L3)
    messages = [{"role": "system", "content": system}] + [block_message(b) for b in blocks if b.layer == Layer.L3]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    return len(tokenizer.encode(text, add_special_tokens=False))


def test_eight_forks_prefill_the_shared_prefix_once(fanout):
    run, repo, tokenizer, report = fanout
    prefix = list(build_prefix(repo, PROMPTS_DIR, role="reviewer"))
    parent_l3 = entries(repo, run.states["reader"].session_id, inherited=False)
    parent = tokens(tokenizer, prefix + parent_l3)
    own = [tokens(tokenizer, prefix + entries(repo, run.states[c].session_id, inherited=True)) - parent
           for c in CHILDREN]
    requests = report["totals"]["requests"]
    page = 16
    generation_prompt = len(tokenizer.encode("<|im_start|>assistant\n", add_special_tokens=False))
    bound = parent + sum(own) + requests * (page + generation_prompt + 2)
    computed = report["totals"]["computed_tokens"]
    assert computed <= bound
    assert all(0 < n < 200 for n in own)
    assert report["totals"]["no_cache_computed_tokens"] >= 8 * parent  # eight children each resend the parent
    assert computed <= 0.25 * report["totals"]["no_cache_computed_tokens"]


def test_forks_hit_at_least_95_percent_of_the_reusable_prefix(fanout):
    run, repo, tokenizer, report = fanout
    prefix = list(build_prefix(repo, PROMPTS_DIR, role="reviewer"))
    parent_l3 = entries(repo, run.states["reader"].session_id, inherited=False)
    last_request = [r for r in Session.open(repo, run.states["reader"].session_id).records() if r["type"] == "request"][-1]
    before_reply = prefix + parent_l3[: len(parent_l3) - len(last_request["appended"])]
    page = 16
    first = tokens(tokenizer, before_reply) // page * page  # the first child to run finds the parent's last prompt
    later = tokens(tokenizer, prefix + parent_l3) // page * page  # the others also find the parent's final reply
    reusable = first + 7 * later
    children = [a for a in report["agents"] if a["forked_from"] == "reader"]
    assert len(children) == 8 and all(a["requests"] == 1 for a in children)
    cached = sum(a["cached_tokens"] for a in children)
    assert cached >= 0.95 * reusable
    assert abs(sum(a["reusable_tokens"] for a in children) - reusable) <= 8 * page
    assert report["totals"]["shared_prefix_hit_rate"] >= 0.95
