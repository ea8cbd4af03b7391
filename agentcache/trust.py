"""Which repositories' own `agentcache.yaml` the user trusts: the file's sha256 by its path, kept in the user's
config dir ($AGENTCACHE_CONFIG_DIR, else the platform's); a changed file is untrusted again.

A repository is untrusted input. From a file the user has not trusted, a setting that would widen what the agent
may do or where data goes (WIDENING says which values) is ignored, and the run says so; every other setting applies.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import platformdirs

from agentcache.errors import AgentcacheError

TRUST_FILE = "trusted.json"
REMOTE_BACKENDS = ("openai", "anthropic")  # an unknown value is not ignored but refused, as from a flag


def config_dir() -> Path:
    env = os.environ.get("AGENTCACHE_CONFIG_DIR")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_config_dir("agentcache"))


def _names_files(value: Any) -> bool:
    """A model setting that is a path (a local directory of weights and code) rather than a registry name."""
    return isinstance(value, str) and ("/" in value or "\\" in value or value.startswith((".", "~")))


# setting -> whether a value of it widens permissions or sends data somewhere the user did not name
WIDENING = {
    "mode": lambda value: value == "full",
    "allow_shell": lambda value: value is True,
    "backend": lambda value: value in REMOTE_BACKENDS,
    "base_url": lambda value: bool(value),
    "model": _names_files,
    "draft_model": _names_files,  # loaded like the model: a path is code and weights from the repository
    "test_command": lambda value: bool(value),  # a command the agent may run: the user's word only
}


def widening_settings(data: dict[str, Any]) -> list[str]:
    """The settings of a parsed agentcache.yaml whose values widen (tools only narrow a mode, so never do)."""
    return [key for key, widens in WIDENING.items() if key in data and widens(data[key])]


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _store() -> Path:
    return config_dir() / TRUST_FILE


def trusted() -> dict[str, str]:
    """Config file path -> the sha256 the user trusted; an unreadable or malformed store trusts nothing."""
    try:
        data = json.loads(_store().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}


def is_trusted(path: Path, data: bytes) -> bool:
    return trusted().get(str(path)) == digest(data)


def set_trust(path: Path, data: bytes | None) -> None:
    """Record (or, with None, forget) the trust in the config file at `path`: written whole, then renamed."""
    entries = trusted()
    if data is None:
        entries.pop(str(path), None)
    else:
        entries[str(path)] = digest(data)
    store = _store()
    try:
        store.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = store.with_name(f".{TRUST_FILE}.{os.getpid()}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(entries, file, indent=1, sort_keys=True)
        os.replace(temporary, store)
    except OSError as exc:
        raise AgentcacheError(f"cannot write the trust store {store}: {exc.strerror or exc}") from None


def is_own_state(path: Path) -> bool:
    """A resolved path inside agentcache's own config or cache dir: no tool may write there, even when a repository
    holds one of them (a user running the agent on their home directory)."""
    from agentcache.cache_dir import cache_root

    for directory in (config_dir(), cache_root()):
        try:
            if path.is_relative_to(directory.resolve()):
                return True
        except (OSError, RuntimeError):
            continue
    return False
