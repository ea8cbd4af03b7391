"""The local backend gives the pool each block's retention class by its layer: L1 pages pinned-soft, L2 project,
L3 turn (a page takes the class of the block its last token belongs to)."""

from __future__ import annotations

from pathlib import Path

from agentcache import PROMPTS_DIR
from agentcache.backends import GenSettings
from agentcache.backends.local import LocalBackend
from agentcache.cache_dir import models_dir
from agentcache.render import ChatRenderer
from engine import Engine, load_model
from engine.kv.block_manager import RETENTION
from layers import Layer, ToolRegistry, UserInput, build_prefix

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "repo"
PAGE = 16


def test_pages_are_kept_by_their_blocks_layer():
    model = load_model("random-tiny-chat", cache_dir=models_dir())
    engine = Engine(model, page_size=PAGE, capacity_bytes=64 << 20)
    backend = LocalBackend(model, engine, tool_format="json", tool_choice="auto")
    registry = ToolRegistry.from_dir(PROMPTS_DIR / "tools")
    context = build_prefix(EXAMPLE, PROMPTS_DIR, role="coder", tools=registry)
    context.append(UserInput("Where are words counted? " * 40).to_block())
    reply = backend.complete(context, list(registry), set(registry.names()), GenSettings(max_tokens=2))
    counts = reply.trace["segment_tokens"]  # tokens per block, then the generation prompt
    layers = [block.layer for block in context]
    ends = [sum(counts[: i + 1]) for i in range(len(counts))]
    blocks = engine.scheduler.kv.blocks
    tokens = prompt_tokens(engine, context)
    checked = set()
    for index in range(sum(counts) // PAGE):
        last = (index + 1) * PAGE - 1
        segment = next(i for i, end in enumerate(ends) if last < end)
        layer = layers[segment] if segment < len(layers) else Layer.L3
        want = {Layer.L1: "pinned-soft", Layer.L2: "project", Layer.L3: "turn"}[layer]
        chunk = tuple(tokens[index * PAGE:(index + 1) * PAGE])
        page = next(p for p in blocks.pages if p.hash != -1 and p.token_ids == chunk)
        assert RETENTION[page.retention] == want, (index, layer)
        checked.add(want)
    assert checked == {"pinned-soft", "project", "turn"}


def prompt_tokens(engine: Engine, context) -> list[int]:
    """The prompt's token ids, each segment tokenized on its own as the engine does."""
    segments = ChatRenderer(engine.model.tokenizer, tool_format="json").block_segments(context)
    return engine.tokenize(segments)[0]
