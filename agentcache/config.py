"""Run settings: defaults, overridden by the repo's `agentcache.yaml` (its widening settings only once the user
trusts the file: agentcache.trust), overridden by command-line flags, then checked by one function whatever their
source."""

from __future__ import annotations

import math
import os
import shlex
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import yaml

from agentcache.errors import AgentcacheError
from agentcache.render import TOOL_FORMATS
from agentcache.tools.toolbox import FUNCTIONS, MODES, mode_tools
from agentcache.trust import is_trusted, widening_settings
from layers.errors import RepoError
from layers.repomap import MAP_TOKENS
from layers.repo import read_capped

CONFIG_FILE = "agentcache.yaml"
MAX_CONFIG_BYTES = 64 * 1024
MAX_YAML_DEPTH = 8  # the file is a flat mapping; `tools:` is its one list
DEFAULT_MODEL = "qwen2.5-coder-1.5b"  # the registry's default (engine.registry.DEFAULT_MODEL); docs/models.md says why
MODEL_ENV = "AGENTCACHE_MODEL"  # overrides the default model, as agentcache.yaml's `model:` and --model do
BACKENDS = ("local", "openai", "anthropic")
CACHE_TTLS = ("5m", "1h", "auto")
TOOL_CHOICES = ("auto", "required", "first")
DTYPES = ("auto", "float32", "bfloat16", "float16")  # engine.hardware.DTYPE_CHOICES, without importing torch
QUANTS = ("auto", "none", "int8", "int4", "gguf")  # engine.quant.QUANT_CHOICES, without importing torch
SPECULATE = ("off", "lookup", "draft", "auto")  # engine.speculate.MODES
ROUTINGS = ("session", "prefix", "none")  # what an OpenAI-compatible request's routing key is (docs/fleet.md)


ROLE_OF_MODE = {"read-only": "ask", "edit": "coder", "full": "coder"}  # role auto: answering from evidence when
# nothing may change, implementing and testing when edits may


def default_model() -> str:
    return os.environ.get(MODEL_ENV) or DEFAULT_MODEL


@dataclass(slots=True)
class RunConfig:
    model: str = field(default_factory=default_model)
    role: str = "auto"  # a file in prompts/roles/, or auto: the mode's (ROLE_OF_MODE: ask in read-only, else coder)
    max_turns: int = 8
    max_tokens: int = 512  # per reply: room for an edit_file call with its old and new text
    token_budget: int = 200_000
    mode: str = "edit"  # read-only, edit (writes inside the repo) or full (edit and the shell); see MODES
    tools: list[str] = field(default_factory=list)  # empty: every tool the mode allows
    test_command: str = ""  # the project's test command: the run_tests tool runs exactly it, in edit and full modes
    temperature: float = 0.0
    seed: int = 0  # with temperature > 0, the sampler's seed (each reply's: this and its turn), so a run repeats
    retries: int = 2
    backend: str = "local"  # local, openai or anthropic
    base_url: str = ""  # the openai backend's server, e.g. http://127.0.0.1:8000/v1
    cache_ttl: str = "5m"  # the anthropic backend's L1/L2 cache TTL: 5m, 1h, or auto (per request, the cheaper for
    # the expected gap to the next one: backends/anthropic.py break_even_ttl)
    salt: str = ""  # cache salt: requests with different salts never share KV pages
    kv_capacity_mb: int = 1024  # local engine KV pool size
    disk_cache: bool = True  # keep full KV pages on disk so the next run starts warm
    tool_choice: str = "first"  # local backend: first (a task's first reply is a tool call, later ones may answer),
    # auto (a plain answer allowed) or required (every reply a tool call)
    tool_format: str = "auto"  # local backend: native (the chat template's tool calls), json, or auto (native if any)
    dtype: str = "auto"  # local backend: auto (the fastest for the hardware: engine.hardware), or a dtype's name
    quant: str = "auto"  # local backend: weight-only quantization: auto (the model file's GGUF blocks where their
    # kernels run, else int8 on a CPU with the int8 kernel, else none), none, int8, int4 or gguf (engine.quant)
    compact_at: int = 0  # also compact L3 past this many prompt tokens when compacting pays for itself (agent.py
    # entries_to_keep); 0: only when the next request would not fit the model's window
    map_tokens: int = MAP_TOKENS  # the repo map's budget in L2 (layers.repomap; 0: no map)
    speculate: str = "auto"  # local backend: speculative decoding (engine.speculate): auto (drafts sized by their
    # measured cost and acceptance; the draft model's too where one is loaded), lookup (always draft what prompt
    # lookup finds), draft (the draft model guesses) or off
    draft_model: str = ""  # local backend: a smaller model with the model's tokenizer that guesses tokens for
    # speculative decoding; empty: the registry's pair for the model (the 0.5B for the 1.5B) under speculate draft,
    # none otherwise
    lookup: bool = True  # a note after the task with where the names it mentions are defined (agent.run_start)
    samples: int = 1  # best-of-n: candidates per task run at once on the shared prefix (agentcache.samples)
    routing: str = "session"  # openai backend: the routing key each request carries: session (the session lineage:
    # forks and resumes keep their parent's), prefix (the L1+L2 context id) or none


class BoundedLoader(yaml.SafeLoader):
    """YAML's safe loader without aliases (no billion laughs) and with nesting cut at MAX_YAML_DEPTH."""

    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        mark = self.peek_event().start_mark
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed", mark)
        if self.depth >= MAX_YAML_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_YAML_DEPTH} levels", mark)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def parse_yaml(text: str) -> Any:
    loader = BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_config(repo: Path) -> tuple[RunConfig, list[str]]:
    """The repo's settings over the defaults, and the widening settings ignored because the user has not trusted
    the file (`agentcache trust`)."""
    if not os.path.lexists(repo / CONFIG_FILE):
        return RunConfig(), []
    try:
        raw = read_capped(repo, CONFIG_FILE, MAX_CONFIG_BYTES)
    except RepoError as exc:
        raise AgentcacheError(str(exc).replace(f"cannot open {CONFIG_FILE}", f"{CONFIG_FILE}: cannot open")) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise AgentcacheError(f"{CONFIG_FILE}: larger than {MAX_CONFIG_BYTES // 1024} KiB")
    try:
        data = parse_yaml(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise AgentcacheError(f"{CONFIG_FILE}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                              f"{exc.start})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise AgentcacheError(f"{CONFIG_FILE}{where}: malformed YAML ({getattr(exc, 'problem', exc)})") from None
    except RecursionError:
        raise AgentcacheError(f"{CONFIG_FILE}: nested too deep") from None
    data = data or {}
    if not isinstance(data, dict):
        raise AgentcacheError(f"{CONFIG_FILE}: expected a mapping of settings")
    ignored = [] if is_trusted((repo / CONFIG_FILE).resolve(), raw) else widening_settings(data)
    return config_from({k: v for k, v in data.items() if k not in ignored}), ignored


def ignored_line(ignored: list[str]) -> str:
    """The warning a run prints for the settings it ignored from an untrusted agentcache.yaml."""
    return (f"warning: {CONFIG_FILE} is not trusted, so its {', '.join(ignored)} setting"
            f"{'s were' if len(ignored) > 1 else ' was'} ignored; `agentcache trust` honours the file as it is now")


def config_from(data: Any) -> RunConfig:
    """Settings from the YAML mapping, each of its field's type; ranges are check_config's."""
    if not isinstance(data, dict):
        raise AgentcacheError(f"{CONFIG_FILE}: expected a mapping of settings")
    config = RunConfig()
    known = {f.name: f for f in fields(RunConfig)}
    for key, value in shell_as_mode(data, CONFIG_FILE).items():
        if key not in known:
            raise AgentcacheError(f"{CONFIG_FILE}: unknown setting '{key}' (known: {', '.join(known)})")
        expected = type(getattr(config, key))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise AgentcacheError(f"{CONFIG_FILE}: '{key}' must be {expected.__name__}, got {type(value).__name__}")
        setattr(config, key, value)
    return config


def shell_as_mode(data: dict[str, Any], source: str) -> dict[str, Any]:
    """`data` with `allow_shell`, the older spelling of `mode: full`, turned into `mode`; both disagreeing is
    refused rather than one silently winning."""
    if "allow_shell" not in data:
        return data
    data = dict(data)
    shell = data.pop("allow_shell")
    if not isinstance(shell, bool):
        raise AgentcacheError(f"{source}: 'allow_shell' must be bool, got {type(shell).__name__}")
    if "mode" in data and shell != (data["mode"] == "full"):
        raise AgentcacheError(f"{source}: 'allow_shell: {str(shell).lower()}' disagrees with 'mode: {data['mode']}' "
                              f"(allow_shell: true means mode: full); keep only 'mode'")
    if shell:
        data["mode"] = "full"
    return data


def _at_least(low: int) -> tuple[str, Callable[[Any], bool]]:
    return f"at least {low}", lambda value: value >= low


def _one_of(choices: tuple[str, ...]) -> tuple[str, Callable[[Any], bool]]:
    return f"one of {', '.join(choices)}", lambda value: value in choices


def memory_mb() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") >> 20
    except (ValueError, OSError, AttributeError):
        return 1 << 20  # a platform without sysconf: 1 TB


MEMORY_MB = memory_mb()


def _splits(command: str) -> bool:
    try:
        shlex.split(command)
    except ValueError:
        return False
    return True
NON_EMPTY = ("a non-empty string", lambda value: value.strip() != "")
RULES: dict[str, tuple[str, Callable[[Any], bool]]] = {  # what a setting must be, in words, and the test
    "model": NON_EMPTY,
    "role": NON_EMPTY,
    "max_turns": _at_least(1),
    "max_tokens": _at_least(1),
    "token_budget": _at_least(1),
    "temperature": ("between 0 and 2", lambda value: math.isfinite(value) and 0 <= value <= 2),
    "seed": ("between 0 and 2**31 - 1", lambda value: 0 <= value < 2**31),
    "retries": _at_least(0),
    "backend": _one_of(BACKENDS),
    "mode": _one_of(tuple(MODES)),
    "cache_ttl": _one_of(CACHE_TTLS),
    "kv_capacity_mb": (f"between 1 and this machine's memory ({MEMORY_MB} MB)", lambda value: 1 <= value <= MEMORY_MB),
    "tool_format": _one_of(TOOL_FORMATS),
    "tool_choice": _one_of(TOOL_CHOICES),
    "dtype": _one_of(DTYPES),
    "quant": _one_of(QUANTS),
    "speculate": _one_of(SPECULATE),
    "routing": _one_of(ROUTINGS),
    "compact_at": _at_least(0),
    "map_tokens": _at_least(0),
    "samples": ("between 1 and 16", lambda value: 1 <= value <= 16),
    "test_command": ("a command line with balanced quotes (run without a shell)", lambda value: _splits(value)),
}


def role_of(config: RunConfig) -> str:
    """The role a run's L1 is built for: the configured one, or under `auto` the mode's."""
    return ROLE_OF_MODE[config.mode] if config.role == "auto" else config.role


def check_text(name: str, value: str) -> str:
    """`value` if it can be sent as UTF-8; a command-line argument with undecodable bytes cannot."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise AgentcacheError(f"{name} is not valid UTF-8 text (undecodable byte at character {exc.start})") from None
    return value


def check_config(config: RunConfig) -> RunConfig:
    """The merged settings, refused with one message per setting whether it came from agentcache.yaml or a flag."""
    for item in fields(RunConfig):
        value = getattr(config, item.name)
        if isinstance(value, str):
            check_text(item.name, value)
        what, test = RULES.get(item.name, ("", lambda _value: True))
        if not test(value):
            raise AgentcacheError(f"{item.name} must be {what}, got {value!r}")
    known = sorted(FUNCTIONS)
    if not all(isinstance(name, str) and name in known for name in config.tools):
        raise AgentcacheError(f"tools must be a list of tool names from {', '.join(known)}, got {config.tools!r}")
    mode_tools(config.mode, config.tools, bool(config.test_command))
    return config
