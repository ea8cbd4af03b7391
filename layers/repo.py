"""Repo scanning: the safe, sorted file listing of a repo root and which files are dirty in git.

A file is listed only when both its name and what it resolves to pass: not a secret name, not ignored (git's own
rules in a git worktree, the .gitignore walk rules otherwise), not in `.git` or the harness's `.agentcache/`, a
regular file inside the root. A symlink is listed only when its target is itself a listed name, so a link to `.env`,
to a gitignored file or into `.agentcache/` is omitted whatever the link is called. A name that is not valid UTF-8
or holds a control character (a newline would forge a line of the tree) is omitted too.

Hard links (where the platform reports st_nlink and st_ino): a file with more than one link is omitted when another
path in the repo (ignored folders and `.git` included) with the same (st_dev, st_ino) is not listable, e.g.
`ln .env notes.txt` or `ln private/notes.txt notes.txt` with `private/` ignored. Not covered: a hard link to a file
outside the repo cannot be told from an ordinary file (the other name is not ours to find); the content sniffing for
private keys still applies to it.
"""
from __future__ import annotations

import os
import stat
import subprocess
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath

from layers.errors import RepoError

SECRET_NAMES = (".env*", "*.pem", "*.key", "*.p12", "*.pfx", "id_rsa*", "id_dsa*", "id_ecdsa*",
                "id_ed25519*", ".netrc", ".pgpass", ".ssh", ".aws", ".gnupg")
BINARY_SNIFF_BYTES = 8192
PRIVATE_KEY_MARKER = b"PRIVATE KEY-----"
HARNESS_DIR = ".agentcache"
GIT_ENV = {"GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C", "LANG": "C"}


def is_secret_name(name: str) -> bool:
    if any(fnmatchcase(name, pattern) for pattern in SECRET_NAMES):
        return True
    return name.startswith("id_") and ("." not in name or name.endswith(".pub"))


def is_secret_path(path: str) -> bool:
    return any(is_secret_name(part) for part in PurePosixPath(path).parts)


def is_harness_state(path: str) -> bool:
    """The harness's own directory (sessions and whatever else it keeps): never context, never a tool's to touch."""
    return HARNESS_DIR in PurePosixPath(path).parts


def is_hidden_name(path: str) -> bool:
    """A name no layer or tool result may show, whatever it resolves to: a secret, .git or harness state."""
    return is_secret_path(path) or is_harness_state(path) or ".git" in PurePosixPath(path).parts


def open_repo(path: Path | str) -> Path:
    root = Path(path)
    if not root.exists():
        raise RepoError(f"repo path does not exist: {path}")
    if not root.is_dir():
        raise RepoError(f"repo path is not a directory: {path}")
    return root.resolve()


def _git(root: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(["git", *args], cwd=root, capture_output=True,
                                env={**os.environ, **GIT_ENV}, check=False)
    except OSError:
        return None
    if result.returncode != 0:
        return None
    return result.stdout.decode("utf-8", errors="surrogateescape")


def is_git_worktree(root: Path) -> bool:
    return (_git(root, "rev-parse", "--is-inside-work-tree") or "").strip() == "true"


def _git_listing(root: Path) -> list[str]:
    out = _git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    if out is None:
        raise RepoError(f"git ls-files failed in {root.name or root}")
    return [p for p in out.split("\0") if p]


def dirty_paths(root: Path) -> set[str]:
    if not is_git_worktree(root):
        return set()
    prefix = (_git(root, "rev-parse", "--show-prefix") or "").strip()
    out = _git(root, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames", "--", ".")
    paths = {entry[3:] for entry in (out or "").split("\0") if len(entry) > 3}
    return {p.removeprefix(prefix) for p in paths if p.startswith(prefix)}


@dataclass(frozen=True, slots=True)
class IgnoreRule:
    base: str
    pattern: str
    negate: bool
    dir_only: bool
    anchored: bool

    def matches(self, path: str, is_dir: bool) -> bool:
        if self.dir_only and not is_dir:
            return False
        if self.base:
            if not path.startswith(self.base + "/"):
                return False
            path = path[len(self.base) + 1 :]
        if self.anchored:
            return fnmatchcase(path, self.pattern) or fnmatchcase(path, self.pattern + "/**")
        return fnmatchcase(path.rsplit("/", 1)[-1], self.pattern)


def parse_gitignore(text: str, base: str = "") -> list[IgnoreRule]:
    rules = []
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        line = line.removeprefix("!")
        dir_only = line.endswith("/")
        line = line.rstrip("/")
        anchored = "/" in line
        if line:
            rules.append(IgnoreRule(base, line.lstrip("/"), negate, dir_only, anchored))
    return rules


def is_ignored(rules: list[IgnoreRule], path: str, is_dir: bool) -> bool:
    ignored = False
    for rule in rules:
        if rule.matches(path, is_dir):
            ignored = not rule.negate
    return ignored


def _read_gitignore(directory: Path, base: str) -> list[IgnoreRule]:
    path = directory / ".gitignore"
    if not path.is_file() or path.is_symlink():
        return []
    return parse_gitignore(path.read_text("utf-8", errors="replace"), base)


def _walk_listing(root: Path) -> list[str]:
    found: list[str] = []
    rules = _read_gitignore(root, "")
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        base = "" if rel_dir == "." else rel_dir
        if base:
            rules = rules + _read_gitignore(Path(dirpath), base)
        join = (lambda n: f"{base}/{n}") if base else (lambda n: n)
        dirnames[:] = sorted(d for d in dirnames if d not in (".git", HARNESS_DIR)
                             and not is_ignored(rules, join(d), True))
        found.extend(join(f) for f in filenames if not is_ignored(rules, join(f), False))
    return found


def _listable_stat(root: Path, rel: str, names: set[str]) -> os.stat_result | None:
    """The stat of a regular file the name rel reaches, if it is a symlink only to one of `names`."""
    path = root / rel
    try:
        if path.is_symlink():
            target = path.resolve()
            if not target.is_relative_to(root) or target.relative_to(root).as_posix() not in names:
                return None
        info = path.stat()
    except (OSError, RuntimeError):
        return None
    return info if stat.S_ISREG(info.st_mode) else None


def hard_link_peers(root: Path, inodes: set[tuple[int, int]]) -> dict[tuple[int, int], list[str]]:
    """Every regular file under root (not through symlinks; ignored folders and .git included) by its (dev, inode)."""
    peers: dict[tuple[int, int], list[str]] = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                info = os.lstat(path)
            except OSError:
                continue
            key = (info.st_dev, info.st_ino)
            if key in inodes and stat.S_ISREG(info.st_mode):
                peers.setdefault(key, []).append(Path(path).relative_to(root).as_posix())
    return peers


def _hard_linked_to_hidden(root: Path, found: dict[str, os.stat_result], names: set[str]) -> set[str]:
    linked: dict[tuple[int, int], list[str]] = {}
    for rel, info in found.items():
        if info.st_nlink > 1:
            linked.setdefault((info.st_dev, info.st_ino), []).append(rel)
    if not linked:
        return set()
    peers = hard_link_peers(root, set(linked))
    return {rel for key, rels in linked.items() if any(p not in names for p in peers.get(key, [])) for rel in rels}


def is_showable_name(path: str) -> bool:
    """A name a layer can carry as one line of UTF-8: not undecodable bytes, no control characters."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return not any(ord(c) < 0x20 or c == "\x7f" for c in path)


def safe_paths(paths: list[str]) -> list[str]:
    return sorted({p for p in paths if is_showable_name(p) and not is_hidden_name(p)})


def list_files(root: Path) -> list[str]:
    listing = _git_listing(root) if is_git_worktree(root) else _walk_listing(root)
    names = safe_paths(listing)
    allowed = set(names)
    found = {rel: info for rel in names if (info := _listable_stat(root, rel, allowed)) is not None}
    hidden = _hard_linked_to_hidden(root, found, allowed)
    return [rel for rel in found if rel not in hidden]


def read_text(root: Path, rel: str) -> str | None:
    try:
        data = (root / rel).read_bytes()
    except OSError as exc:
        raise RepoError(f"cannot read {rel}: {exc.strerror or exc}") from None
    if b"\0" in data[:BINARY_SNIFF_BYTES] or PRIVATE_KEY_MARKER in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None
