"""Permission modes: which tools each mode lets the agent call, enforced by the reply grammar and by the ToolBox,
while L1 (and so the cached prefix) stays byte-identical across modes for one role; role auto picks the mode's."""

import pytest

from agentcache.agent import Agent
from agentcache.config import RunConfig
from agentcache.errors import AgentcacheError
from agentcache.session import Session
from layers import Layer
from tests.agentcache.conftest import random_chat_backend

READ = ["finish", "list_files", "read_file", "search"]
EXPECTED = {"read-only": READ, "edit": sorted([*READ, "edit_file", "write_file"]),
            "full": sorted([*READ, "edit_file", "write_file", "run_command"])}


@pytest.fixture(scope="module")
def backend():
    return random_chat_backend()


def agent_in(mode, repo, backend, **settings):
    config = RunConfig(model="random-tiny-chat", mode=mode, max_turns=1, max_tokens=4, **settings)
    return Agent(repo, backend, config, Session.create(repo))


def admits(backend, agent, text):
    """Whether the agent's reply grammar lets the model write `text`, fed token by token through its mask."""
    allowed = backend.grammar(agent.specs, agent.enabled).new_mask(backend.model.config.vocab_size)
    ids = backend.model.tokenizer.encode(text, add_special_tokens=False)
    return all(allowed(ids[:i])[ids[i]] for i in range(len(ids)))


@pytest.mark.parametrize("mode", list(EXPECTED))
def test_each_mode_enables_its_tools_and_the_request_record_says_so(mode, repo, backend):
    agent = agent_in(mode, repo, backend)
    assert sorted(agent.enabled) == sorted(agent.toolbox.names()) == EXPECTED[mode]
    agent.run_start("Look around.")
    agent.step(1)
    request = [r for r in agent.session.records() if r["type"] == "request"][-1]
    assert request["enabled_tools"] == EXPECTED[mode]


def test_the_toolbox_refuses_what_the_mode_masks(repo, backend):
    reader = agent_in("read-only", repo, backend)
    for name, args in [("write_file", {"path": "new.txt", "content": "x"}),
                       ("edit_file", {"path": "README.md", "old": "textstats", "new": "changed"})]:
        outcome = reader.toolbox.run(name, args)
        assert outcome.is_error and "disabled" in outcome.output
    assert not (repo / "new.txt").exists() and (repo / "README.md").read_text().startswith("# textstats")
    editor = agent_in("edit", repo, backend)
    assert not editor.toolbox.run("write_file", {"path": "new.txt", "content": "x"}).is_error
    assert (repo / "new.txt").read_text() == "x"
    refused = editor.toolbox.run("run_command", {"command": "touch ran.txt"})
    assert refused.is_error and "--mode full" in refused.output and not (repo / "ran.txt").exists()
    full = agent_in("full", repo, backend)
    assert not full.toolbox.run("run_command", {"command": "touch ran.txt"}).is_error
    assert (repo / "ran.txt").exists()


def test_tools_narrow_a_mode_but_never_widen_it(repo, backend):
    assert sorted(agent_in("edit", repo, backend, tools=["read_file", "edit_file"]).enabled) == \
        ["edit_file", "read_file"]
    with pytest.raises(AgentcacheError, match="mode read-only does not allow write_file"):
        agent_in("read-only", repo, backend, tools=["read_file", "write_file"])


def test_l1_and_its_hash_are_identical_across_modes_while_the_grammar_masks_differ(repo, backend):
    agents = {mode: agent_in(mode, repo, backend, role="coder") for mode in EXPECTED}
    l1 = {mode: [b for b in agent.context if b.layer == Layer.L1] for mode, agent in agents.items()}
    segments = {mode: backend.renderer.block_segments(blocks) for mode, blocks in l1.items()}
    hashes = {mode: agent.context.layer_hashes()["L1"] for mode, agent in agents.items()}
    assert l1["read-only"] and len(set(hashes.values())) == 1
    assert segments["read-only"] == segments["edit"] == segments["full"]
    assert [b.text for b in l1["read-only"]] == [b.text for b in l1["edit"]] == [b.text for b in l1["full"]]
    assert len({agent.context.context_id for agent in agents.values()}) == 1  # the same cached prefix
    write, shell, read = '{"name": "write_file', '{"name": "run_command', '{"name": "read_file'  # open: the
    # grammar takes the closing quote only as part of its separator token
    assert [admits(backend, agents[m], write) for m in EXPECTED] == [False, True, True]
    assert [admits(backend, agents[m], shell) for m in EXPECTED] == [False, False, True]
    assert [admits(backend, agents[m], read) for m in EXPECTED] == [True, True, True]


def test_role_auto_gives_read_only_the_ask_role_and_the_others_coder(repo, backend):
    agents = {mode: agent_in(mode, repo, backend) for mode in EXPECTED}
    roles = {mode: next(b.key for b in agent.context if b.kind == "role") for mode, agent in agents.items()}
    assert roles == {"read-only": "roles/ask.md", "edit": "roles/coder.md", "full": "roles/coder.md"}
    hashes = {mode: agent.context.layer_hashes()["L1"] for mode, agent in agents.items()}
    assert hashes["edit"] == hashes["full"] != hashes["read-only"]
    again = agent_in("read-only", repo, backend)
    assert again.context.layer_hashes()["L1"] == hashes["read-only"]  # one role, one byte-stable L1
