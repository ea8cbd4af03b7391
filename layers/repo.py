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

import errno
import os
import re
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from layers.errors import RepoError

# Names (any path component, compared in lower case) that hold credentials: keys and certificates, dotenv files,
# and the common tools' credential files and folders (docs/security.md lists them).
SECRET_NAMES = (".env*", "*.pem", "*.key", "*.p12", "*.pfx", "*.jks", "*.keystore", "*.kdbx", "*.ppk", "*.gpg",
                "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*", ".netrc", "_netrc", ".pgpass", ".npmrc",
                ".pypirc", ".git-credentials", ".dockercfg", ".htpasswd", ".ssh", ".aws", ".gnupg", ".docker",
                ".kube", ".azure", "secring.*", "credentials.json", "*.tfstate")
# A private key's armor or header line in any of the usual formats: PEM and OpenSSH (`-----BEGIN ... PRIVATE
# KEY-----`), PGP (`-----BEGIN PGP PRIVATE KEY BLOCK-----`), SSH2 (`---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----`),
# PuTTY and age.
PRIVATE_KEY_ARMOR = re.compile(rb"-{4,5} ?BEGIN [A-Z0-9 ]*PRIVATE KEY[A-Z ]*-{4,5}|PuTTY-User-Key-File-\d+:"
                               rb"|AGE-SECRET-KEY-1", re.IGNORECASE)
BINARY_SNIFF_BYTES = 8192
HARNESS_DIR = ".agentcache"
MAX_DEPTH = 64  # directory levels below the root that listings descend; deeper files are not listed
MAX_DOC_BYTES = 256 * 1024  # an L2 doc or skill longer than this is cut at a line, with a marker saying so
GIT_ENV = {"GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C", "LANG": "C", "GIT_TERMINAL_PROMPT": "0"}
# What git is told on every call so that nothing in the repository's own configuration runs a command: no
# fsmonitor, no hooks, no external diff, no pager. The repository's filter and diff drivers are switched off key by
# key (git_safety_options).
GIT_SAFETY = ("--no-pager", "-c", "core.fsmonitor=false", "-c", f"core.hooksPath={os.devnull}", "-c", "diff.external=",
              "-c", "core.pager=cat")
REPO_COMMAND_KEYS = re.compile(r"(filter\..+\.(clean|smudge|process)|diff\..+\.(textconv|command)|core\.sshcommand"
                               r"|core\.askpass|credential\..*helper|core\.editor|sequence\.editor|core\.pager"
                               r"|pager\..+|core\.fsmonitor|core\.hookspath|diff\.external)", re.IGNORECASE)

REQUIRED_FILTER = re.compile(r"filter\..+\.required", re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    name = name.lower()
    if any(fnmatchcase(name, pattern) for pattern in SECRET_NAMES):
        return True
    return name.startswith("id_") and ("." not in name or name.endswith(".pub"))


def has_private_key(data: bytes) -> bool:
    return PRIVATE_KEY_ARMOR.search(data) is not None


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


def _run_git(root: Path, args: list[str]) -> subprocess.CompletedProcess[bytes] | None:
    try:
        return subprocess.run(["git", *GIT_SAFETY, *args], cwd=root, capture_output=True, stdin=subprocess.DEVNULL,
                              env={**os.environ, **GIT_ENV}, check=False)
    except OSError:
        return None


def git_safety_options(root: Path) -> list[str]:
    """`-c KEY=` for every key of the repository's own configuration (local and worktree scope, includes followed)
    that names a command git could run: filter and diff drivers, helpers, editors, pagers."""
    result = _run_git(root, ["config", "--show-scope", "--name-only", "--list"])
    if result is None or result.returncode != 0:
        return []
    options = []
    for line in result.stdout.decode("utf-8", errors="replace").splitlines():
        scope, _, key = line.partition("\t")
        if scope not in ("local", "worktree"):
            continue
        if REPO_COMMAND_KEYS.fullmatch(key):
            options += ["-c", f"{key}="]
        elif REQUIRED_FILTER.fullmatch(key):  # a required filter with its command switched off would fail git
            options += ["-c", f"{key}=false"]
    return options


def git_run(root: Path, *args: str) -> subprocess.CompletedProcess[bytes] | None:
    """git in root with nothing of the repository's own configuration able to run a command; None without git."""
    return _run_git(root, [*git_safety_options(root), *args])


def _git(root: Path, *args: str) -> str | None:
    result = git_run(root, *args)
    if result is None or result.returncode != 0:
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
    out = _git(root, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames",
               "--ignore-submodules=all", "--", ".")
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


def read_gitignore(root: Path, base: str) -> list[IgnoreRule]:
    """The rules of the regular file base/.gitignore (read once, without following a link), or none."""
    rel = f"{base}/.gitignore" if base else ".gitignore"
    try:
        data = read_capped(root, rel, MAX_DOC_BYTES)
    except RepoError:
        return []
    return parse_gitignore(data.decode("utf-8", errors="replace"), base)


def walk(root: Path) -> Iterator[tuple[str, list[str], list[str]]]:
    """os.walk from root (links not followed) as (relative dir, dirnames, filenames), stopping MAX_DEPTH levels
    down so a deep chain of folders neither recurses without bound nor builds unreadable paths."""
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        base = "" if rel_dir == "." else rel_dir
        if base.count("/") + 1 >= MAX_DEPTH:
            dirnames[:] = []
        yield base, dirnames, filenames


def _walk_listing(root: Path) -> list[str]:
    found: list[str] = []
    rules = read_gitignore(root, "")
    for base, dirnames, filenames in walk(root):
        if base:
            rules = rules + read_gitignore(root, base)
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
    for base, _, filenames in walk(root):
        for name in filenames:
            rel = f"{base}/{name}" if base else name
            try:
                info = os.lstat(root / rel)
            except OSError:
                continue
            key = (info.st_dev, info.st_ino)
            if key in inodes and stat.S_ISREG(info.st_mode):
                peers.setdefault(key, []).append(rel)
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


# C0 and C1 controls, DEL, and the bidi controls that reorder what a reader sees (a name could forge a tree line or
# show itself as another)
UNSHOWABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def is_showable_name(path: str) -> bool:
    """A name a layer can carry as one line of UTF-8: not undecodable bytes, no control characters."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return UNSHOWABLE.search(path) is None


def safe_paths(paths: list[str]) -> list[str]:
    return sorted({p for p in paths if is_showable_name(p) and not is_hidden_name(p) and p.count("/") < MAX_DEPTH})


def list_files(root: Path) -> list[str]:
    listing = _git_listing(root) if is_git_worktree(root) else _walk_listing(root)
    names = safe_paths(listing)
    allowed = set(names)
    found = {rel: info for rel in names if (info := _listable_stat(root, rel, allowed)) is not None}
    hidden = _hard_linked_to_hidden(root, found, allowed)
    return [rel for rel in found if rel not in hidden]


def open_in_root(root: Path, rel: str, flags: int = os.O_RDONLY, mode: int = 0o644, make_dirs: bool = False) -> int:
    """A descriptor of the regular file root/rel, opened from the root's own descriptor one component at a time,
    none of them followed if it is a symlink (O_NOFOLLOW): the check and the open are one operation, so a name
    swapped for a link after a caller checked it fails here instead of being followed. A FIFO or device is refused
    without blocking. `make_dirs` creates missing folders on the way (for a write); the caller closes the fd."""
    parts = PurePosixPath(rel).parts
    if not parts or any(part in ("..", "/") for part in parts):
        raise RepoError(f"cannot open {rel}: not a path inside the repository")
    nofollow = os.O_NOFOLLOW | os.O_CLOEXEC
    directory = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            if make_dirs:
                try:
                    os.mkdir(part, 0o755, dir_fd=directory)
                except FileExistsError:
                    pass
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | nofollow, dir_fd=directory)
            os.close(directory)
            directory = inner
        fd = os.open(parts[-1], flags | nofollow | os.O_NONBLOCK, mode, dir_fd=directory)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            raise RepoError(f"cannot open {rel}: a symbolic link or non-folder on its path (it may have changed since "
                            "it was checked); not followed") from None
        raise RepoError(f"cannot open {rel}: {exc.strerror or exc}") from None
    finally:
        os.close(directory)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise RepoError(f"cannot open {rel}: not a regular file")
    os.set_blocking(fd, True)
    return fd


def open_listed(root: Path, rel: str, listed: set[str]) -> int:
    """A descriptor of the listed file rel: a link is opened at the name it resolves to, which must itself be listed,
    and that name is opened without following anything (open_in_root), so a name swapped for a link to an unlisted
    file at any moment is refused, never read."""
    try:
        target = (root / rel).resolve()
    except (OSError, RuntimeError) as exc:
        raise RepoError(f"cannot resolve {rel}: {getattr(exc, 'strerror', None) or exc}") from None
    name = target.relative_to(root).as_posix() if target.is_relative_to(root) else None
    if name not in listed:
        raise RepoError(f"cannot open {rel}: it no longer resolves to a listed file")
    return open_in_root(root, name)


def read_capped(root: Path, rel: str, cap: int) -> bytes:
    """At most cap + 1 bytes of the regular file root/rel (open_in_root): one more than the cap says it is longer."""
    with os.fdopen(open_in_root(root, rel), "rb") as file:
        return file.read(cap + 1)


def capped_lines(file: BinaryIO, limit: int) -> Iterator[tuple[bytes, int]]:
    """Each line of a binary file as (its first `limit` bytes, its whole length), holding no more than `limit`
    bytes of a line in memory however long the line is."""
    while line := file.readline(limit):
        length = len(line)
        if length == limit and not line.endswith(b"\n"):
            while rest := file.readline(limit):
                length += len(rest)
                if rest.endswith(b"\n"):
                    break
        yield line, length


def cut_at_line(data: bytes, cap: int, rel: str) -> bytes:
    """data, or, if longer than cap, its whole lines within cap and a line saying what was left out."""
    if len(data) <= cap:
        return data
    kept = data[: data.rfind(b"\n", 0, cap) + 1]
    return kept + f"[{rel} is cut here: longer than {cap // 1024} KiB; read_file shows the rest]\n".encode()


def read_text(root: Path, rel: str, listed: set[str]) -> str | None:
    """The listed file's text (open_listed), cut at MAX_DOC_BYTES; None for a binary, non-UTF-8 or private-key
    file."""
    with os.fdopen(open_listed(root, rel, listed), "rb") as file:
        data = file.read(MAX_DOC_BYTES + 1)
    if b"\0" in data[:BINARY_SNIFF_BYTES] or has_private_key(data):
        return None
    try:
        return cut_at_line(data, MAX_DOC_BYTES, rel).decode("utf-8")
    except UnicodeDecodeError:
        return None
