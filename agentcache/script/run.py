"""Runs a checked script: every agent a thread on one shared backend, forks as copies of a parent's context."""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from agentcache import PROMPTS_DIR
from agentcache.agent import Agent, Outcome
from agentcache.backends import Backend, GenSettings, Reply
from agentcache.config import RunConfig
from agentcache.errors import AgentcacheError
from agentcache.records import USAGE_FIELDS, AgentStart, Request, Usage, parse_record
from agentcache.script.format import LIMIT_KEYS, AgentSpec, Launch, Script, fill_answers
from agentcache.session import Session
from layers import Context, LayersError, ToolRegistry, ToolSpec


@dataclass(slots=True)
class AgentState:
    """What the live view shows for one agent; updated by the agent's thread."""

    name: str
    role: str
    parent: str | None
    state: str = "waiting"  # waiting, running, done
    session_id: str = ""
    turns: int = 0
    outcome: str | None = None
    answer: str | None = None
    error: str | None = None
    usage: dict[str, int] = field(default_factory=lambda: dict.fromkeys(USAGE_FIELDS, 0))


OnEvent = Callable[[AgentState, dict[str, Any] | None], None]


class IssueOrder:
    """The shared backend, with each request numbered in the order agents send it (`trace.script_seq`)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.name, self.tool_format, self.layout = backend.name, backend.tool_format, backend.layout
        self._next = 0
        self._lock = threading.Lock()

    @property
    def model_name(self) -> str:
        return self.backend.model_name

    @property
    def fingerprint(self) -> str | None:
        return self.backend.fingerprint

    def segment_counts(self, context: Context) -> list[int] | None:
        return self.backend.segment_counts(context)

    def prefix_expired(self) -> bool:
        return self.backend.prefix_expired()

    def complete(self, context: Context, tools: list[ToolSpec], enabled: set[str], settings: GenSettings) -> Reply:
        with self._lock:
            seq, self._next = self._next, self._next + 1
        reply = self.backend.complete(context, tools, enabled, settings)
        reply.trace["script_seq"] = seq
        return reply

    def parse(self, text: str, tools: list[ToolSpec], enabled: set[str]) -> Any:
        return self.backend.parse(text, tools, enabled)

    def count_tokens(self, context: Context) -> int:
        return self.backend.count_tokens(context)

    def window(self) -> int:
        return self.backend.window()


class ScriptLimits:
    """Turns and tokens spent by all agents together, against the script's limits."""

    def __init__(self, max_turns: int | None, token_budget: int | None) -> None:
        self.max_turns, self.token_budget = max_turns, token_budget
        self.turns = self.tokens = 0
        self._lock = threading.Lock()

    def check(self) -> str | None:
        """The agent loop's check before a turn: "script_limit" once the script is spent, else the turn is taken."""
        with self._lock:
            over_tokens = self.token_budget is not None and self.tokens >= self.token_budget
            if over_tokens or (self.max_turns is not None and self.turns >= self.max_turns):
                return "script_limit"
            self.turns += 1
            return None

    def charge(self, usage: Usage) -> None:
        with self._lock:
            self.tokens += usage.computed_tokens + usage.completion_tokens


class ScriptRun:
    def __init__(self, script: Script, root: Path, backend: Backend, base: RunConfig, on_event: OnEvent,
                 registry: ToolRegistry | None = None) -> None:
        """`registry`: the tool specs every agent shares (loaded once here when None)."""
        self.script, self.root, self.base, self.on_event = script, root, base, on_event
        self.registry = registry if registry is not None else ToolRegistry.from_dir(PROMPTS_DIR / "tools")
        self.backend = IssueOrder(backend)
        self.limits = ScriptLimits(script.max_turns, script.token_budget)
        self.states = {name: AgentState(name, spec.role, spec.parent) for name, spec in script.agents.items()}
        self.agents: dict[str, Agent] = {}
        self.sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def run(self) -> None:
        for step in self.script.steps:
            if len(step) == 1:
                self._run_agent(step[0])
                continue
            with ThreadPoolExecutor(max_workers=len(step)) as pool:
                for future in [pool.submit(self._run_agent, launch) for launch in step]:
                    future.result()

    def answers(self) -> dict[str, str]:
        return {name: s.answer if s.answer is not None else f"(no answer: {s.outcome or 'not run'})"
                for name, s in self.states.items()}

    def _config(self, spec: AgentSpec) -> RunConfig:
        chosen = {key: getattr(spec, key) for key in ("tools", "mode", *LIMIT_KEYS)}
        return dataclasses.replace(self.base, role=spec.role, **{k: v for k, v in chosen.items() if v is not None})

    def _run_agent(self, launch: Launch) -> None:
        spec, state = self.script.agents[launch.agent], self.states[launch.agent]
        session = Session.create(self.root)
        parent = self.agents.get(spec.parent) if spec.parent else None
        config = self._config(spec)
        with self._lock:
            state.state, state.session_id = "running", session.id
            self.sessions[spec.name] = session
        self.on_event(state, None)
        try:
            if spec.parent and parent is None:
                raise AgentcacheError(f"cannot fork '{spec.parent}': it stopped with an error before it started")
            agent = Agent(self.root, self.backend, config, session, on_turn=lambda r: self._turn(state, r),
                          context=parent.context if parent else None, registry=self.registry,
                          lineage=parent.lineage if parent else None)
            self.agents[spec.name] = agent
            session.append(self._agent_record(spec, agent, parent))
            outcome = agent.run(fill_answers(launch.task, self.answers()), check=self.limits.check)
        except (AgentcacheError, LayersError, _engine_error()) as exc:
            outcome = Outcome("error", None, state.turns)
            state.error = " ".join(str(exc).split())
        with self._lock:
            state.state, state.outcome, state.answer = "done", outcome.reason, outcome.answer
        self.on_event(state, None)

    def _agent_record(self, spec: AgentSpec, agent: Agent, parent: Agent | None) -> dict[str, Any]:
        """The session's first record; a fork's inherited L3 is in `appended`, so resume and inspect see it."""
        inherited = agent.context.l3 if parent else ()
        return AgentStart(self.script.name, spec.name, spec.role,
                          {"agent": spec.parent, "session_id": parent.session.id} if parent else None,
                          agent.context.context_id,
                          [{"kind": b.kind, "key": b.key, "text": b.text} for b in inherited]).to_json()

    def _turn(self, state: AgentState, record: dict[str, Any]) -> None:
        """The agent's on_turn: a request charges the script's budget and its agent's row; other records pass."""
        request = parse_record(record)
        if not isinstance(request, Request):
            return
        self.limits.charge(request.usage)
        with self._lock:
            state.turns = request.turn
            for name in USAGE_FIELDS:
                state.usage[name] += getattr(request.usage, name)
        self.on_event(state, record)


def _engine_error() -> type[Exception]:
    from engine import EngineError

    return EngineError

