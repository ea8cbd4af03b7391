"""`agentcache fleet status|up|down`: prefix-cache hits per replica and fleet-wide from the replicas' own counters;
a local vLLM fleet behind vllm-router, started and stopped."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional
from urllib.parse import urlparse

import typer
from rich.table import Table

from agentcache import terminal
from agentcache.fleet.status import fleet_status, router_workers

fleet_app = typer.Typer(help="Look at a fleet of replicas behind a router.", no_args_is_help=True)
ROUTER_METRICS_PORT = 29000  # vllm-router's default --prometheus-port


@fleet_app.command()
def status(
    router: Annotated[Optional[str], typer.Option(help="The router's URL: its workers are the replicas.")] = None,
    router_metrics: Annotated[Optional[str], typer.Option(
        help=f"The router's Prometheus URL (default: the router's host, port {ROUTER_METRICS_PORT}).")] = None,
    metrics: Annotated[Optional[list[str]], typer.Option(
        "--metrics", help="A replica's base URL (repeat per replica), with or instead of --router.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
) -> None:
    """Prefix-cache queries, hits and hit rate per replica and for the fleet, and the requests the router sent each.

    Example: agentcache fleet status --router http://127.0.0.1:8100
    """
    replicas = list(metrics or [])
    if router is not None:
        replicas += [url for url in router_workers(router) if url.rstrip("/") not in {r.rstrip("/") for r in replicas}]
        if router_metrics is None:
            host = urlparse(router).hostname or "127.0.0.1"
            router_metrics = f"http://{host}:{ROUTER_METRICS_PORT}"
    report = fleet_status(replicas, router_metrics)
    if as_json:
        terminal.write_json(report)
        return
    render(report)


def render(report: dict[str, Any]) -> None:
    table = Table("replica", "kind", "queries", "hits", "hit rate", "requests", "routed", title="fleet")
    rows = [*report["replicas"], {"url": "fleet", "kind": "", **report["fleet"]}]
    for i, row in enumerate(rows):
        if i == len(rows) - 1:
            table.add_section()
        rate = "-" if row["hit_rate"] is None else f"{100 * row['hit_rate']:.1f}%"
        routed = "-" if row["routed"] is None else row["routed"]
        table.add_row(*map(terminal.cell, (row["url"], row["kind"], row["queries"], row["hits"], rate,
                                           row["requests"], routed)))
    terminal.console().print(table)


State = Annotated[Path, typer.Option("--state", help="The fleet's folder: PID files, logs, fleet.json.")]


@fleet_app.command()
def up(
    vllm: Annotated[Path, typer.Option(help="The vllm executable of the fleet's venv.")] = Path(".venv-vllm/bin/vllm"),
    router: Annotated[Path, typer.Option(help="The vllm-router executable.")] = Path(".venv-router/bin/vllm-router"),
    model: Annotated[Optional[str], typer.Option(help="A registry model (default: the default model).")] = None,
    replicas: Annotated[int, typer.Option(min=1, help="Replicas, one per CPU core from core 0.")] = 2,
    policy: Annotated[str, typer.Option(help="The router's policy (consistent_hash: stateless; "
                      "sticky_least_loaded: also balanced; docs/fleet.md).")] = "sticky_least_loaded",
    max_model_len: Annotated[Optional[int], typer.Option(min=256, help="The longest request, prompt and reply, in "
                             "tokens (default: the model's own).")] = None,
    kv_blocks: Annotated[Optional[int], typer.Option(min=1, help="KV blocks per replica (vLLM's CPU blocks hold 128 "
                         "tokens; default: 1 GiB of KV).")] = None,
    state: State = Path(".fleet"),
) -> None:
    """Start vLLM replicas of a registry model (its converted folder, in the dtype this CPU runs fastest) behind
    vllm-router, and wait until all answer. Stop them with `agentcache fleet down`.

    Example: agentcache fleet up --model smollm2-135m
    """
    from agentcache.cache_dir import models_dir
    from agentcache.config import default_model
    from agentcache.fleet.launch import FleetSpec, up as start_fleet
    from engine.hardware import choose_dtype
    from engine.model import converted_model_dir

    name = model or default_model()
    dtype = choose_dtype("auto").dtype
    folder = converted_model_dir(name, dtype, models_dir())
    spec = FleetSpec(vllm.resolve(), router.resolve(), folder, name, str(dtype).removeprefix("torch."),
                     state.resolve(), cores=list(range(replicas)), policy=policy, max_model_len=max_model_len,
                     kv_blocks=kv_blocks)
    started = start_fleet(spec)
    print(terminal.inert(f"fleet up: {name} on {', '.join(started['replicas'])} behind {started['router_url']} "
                         f"({policy}); use --backend openai --base-url {started['router_url']}/v1 --model {name}"))


@fleet_app.command()
def down(state: State = Path(".fleet")) -> None:
    """Stop exactly the processes `agentcache fleet up` started (its PID files)."""
    from agentcache.fleet.launch import down as stop_fleet

    stopped = stop_fleet(state.resolve())
    print(f"fleet down: stopped {len(stopped)} of the processes it started")
