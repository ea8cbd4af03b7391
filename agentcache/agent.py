"""The agent loop: L1+L2 assembled once, L3 appended turn by turn, tools run, every request logged."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from agentcache import PROMPTS_DIR
from agentcache.answers import not_an_answer, unseen_facts
from agentcache.backends import Backend, GenSettings, Reply
from agentcache.backends.constrain import ANSWER_PREFIX, Answer, ToolCallError, valid_text
from agentcache.config import RunConfig, role_of
from agentcache.inspect.explain import divergence, identity, prefix_change
from agentcache.records import (BlockText, Compaction, Request, ResumeCheck, Usage, UserTurn, block_refs,
                                block_texts, parse_record, requests_of)
from agentcache.render import RETRY_HINT, reply_text
from agentcache.session import Session
from agentcache.tools import ToolBox, ToolOutcome
from agentcache.tools.code_blocks import FENCED
from agentcache.tools.toolbox import CODE_BLOCK, SHELL_TOOL, WRITE_TOOLS, mode_tools
from layers import Block, Context, L2Config, Layer, ToolRegistry, ToolResult, UserInput, build_prefix, canonical_json
from layers.l3 import AssistantMessage, ToolCall
from layers.repomap import lookup

KEEP_RECENT = 2  # L3 entries kept after a compaction besides the task: the last call and its result
SUMMARY_TOKENS = 256  # the longest summary the model may write
SUMMARY_PROMPT_TOKENS = 128  # room for the instruction that asks for it
PAYBACK_TURNS = 2  # a compaction must pay for itself within this many requests (inspect counts 3: a margin for
# estimates, since a summary's length is only known once written, and for sessions that end sooner)
COMPACT_PROMPT = PROMPTS_DIR / "compact.md"
STUCK_STOP = "the run stops as stuck"
STUCK_ANSWER = "no tool is enabled for the next reply: give the answer from the results above"  # read-only
UNPLACED_CODE = ("that reply's code names no file of the repository (no path before it or on its first line, and it "
                 "defines nothing a file defines), so nothing was changed: put the file's path as a comment on the "
                 "code's first line (`# path/to/file.py`), or call edit_file with the path and the exact old text")
MAX_UNSEEN = 5  # the most unseen facts a reply sent back names
ECHO_CHARS = 8000  # the most of an invalid reply that goes back to the model (a hostile server's can be MBs)
LOOKUP_HEADER = "Where the names in the task are defined (from the repository's outline; path:line  definition):"
OnTurn = Callable[[dict[str, Any]], None]
TurnCheck = Callable[[], str | None]  # a reason to stop before the next turn, or None to go on


@dataclass(slots=True)
class Outcome:
    reason: str  # "finished", "answered", "max_turns", "token_budget", "invalid_output", "stuck"
    answer: str | None
    turns: int
    records: list[dict[str, Any]] = field(default_factory=list)


class Agent:
    def __init__(self, repo: Path, backend: Backend, config: RunConfig, session: Session,
                 on_turn: OnTurn | None = None, context: Context | None = None,
                 registry: ToolRegistry | None = None, lineage: str | None = None) -> None:
        """An agent on the L1+L2 prefix of its role or, given `context`, on a copy of its exact blocks (a fork).
        `registry`: the tool specs the run loaded once (loaded here when None). `lineage`: the session id its
        requests are routed by under `routing: session` (a fork gets its parent's; by default its own session's,
        which a resumed session keeps)."""
        self.repo, self.backend, self.config, self.session = repo, backend, config, session
        registry = registry if registry is not None else ToolRegistry.from_dir(PROMPTS_DIR / "tools")
        enabled = mode_tools(config.mode, config.tools, bool(config.test_command))  # the grammar's mask and the
        # ToolBox's refusal
        self.toolbox = ToolBox(repo, allow_shell=SHELL_TOOL in enabled, enabled=enabled, registry=registry,
                               test_command=config.test_command)
        self.specs = list(registry)
        self.enabled = set(self.toolbox.names())
        self.context = (Context(context.blocks) if context is not None
                        else build_prefix(repo, PROMPTS_DIR, role=role_of(config), tools=registry,
                                     config=L2Config(map_tokens=config.map_tokens)))
        self.on_turn = on_turn
        self.lineage = lineage or session.id
        self.spent = 0
        self.errors = 0
        self.turns_done = 0
        self.stored_blocks: set[str] = set()
        self.repeats = RepeatGuard(STUCK_ANSWER if self._read_only() else STUCK_STOP)
        self.answer_refused = False  # the last reply was sent back as not an answer: the next answers on one line
        self.answer_checked = False  # an answer was sent back as stating what nothing shown holds (once a run)
        self.must_answer = False  # a read-only run that got stuck: its next reply is the answer, no tool enabled
        self.last_turn = 0  # the run's last turn (run sets it): a read-only run's last reply is the answer
        self.resume_check: ResumeCheck | None = None

    def resume(self) -> str | None:
        """Replay the session's L3 entries, then check the rebuilt request against the session's last one and
        record what was found (`resume_check`); returns the context id the session last saw. A resumed fork keeps
        its parent's routing lineage."""
        self.lineage = self.session.lineage()
        last_id = None
        records = self.session.records()
        for record in records:
            typed = parse_record(record)
            if isinstance(typed, BlockText):
                self.stored_blocks.add(typed.hash)
            if isinstance(typed, Compaction):
                self.context = Context([*self.context.prefix, *map(_entry_block, typed.l3)])
            for entry in record.get("appended", []):  # the keys every record type may have, also unknown ones
                self.context.append(_entry_block(entry))
            last_id = record.get("context_id", last_id)
            self.turns_done = max(self.turns_done, record.get("turn", 0))
        self.resume_check = verify_resume(self, records)
        self.session.append(self.resume_check.to_json())
        return last_id

    def run_start(self, task: str) -> None:
        """The task, and after it (setting `lookup`) one note with the definitions of the names it mentions that the
        repository's outline knows: L3, so the prefix never changes with the task."""
        blocks = [UserInput(task).to_block()]
        note = lookup(self.repo, task) if self.config.lookup else None
        if note is not None:
            blocks.append(Block(Layer.L3, "user", "lookup", f"{LOOKUP_HEADER}\n{note}".encode("utf-8")))
        self._append(blocks, UserTurn().to_json())

    def run(self, task: str, check: TurnCheck | None = None) -> Outcome:
        """The loop: `check`, called before each turn, stops it with the reason it returns (a script's limits)."""
        self.run_start(task)
        first = self.turns_done + 1
        self.last_turn = first + self.config.max_turns - 1
        for turn in range(first, first + self.config.max_turns):
            reason = check() if check is not None else None
            if reason is not None:
                return Outcome(reason, None, turn - 1)
            outcome = self.step(turn)
            if outcome is not None:
                return outcome
        return Outcome("max_turns", None, self.config.max_turns)

    def step(self, turn: int) -> Outcome | None:
        self._compact_if_needed(turn)
        final = self._read_only() and (self.must_answer or turn == self.last_turn)
        enabled = set() if final else self.enabled  # a read-only run ends with an answer, not a call cut off
        answer_line, self.answer_refused = self.answer_refused or final, False
        settings = GenSettings(max_tokens=self.config.max_tokens, temperature=self.config.temperature,
                               seed=reply_seed(self.config, turn), salt=self.config.salt or None,
                               tool_required=self._look_first() and not final, answer_line=answer_line,
                               routing_key=self._routing_key())
        sent_at = time.time()
        reply = self._complete(self.context, enabled, settings)
        self.spent += reply.usage["computed_tokens"] + reply.usage["completion_tokens"]
        record = self._request_record(turn, reply, sent_at, enabled=enabled)
        try:
            parsed = self.backend.parse(reply.text, self.specs, enabled)
        except ToolCallError as exc:
            return self._invalid(turn, reply, record, str(exc))
        if isinstance(parsed, Answer) and answer_line:  # the line the grammar asked for, without its label
            parsed = Answer(parsed.text.removeprefix(ANSWER_PREFIX.strip()).strip() or parsed.text)
        applied = self.toolbox.apply_code(parsed.text) if isinstance(parsed, Answer) else []
        if any(outcome.change is not None or outcome.is_error for _, outcome in applied):  # code that restates the
            return self._code_applied(turn, parsed.text, record, applied)  # files as they are is a report
        if isinstance(parsed, Answer) and not applied and not self._read_only() and not self._changed() and \
                FENCED.search(parsed.text):  # code for no file, before any edit: an edit that went nowhere
            return self._invalid(turn, reply, record, UNPLACED_CODE)
        answer = parsed.text if isinstance(parsed, Answer) else parsed.arguments.get("answer") \
            if parsed.name == "finish" else None
        if answer is not None and not self._changed() and \
                (why := not_an_answer(answer, self.toolbox.tools, self.enabled, self.task(), self._answer_form(),
                                      [b.text for b in self.context.l3 if b.kind == "tool_error"])):
            self.answer_refused = self._read_only()
            return self._invalid(turn, reply, record, why)
        if answer is not None and not final and (why := self._unseen(answer)):
            self.answer_checked = self.answer_refused = True
            return self._invalid(turn, reply, record, why, count=False)
        if isinstance(parsed, Answer):
            self._append([AssistantMessage(reply_text(parsed, self._tool_format())).to_block()], record.to_json())
            return Outcome("answered", parsed.text, turn)
        try:
            outcome = self.repeats.checked(parsed.name, parsed.arguments,
                                           self.toolbox.run(parsed.name, parsed.arguments))
        except Stuck as stuck:
            outcome = stuck.outcome
            if self._read_only():  # a question: one more reply, which must be the answer
                self.must_answer = True
            else:
                record.stopped = "stuck"
        record.tool_call = {"name": parsed.name, "arguments": parsed.arguments}
        record.tool_result = {"output": outcome.output, "is_error": outcome.is_error}
        if outcome.change is not None:  # what a write replaced, kept in the session (never in L3): reversible
            record.tool_result["change"] = dataclasses.asdict(outcome.change)
        blocks = [ToolCall(parsed.name, parsed.arguments, parsed.raw).to_block(),
                  ToolResult(parsed.name, outcome.output, outcome.is_error).to_block()]
        self._append(blocks, record.to_json())
        if record.stopped is not None:
            return Outcome(record.stopped, None, turn)
        if outcome.finished:
            return Outcome("finished", outcome.answer, turn)
        if self.spent >= self.config.token_budget:
            return Outcome("token_budget", None, turn)
        return None

    def _code_applied(self, turn: int, text: str, record: Request, applied: list[tuple[str, ToolOutcome]]) -> \
            Outcome | None:
        """A reply whose code blocks name files, applied to them as edits: the reply stays as written, and what each
        block did comes back as the result of a `code_block` call (recorded with the changes, reversible)."""
        output = "\n".join(outcome.output for _, outcome in applied)
        record.tool_call = {"name": CODE_BLOCK, "arguments": {"paths": [path for path, _ in applied]}}
        record.tool_result = {"output": output, "is_error": all(outcome.is_error for _, outcome in applied)}
        changes = [dataclasses.asdict(outcome.change) for _, outcome in applied if outcome.change is not None]
        if changes:
            record.tool_result["changes"] = changes
        blocks = [AssistantMessage(text).to_block(),
                  ToolResult(CODE_BLOCK, output, record.tool_result["is_error"]).to_block()]
        self._append(blocks, record.to_json())
        return Outcome("token_budget", None, turn) if self.spent >= self.config.token_budget else None

    def _complete(self, context: Context, enabled: set[str], settings: GenSettings) -> Reply:
        """The backend's reply to `context`, its text valid UTF-8 (the session and the next prompt must hold it)."""
        reply = self.backend.complete(context, self.specs, enabled, settings)
        reply.text = valid_text(reply.text)
        return reply

    def _invalid(self, turn: int, reply: Reply, record: Request, message: str, count: bool = True) -> Outcome | None:
        """An unusable reply: it goes back to the model (cut to ECHO_CHARS) with what was wrong, as a retry. `count`:
        it counts toward the retries after which the run stops as invalid_output."""
        self.errors += count
        record.error = message
        echo = reply.text if len(reply.text) <= ECHO_CHARS else \
            f"{reply.text[:ECHO_CHARS]}... [{len(reply.text) - ECHO_CHARS} more characters cut]"
        blocks = [AssistantMessage(echo).to_block(),
                  ToolResult("error", f"{message}; {RETRY_HINT[self._tool_format()]}", True).to_block()]
        self._append(blocks, record.to_json())
        if self.errors > self.config.retries:
            return Outcome("invalid_output", None, turn)
        return None

    def task(self) -> str:
        """The text of the task this run was given (the first L3 entry), or "" before it starts."""
        return next((b.text for b in self.context.l3 if b.kind == "user"), "")

    def _changed(self) -> bool:
        """Whether a write tool has succeeded in this run: after one, an answer is a report of what was done, and
        advice to the user in it ("you can run the tests") is not a plan standing in for the work."""
        return any(b.kind == "tool_result" and b.key in (*WRITE_TOOLS, CODE_BLOCK) for b in self.context.l3)

    def _read_only(self) -> bool:
        """Whether no write tool is enabled: the answer is the whole result, so a reply after one sent back as not an
        answer, and the run's last, answer on one short line (in edit modes a reply may carry the code of an edit)."""
        return not self.enabled & set(WRITE_TOOLS)

    def _unseen(self, answer: str) -> str | None:
        """Once a read-only run, an answer stating a number or a name that nothing the model was shown holds (the
        task, the project context, a tool's output) goes back: small models answer from memory ("SHA-256" where the
        file says sha1). The next answer stands, whatever it says: the check asks to look, it never decides."""
        if self.answer_checked or not self._read_only():
            return None
        shown = [b.text for b in self.context.prefix if b.layer is Layer.L2]
        shown += [b.text for b in self.context.l3 if b.kind in ("user", "tool_result")]
        unseen = unseen_facts(answer, shown)
        if not unseen:
            return None
        named = ", ".join(f"`{fact}`" for fact in unseen[:MAX_UNSEEN])
        return (f"that answer states {named}, which nothing the tools returned holds: check it with a tool (search "
                f"for it or read the lines that set it), then reply with {self._answer_form()}")

    def _answer_form(self) -> str:
        """How a reason sent back asks for the answer: the one-line form the next reply's grammar holds it to."""
        if not self._read_only():
            return "the answer itself"
        if self._tool_format() == "native":
            return f'a line that starts "{ANSWER_PREFIX.strip()}" and holds only what was asked'
        return "only what was asked, on one line"

    def _look_first(self) -> bool:
        """tool_choice "first": until the task has made a tool call, the reply must be one (look, then answer)."""
        return self.config.tool_choice == "first" and not any(b.kind == "tool_call" for b in self.context.l3)

    def _routing_key(self) -> str | None:
        """The key that keeps this request on the replica that holds its prefix (config `routing`)."""
        return {"session": self.lineage, "prefix": self.context.context_id, "none": None}[self.config.routing]

    def _tool_format(self) -> str:
        return self.backend.tool_format

    def _request_record(self, turn: int, reply: Reply, sent_at: float, context: Context | None = None,
                        enabled: set[str] | None = None) -> Request:
        """The record of a request on `context` (the agent's own by default) with `enabled` tools (the agent's)."""
        enabled = self.enabled if enabled is None else enabled
        context = context if context is not None else self.context
        self._store_block_texts(context)
        return Request(
            turn=turn, usage=Usage.from_json(reply.usage), context_id=context.context_id,
            backend=self.backend.name, model=self.backend.model_name,
            fingerprint=self.backend.fingerprint, salt=self.config.salt,
            cache_ttl=reply.trace.get("cache_ttl", self.config.cache_ttl), layers=context.layer_hashes(),
            blocks=block_refs(context),
            segment_tokens=reply.trace.get("segment_tokens", []), prefix_tokens=reply.prefix_tokens,
            timings=reply.timings, trace=reply.trace, enabled_tools=sorted(enabled), reply=reply.text,
            finish_reason=reply.finish_reason, layout=self.backend.layout,
            routing_key=reply.routing_key, replica=reply.replica, at=sent_at, tool_format=self.backend.tool_format,
        )

    def _store_block_texts(self, context: Context) -> None:
        """One content-addressed `block` record per block text, the first time its hash appears in the session."""
        for block in context:
            if block.hash not in self.stored_blocks:
                self.session.append(BlockText(block.hash, block.text).to_json())
                self.stored_blocks.add(block.hash)

    def _append(self, blocks: list[Block], record: dict[str, Any]) -> None:
        self.context.extend(blocks)
        record["appended"] = [{"kind": b.kind, "key": b.key, "text": b.text} for b in blocks]
        self._record(record)

    def _compact_if_needed(self, turn: int) -> None:
        """Compact when the next request would not fit the window (always), or, when compacting pays for itself,
        past `compact_at` tokens or when the provider's cache of the prefix has expired (the whole prompt is written
        again anyway): the model summarizes the oldest L3 entries; L1 and L2 stay byte-identical."""
        limit = self.window_limit()  # first: a remote backend asks its server for the window once
        if len(self.context.l3) <= KEEP_RECENT + 1:
            return
        tokens = self.backend.count_tokens(self.context)
        if tokens > limit:
            self.compact(turn, "window", tokens, self.entries_to_keep() or 0)
            return
        if self.config.compact_at and tokens > self.config.compact_at:
            trigger = "compact_at"
        elif self.backend.prefix_expired():
            trigger = "expired"
        else:
            return
        keep = self.entries_to_keep()
        if keep is not None:
            self.compact(turn, trigger, tokens, keep)

    def window_limit(self) -> int:
        """The prompt tokens past which the next request and a summary request would not fit the window."""
        return self.backend.window() - self.config.max_tokens - SUMMARY_TOKENS - SUMMARY_PROMPT_TOKENS

    def entries_to_keep(self) -> int | None:
        """How many of the last L3 entries a compaction keeps: KEEP_RECENT if that pays for itself within
        PAYBACK_TURNS requests, else none if that does, else None (no compaction pays). Every later request is
        shorter by the removed entries less the summary; the compaction costs the summary request (its instruction
        and reply; the rest is a cache hit) and the prefill again of what comes after the task (the summary and the
        kept entries)."""
        prefix = len(self.context.prefix)
        counts = self.backend.segment_counts(self.context)
        tokens = (counts[prefix + 1:len(self.context)] if counts is not None
                  else [self.backend.count_tokens(Context([block])) for block in self.context.l3[1:]])
        for keep in (KEEP_RECENT, 0):
            kept = sum(tokens[len(tokens) - keep:]) if keep else 0
            saved = sum(tokens) - kept - SUMMARY_TOKENS
            cost = SUMMARY_PROMPT_TOKENS + 2 * SUMMARY_TOKENS + kept
            if PAYBACK_TURNS * saved > cost:
                return keep
        return None

    def compact(self, turn: int, trigger: str, tokens_before: int, keep: int) -> None:
        """The summary is a fork on the live prefix: the whole context as it is (a cache hit), the same L1 and
        tools (none enabled: the reply is plain text), then one instruction. Its text replaces the oldest L3
        entries; the task and the last `keep` entries stay. The session records the summary request and a
        compaction record with the prompt tokens before and after, for the accounting inspect shows."""
        l3 = self.context.l3
        task, old, recent = l3[0], l3[1:len(l3) - keep], l3[len(l3) - keep:]
        fork = Context([*self.context, UserInput(COMPACT_PROMPT.read_text(encoding="utf-8")).to_block()])
        settings = GenSettings(max_tokens=SUMMARY_TOKENS, temperature=self.config.temperature,
                               salt=self.config.salt or None, routing_key=self._routing_key())
        sent_at = time.time()
        reply = self._complete(fork, set(), settings)
        self.spent += reply.usage["computed_tokens"] + reply.usage["completion_tokens"]
        record = self._request_record(turn, reply, sent_at, fork)
        record.purpose = "compaction"
        try:
            summary = self.backend.parse(reply.text, self.specs, set()).text
        except ToolCallError as exc:  # the model's text is unusable: the names of the calls stand in for it
            record.error = str(exc)
            summary = f"tools called: {', '.join(b.key for b in old if b.kind == 'tool_call') or 'none'}"
        self._record(record.to_json())
        text = f"[Summary of {len(old)} earlier entries, written before they were removed]\n{summary}"
        self.context = Context([*self.context.prefix, task, UserInput(text).to_block(), *recent])
        after = self.backend.count_tokens(self.context)
        kept = self.backend.count_tokens(Context([*self.context.prefix, task]))
        l3 = [{"kind": b.kind, "key": b.key, "text": b.text} for b in self.context.l3]
        self._record(Compaction(l3, len(old), self.context.context_id, trigger, tokens_before, after, kept).to_json())

    def _record(self, record: dict[str, Any]) -> None:
        self.session.append(record)
        if self.on_turn is not None:
            self.on_turn(record)


class Stuck(Exception):
    """The same failing call a third time: the run ends with reason `stuck` (in read-only mode, the next reply is the
    answer); `outcome` is its tool result."""

    def __init__(self, outcome: ToolOutcome) -> None:
        super().__init__(outcome.output)
        self.outcome = outcome


class RepeatGuard:
    """Calls counted by (tool, canonical arguments, result): a small model that repeats a call that fails, or that
    gives the same result again, is in a loop. The second identical one says so in its result; the third raises
    Stuck. A call whose result changed (a test run after an edit, a file read after a write) is not a repeat."""

    def __init__(self, then: str = STUCK_STOP) -> None:
        """`then`: what the third repeat's result says happens next."""
        self.then = then
        self.seen: dict[tuple[str, str, bool, str], int] = {}

    def checked(self, name: str, arguments: dict[str, Any], outcome: ToolOutcome) -> ToolOutcome:
        if outcome.finished:
            return outcome
        key = (name, canonical_json(arguments), outcome.is_error, outcome.output)
        self.seen[key] = count = self.seen.get(key, 0) + 1
        if count == 1:
            return outcome
        if count == 2 and outcome.is_error:
            return ToolOutcome(f"{name}: this exact call failed before (same arguments); change the arguments or "
                               f"try another tool. Error: {outcome.output}", is_error=True)
        if count == 2:
            return ToolOutcome(f"{name}: this exact call was made before and gave the same result, shown above; "
                               "use that result, change the arguments, try another tool, or give the answer.",
                               is_error=True)
        what = "failed" if outcome.is_error else "gave the same result"
        raise Stuck(ToolOutcome(f"{name}: this exact call {what} {count} times (same arguments); {self.then}. "
                                f"Result: {outcome.output}", is_error=True))


def reply_seed(config: RunConfig, turn: int) -> int | None:
    """The sampler's seed of one reply: none when decoding greedily, else the run's seed and the turn, so a run repeats
    and no two of its replies share a draw."""
    return None if config.temperature == 0 else (config.seed << 8) + turn


def verify_resume(agent: Agent, records: list[dict[str, Any]]) -> ResumeCheck:
    """The rebuilt request against the session's last one: the same model, fingerprint and salt, the same blocks
    (hashes) in the same places, and, where the backend counts tokens per segment, the same count per block. Each
    difference is named (which block, why); the tokens of the last prompt before the first one, in whole KV pages,
    can be reused."""
    requests = [r for r in requests_of(records) if r.purpose is None]
    if not requests:
        return ResumeCheck([])
    last, backend, problems = requests[-1], agent.backend, []
    model, fingerprint = backend.model_name, backend.fingerprint
    if (last.model, last.fingerprint) != (model, fingerprint):
        problems.append(f"the model changed ({last.model} -> {model}): no page of the last request can be reused")
    if (last.salt or "") != (agent.config.salt or ""):
        problems.append("the cache salt changed: no page of the last request can be reused")
    foreign = bool(problems)  # pages of another model or salt: none can be reused, whatever the blocks
    current = block_refs(agent.context)
    texts = {b.hash: b.text for b in agent.context}
    change = prefix_change(last.blocks, current, block_texts(records), texts)
    matched = divergence(last.blocks, current)
    matched = len(last.blocks) if matched is None else matched
    if change is not None:
        problems.append(change)
    counts = backend.segment_counts(agent.context)
    if counts is not None and last.segment_tokens and last.layout == backend.layout:
        for index in range(min(matched, len(last.segment_tokens))):
            if counts[index] != last.segment_tokens[index]:
                problems.append(f"block {index + 1} ({' '.join(p for p in identity(last.blocks[index]) if p)}) is "
                                f"{counts[index]} tokens now, {last.segment_tokens[index]} in the last request (the "
                                "tokenizer or the chat template changed); the prefix diverges there")
                matched = index
                break
    if foreign:
        matched = 0
    reusable = sum(last.segment_tokens[:matched]) if last.segment_tokens else 0
    if not last.segment_tokens and matched == len(last.blocks):
        reusable = last.usage.prompt_tokens  # a remote backend records no segments: all of it, if unchanged
    reusable = min(reusable, last.usage.prompt_tokens) // last.page_size * last.page_size  # whole KV pages
    return ResumeCheck(problems, matched, len(last.blocks), reusable, last.usage.prompt_tokens - reusable)


def _entry_block(entry: dict[str, str]) -> Block:
    return Block(Layer.L3, entry["kind"], entry["key"], entry["text"].encode("utf-8"))
