"""The local backend: L1+L2 as one system message and each L3 block as one chat message, one segment per block."""

from __future__ import annotations

import threading
from typing import Any

import torch

from agentcache.backends import GenSettings, Reply
from agentcache.backends.constrain import GrammarMask, ToolCallGrammar
from agentcache.render import SYSTEM_TURN, ChatRenderer
from engine import Engine, Request, SamplingParams
from engine.model import LoadedModel
from layers import Context, Layer, ToolSpec

# the pool keeps a block's pages by its layer: the system prompt and tools longest, the repo next, a turn's least
RETENTION_OF = {Layer.L1: "pinned-soft", Layer.L2: "project", Layer.L3: "turn"}


class TensorMask:
    """The engine's `logits_mask` (the grammar's allowed next tokens as a bool tensor, sharing the array) and
    `forced_tokens` (the tokens it forces next) from one grammar mask."""

    def __init__(self, allowed: GrammarMask) -> None:
        self.allowed = allowed

    def __call__(self, generated_ids: list[int]) -> torch.Tensor:
        return torch.from_numpy(self.allowed(generated_ids))

    def forced(self, generated_ids: list[int]) -> list[int]:
        return self.allowed.forced(generated_ids)


def tensor_mask(allowed: GrammarMask) -> TensorMask:
    return TensorMask(allowed)


class LocalBackend:
    """Safe to share between agent threads: its caches are guarded by locks; the engine serializes or batches."""

    name = "local"
    layout = SYSTEM_TURN  # L1+L2 go to the engine as one system turn (recorded so inspect rebuilds the same prompt)

    def __init__(self, model: LoadedModel, engine: Engine | None = None, tool_format: str = "auto",
                 tool_choice: str = "auto", speculate: str = "off") -> None:
        """`tool_choice` as in the OpenAI API: "auto" lets the model answer in plain text, "required" makes every
        reply a tool call (the answer then comes through the `finish` tool); "first" is "auto" here, the agent
        asking for a tool call per request (GenSettings.tool_required) on a task's first turn. `speculate`: the
        engine's speculative decoding for every request (engine.speculate.MODES)."""
        self.model, self.speculate = model, speculate
        self.allow_answer = tool_choice != "required"
        self.engine = engine or Engine(model)
        self.renderer = ChatRenderer(model.tokenizer, tool_format)
        self.tool_format = self.renderer.tool_format
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

    def prefix_expired(self) -> bool:
        return False  # the engine's pool evicts by need, not by time

    def count_tokens(self, context: Context) -> int:
        """Prompt tokens of a context."""
        return sum(self.segment_counts(context))

    def segment_counts(self, context: Context) -> list[int]:
        """Tokens per segment of the prompt the engine would get (one per block, then the generation prompt), as
        the engine tokenizes them; each message's count is computed once per backend."""
        segments = self.renderer.block_segments(context)
        with self._lock:
            for segment in segments:
                if segment not in self._segment_tokens:
                    self._segment_tokens[segment] = len(self.engine.tokenize([segment])[0])
            return [self._segment_tokens[segment] for segment in segments]

    def grammar(self, tools: list[ToolSpec], enabled: set[str], tool_required: bool = False,
                answer_line: bool = False) -> ToolCallGrammar:
        """The reply grammar: a call to an enabled tool or, where allowed, an answer (`answer_line`: of one short
        line); with no tool enabled (a summary, or a read-only run's last reply), an answer only."""
        allow_answer = not enabled or (self.allow_answer and not tool_required)
        key = (tuple(sorted(enabled)), allow_answer, answer_line)
        with self._lock:
            if key not in self._grammars:
                chosen = [t for t in tools if t.name in enabled]
                self._grammars[key] = ToolCallGrammar(self.model.tokenizer, chosen, allow_answer=allow_answer,
                                                      tool_format=self.tool_format, answer_line=answer_line)
            return self._grammars[key]

    def parse(self, text: str, tools: list[ToolSpec], enabled: set[str]) -> Any:
        grammar = self.grammar(tools, enabled)
        with self._lock:
            return grammar.parse(text)

    def complete(self, context: Context, tools: list[ToolSpec], enabled: set[str], settings: GenSettings) -> Reply:
        segments = self.renderer.block_segments(context)
        grammar = self.grammar(tools, enabled, settings.tool_required, settings.answer_line)
        with self._lock:
            mask = tensor_mask(grammar.new_mask(self.model.config.vocab_size))
        sampling = SamplingParams(settings.temperature, settings.top_p, settings.seed)
        retention = [RETENTION_OF[block.layer] for block in context]
        retention += ["turn"] * (len(segments) - len(retention))  # the generation prompt
        request = Request(segments, max_tokens=settings.max_tokens, sampling=sampling, salt=settings.salt,
                          logits_mask=mask, forced_tokens=mask.forced, retention=retention,
                          speculate=self.speculate)
        result = self.engine.generate(request)
        prefix = sum(result.trace.segment_tokens[: len(context.prefix)])
        return Reply(result.text, result.finish_reason, result.usage.to_dict(), result.timings.to_dict(),
                     result.trace.to_dict(), prefix)

