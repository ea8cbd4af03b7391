"""What `agentcache script` shows: a live table of agents on a terminal, plain lines otherwise, and the report."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table

from agentcache.records import ratio
from agentcache.script.run import AgentState, ScriptRun
from agentcache.terminal import cell, inert
from agentcache.display import turn_line

ANSWER_PREVIEW = 200


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _state_text(state: AgentState) -> str:
    if state.state != "done":
        return state.state
    return f"{state.outcome}: {state.error}" if state.error else str(state.outcome)


class ScriptView:
    """Live rows on a terminal; one line per agent event when the output is not a terminal."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.states: list[AgentState] = []
        self._lock = threading.Lock()
        self._live = console.is_terminal

    def on_event(self, state: AgentState, record: dict[str, Any] | None) -> None:
        if self._live:
            return
        if record is None:
            line = f"[{state.name}] {_state_text(state)} (session {state.session_id})"
        else:
            line = f"[{state.name}] {turn_line(record)}"
        with self._lock:
            self.console.print(inert(line), soft_wrap=True, markup=False)

    @contextlib.contextmanager
    def showing(self, run: ScriptRun) -> Iterator[None]:
        self.states = list(run.states.values())
        if not self._live:
            yield
            return
        with Live(get_renderable=self.table, console=self.console, refresh_per_second=4, transient=False):
            yield

    def table(self) -> Table:
        table = Table(title="agents", box=box.SIMPLE_HEAD)
        for column in ("agent", "role", "from", "state", "turns", "prompt", "cached", "hit"):
            table.add_column(column, justify="right" if column in ("turns", "prompt", "cached", "hit") else "left")
        for s in self.states:  # inert Text cells: an error message is never read as rich markup
            cells = (s.name, s.role, s.parent or "", _state_text(s)[:60], str(s.turns), str(s.usage["prompt_tokens"]),
                     str(s.usage["cached_tokens"]), _percent(ratio(s.usage["cached_tokens"], s.usage["prompt_tokens"])))
            table.add_row(*map(cell, cells))
        return table


def render_report(report: dict[str, Any], console: Console) -> None:
    """Per-agent tokens and sessions, then the whole script against running it with no cache."""
    table = Table(title=cell(f"script {report['script']}"), box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0))
    columns = ("agent", "outcome", "turns", "prompt", "cached", "computed", "output", "reusable", "hit")
    for column in columns:
        table.add_column(column, justify="left" if column in ("agent", "outcome") else "right", no_wrap=True,
                         min_width=len(column))
    for a in report["agents"]:
        table.add_row(*map(cell, (a["name"], a["outcome"], a["turns"], a["prompt_tokens"], a["cached_tokens"],
                                  a["computed_tokens"], a["completion_tokens"], a["reusable_tokens"],
                                  _percent(a["hit_rate"]))))
    console.print(table)
    t = report["totals"]
    console.print(f"prefill computed           {t['computed_tokens']} tokens "
                  f"(with no cache: {t['no_cache_computed_tokens']}, {_percent(t['computed_vs_no_cache'])} of it)")
    console.print(f"hit rate (cached / prompt)  {_percent(t['hit_rate'])}")
    console.print(f"shared-prefix hit rate      {_percent(t['shared_prefix_hit_rate'])} "
                  f"({t['reusable_cached_tokens']} of {t['reusable_tokens']} reusable tokens served from cache)")
    for a in report["agents"]:
        answer = " ".join((a["answer"] or a["error"] or f"(no answer: {a['outcome']})").split())[:ANSWER_PREVIEW]
        console.print(inert(f"{a['name']} (session {a['session_id']}): {answer}"), markup=False, soft_wrap=True)
