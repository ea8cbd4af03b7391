"""The local backend: each block rendered as one chat message, each message one segment, on the engine."""

from __future__ import annotations

import threading
from typing import Any

from agentcache.backends import GenSettings, Reply
from agentcache.backends.constrain import ToolCallGrammar, format_instructions
from engine import Engine, Request, SamplingParams
from engine.model import LoadedModel
from layers import Block, Context, Layer, ToolSpec, canonical_json

ROLE_OF_KIND = {"user": "user", "assistant": "assistant", "tool_call": "assistant",
                "tool_result": "tool", "tool_error": "tool"}
PROBE = [{"role": "system", "content": "a"}, {"role": "system", "content": "b"},
         {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}, {"role": "tool", "content": "e"}]


def block_message(block: Block) -> dict[str, str]:
    """A deterministic message for a block; the tools block also carries the output format."""
    if block.layer == Layer.L3:
        return {"role": ROLE_OF_KIND.get(block.kind, "user"), "content": block.text}
    if block.kind == "tools":
        return {"role": "system", "content": f"{format_instructions()}\nTools (JSON Schema):\n{block.text}"}
    if block.layer == Layer.L2 and block.kind != "tree":
        return {"role": "system", "content": f"File {block.key}:\n{block.text}"}
    if block.kind == "tree":
        return {"role": "system", "content": f"Repository files:\n{block.text}"}
    return {"role": "system", "content": block.text}


class ChatRenderer:
    """Renders messages one segment each; falls back to plain ChatML if the template is not prefix-stable.

    Thread-safe: the reused renders of the last call are read and replaced under one lock.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.template_stable = tokenizer is not None and tokenizer.chat_template is not None and self._stable()
        self._keys: list[tuple[str, str]] = []
        self._renders: list[str] = []
        self._lock = threading.Lock()

    def _render(self, messages: list[dict[str, str]], generation: bool = False) -> str:
        if not messages:
            return ""
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)

    def _stable(self) -> bool:
        try:
            renders = [self._render(PROBE[:k]) for k in range(len(PROBE) + 1)]
        except Exception:
            return False
        return all(b.startswith(a) for a, b in zip(renders, renders[1:])) and \
            self._render(PROBE, True).startswith(renders[-1])

    def segments(self, messages: list[dict[str, str]]) -> list[str]:
        if not self.template_stable:
            parts = [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
            return parts + ["<|im_start|>assistant\n"]
        out, previous = [], ""
        for current in self._prefix_renders(messages):
            out.append(current[len(previous):])
            previous = current
        out.append(self._render(messages, True)[len(previous):])
        return out

    def _prefix_renders(self, messages: list[dict[str, str]]) -> list[str]:
        """Renders of messages[:1], messages[:2], ...; the ones shared with the last call are reused."""
        keys = [(m["role"], m["content"]) for m in messages]
        with self._lock:
            return self._reuse_renders(messages, keys)

    def _reuse_renders(self, messages: list[dict[str, str]], keys: list[tuple[str, str]]) -> list[str]:
        same = 0
        while same < min(len(keys), len(self._keys)) and keys[same] == self._keys[same]:
            same += 1
        renders = self._renders[:same] + [self._render(messages[:k]) for k in range(same + 1, len(messages) + 1)]
        self._keys, self._renders = keys, renders
        return renders


class LocalBackend:
    """Safe to share between agent threads: its caches are guarded by locks; the engine serializes or batches."""

    name = "local"

    def __init__(self, model: LoadedModel, engine: Engine | None = None) -> None:
        self.model = model
        self.engine = engine or Engine(model)
        self.renderer = ChatRenderer(model.tokenizer)
        self._grammars: dict[tuple[str, ...], ToolCallGrammar] = {}
        self._segment_tokens: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def fingerprint(self) -> str:
        return self.model.fingerprint

    @property
    def model_name(self) -> str:
        return self.model.name

    def window(self) -> int:
        return self.model.max_len

    def count_tokens(self, context: Context) -> int:
        """Prompt tokens of a context; each message's count is computed once per backend."""
        segments = self.renderer.segments([block_message(b) for b in context])
        with self._lock:
            for segment in segments:
                if segment not in self._segment_tokens:
                    self._segment_tokens[segment] = len(self.engine.tokenize([segment])[0])
            return sum(self._segment_tokens[segment] for segment in segments)

    def grammar(self, tools: list[ToolSpec], enabled: set[str]) -> ToolCallGrammar:
        key = tuple(sorted(enabled))
        with self._lock:
            if key not in self._grammars:
                chosen = [t for t in tools if t.name in enabled]
                self._grammars[key] = ToolCallGrammar(self.model.tokenizer, chosen, allow_answer=True)
            return self._grammars[key]

    def parse(self, text: str, tools: list[ToolSpec], enabled: set[str]) -> Any:
        grammar = self.grammar(tools, enabled)
        with self._lock:
            return grammar.parse(text)

    def complete(self, context: Context, tools: list[ToolSpec], enabled: set[str], settings: GenSettings) -> Reply:
        segments = self.renderer.segments([block_message(b) for b in context])
        grammar = self.grammar(tools, enabled)
        with self._lock:
            mask = grammar.new_mask(self.model.config.vocab_size)
        sampling = SamplingParams(settings.temperature, settings.top_p, settings.seed)
        request = Request(segments, max_tokens=settings.max_tokens, sampling=sampling, salt=settings.salt,
                          logits_mask=mask)
        result = self.engine.generate(request)
        prefix = sum(result.trace.segment_tokens[: len(context.prefix)])
        return Reply(result.text, result.finish_reason, result.usage.to_dict(), result.timings.to_dict(),
                     result.trace.to_dict(), prefix)


def reply_text(call_or_answer: Any) -> str:
    """The canonical text of a parsed reply, as it is appended to L3."""
    if hasattr(call_or_answer, "name"):
        return canonical_json({"name": call_or_answer.name, "arguments": call_or_answer.arguments})
    return canonical_json({"answer": call_or_answer.text})
