"""A local fleet: vLLM replicas, each pinned to its own CPU core, behind vllm-router; every process it starts is
written to a PID file in the fleet's state folder, and `down` stops exactly those (checking each PID is still the
process it started)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from agentcache.errors import AgentcacheError

STATE_FILE = "fleet.json"


@dataclass(slots=True)
class FleetSpec:
    vllm: Path  # the `vllm` executable of the fleet's own venv
    router: Path  # the `vllm-router` executable
    model_dir: Path  # a HF folder vLLM loads (agentcache's converted model)
    served_name: str  # the model id clients send
    dtype: str  # float32 or bfloat16
    state_dir: Path
    cores: list[int | str] = field(default_factory=lambda: [0, 1])  # per replica its cores (VLLM_CPU_OMP_THREADS_BIND:
    # 0, or "0-1" for two)
    first_port: int = 8101  # replicas on first_port, first_port + 1, ...
    router_port: int = 8100
    router_metrics_port: int = 29000  # vllm-router's default, where `fleet status --router` looks
    policy: str = "sticky_least_loaded"  # a new key to the least loaded replica, then it stays (docs/fleet.md)
    max_model_len: int | None = None  # the longest request in tokens; None: the model's own (vLLM refuses more)
    kv_blocks: int | None = None  # KV blocks per replica (vLLM's --num-gpu-blocks-override); None: 1 GiB of KV
    start_timeout_s: float = 900.0


def replica_command(spec: FleetSpec, port: int) -> list[str]:
    return [str(spec.vllm), "serve", str(spec.model_dir), "--served-model-name", spec.served_name,
            "--host", "127.0.0.1", "--port", str(port), "--enable-prefix-caching", "--enable-prompt-tokens-details",
            *(["--max-model-len", str(spec.max_model_len)] if spec.max_model_len else []), "--dtype", spec.dtype,
            "--enforce-eager",
            *(["--num-gpu-blocks-override", str(spec.kv_blocks)] if spec.kv_blocks else [])]


def router_command(spec: FleetSpec, workers: list[str], policy: str | None = None) -> list[str]:
    return [str(spec.router), "--host", "127.0.0.1", "--port", str(spec.router_port), "--worker-urls", *workers,
            "--policy", policy or spec.policy, "--prometheus-port", str(spec.router_metrics_port)]


def up(spec: FleetSpec, router: bool = True) -> dict[str, object]:
    """Start the replicas and (with `router`) the router, wait until every one answers /health; the fleet's state
    (URLs, PIDs)."""
    if (spec.state_dir / STATE_FILE).is_file():
        raise AgentcacheError(f"a fleet is already up ({spec.state_dir / STATE_FILE}); stop it with `make fleet-stop`")
    for path in (spec.vllm, spec.router):
        if not path.is_file():
            raise AgentcacheError(f"{path} is missing; run: make fleet")
    spec.state_dir.mkdir(parents=True, exist_ok=True)
    replicas = {}
    for index, core in enumerate(spec.cores):
        port = spec.first_port + index
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": "1",
               "VLLM_CPU_OMP_THREADS_BIND": str(core), "OMP_NUM_THREADS": str(core_count(core))}
        replicas[f"http://127.0.0.1:{port}"] = start(replica_command(spec, port), spec.state_dir, f"replica-{port}",
                                                     env)
    state = {"replicas": replicas, "router": None, "router_url": f"http://127.0.0.1:{spec.router_port}",
             "router_metrics": f"http://127.0.0.1:{spec.router_metrics_port}", "spec": _jsonable(spec)}
    save(spec.state_dir, state)
    try:
        for url, pid in replicas.items():
            wait_healthy(url, pid, spec.start_timeout_s, spec.state_dir / f"replica-{url.rsplit(':', 1)[1]}.log")
        if router:
            state["router"] = start_router(spec, list(replicas))
    except AgentcacheError:
        down(spec.state_dir)  # nothing half-started stays behind
        raise
    save(spec.state_dir, state)
    return state


def start_router(spec: FleetSpec, workers: list[str], policy: str | None = None) -> int:
    pid = start(router_command(spec, workers, policy), spec.state_dir, "router", dict(os.environ))
    wait_healthy(f"http://127.0.0.1:{spec.router_port}", pid, 60, spec.state_dir / "router.log")
    return pid


def restart_router(state_dir: Path, policy: str) -> None:
    """The same workers behind a router with another policy (the fleet benchmark's modes)."""
    state = load(state_dir)
    spec = FleetSpec(**{**state["spec"], **{k: Path(state["spec"][k]) for k in ("vllm", "router", "model_dir",
                                                                                 "state_dir")}})
    if state["router"]:
        stop_pid(state["router"], state_dir / "router.pid")
    state["router"] = start_router(spec, list(state["replicas"]), policy)
    save(state_dir, state)


def down(state_dir: Path) -> list[int]:
    """Stop every process this fleet started (router first); the PIDs stopped."""
    stopped = []
    for pid_file in sorted(state_dir.glob("*.pid"), key=lambda p: p.name != "router.pid"):
        pid = int(pid_file.read_text().split()[0])
        if stop_pid(pid, pid_file):
            stopped.append(pid)
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    return stopped


def start(command: list[str], state_dir: Path, name: str, env: dict[str, str]) -> int:
    log = (state_dir / f"{name}.log").open("ab")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    (state_dir / f"{name}.pid").write_text(f"{proc.pid} {_start_time(proc.pid)}\n")
    return proc.pid


def stop_pid(pid: int, pid_file: Path, grace_s: float = 30.0) -> bool:
    """SIGTERM the process group `pid` leads, if `pid` is still the process the PID file recorded; SIGKILL after
    `grace_s`. True when it was running."""
    recorded = pid_file.read_text().split()[1:] if pid_file.is_file() else []
    running = _start_time(pid)
    pid_file.unlink(missing_ok=True)
    if running is None or (recorded and recorded[0] != running):
        return False  # gone already, or the PID now belongs to another process
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while _start_time(pid) == running and time.monotonic() < deadline:
        time.sleep(0.2)
    if _start_time(pid) == running:
        os.killpg(pid, signal.SIGKILL)
    return True


def wait_healthy(url: str, pid: int, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _start_time(pid) is None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.is_file() else []
            raise AgentcacheError(f"{url} exited while starting ({tail[0] if tail else 'no output'}); see {log}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass  # not listening yet
        time.sleep(1.0)
    raise AgentcacheError(f"{url} did not answer /health within {timeout_s:.0f} s; see {log}")


def save(state_dir: Path, state: dict[str, object]) -> None:
    (state_dir / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")


def load(state_dir: Path) -> dict:
    path = state_dir / STATE_FILE
    if not path.is_file():
        raise AgentcacheError(f"no fleet is up ({path} is missing); start one with `make fleet`")
    return json.loads(path.read_text())


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (field 22 of /proc/PID/stat), or None when it is not running: with
    the PID it names one process for good."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else fields[19]


def core_count(cores: int | str) -> int:
    """How many cores a binding names: 3, "0-1", "0,2-3"."""
    count = 0
    for part in str(cores).split(","):
        first, _, last = part.partition("-")
        count += int(last or first) - int(first) + 1
    return count


def _jsonable(spec: FleetSpec) -> dict[str, object]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(spec).items()}
