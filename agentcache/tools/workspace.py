"""Path safety for tools: every path resolves inside the repo root, and neither its name nor what it resolves to
is a secret, ignored, inside .git or the harness's own `.agentcache/`, or a hard link to such a file. A file is
opened once, at the name that was checked, without following any link (layers.repo.open_in_root), so swapping a
name for a link between the check and the read fails instead of leaking what the link points at."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from agentcache.tools.base import ToolError
from agentcache.trust import is_own_state
from layers.errors import RepoError
from layers.repo import (
    HARNESS_DIR,
    git_run,
    hard_link_peers,
    is_git_worktree,
    is_harness_state,
    is_hidden_name,
    is_ignored,
    is_secret_path,
    list_files,
    open_in_root,
    read_gitignore,
)

CONFIG_NAMES = ("agentcache.yaml",)  # the run's settings (agentcache.config): never written by a tool

GIT_BEYOND_SYMLINK = 128  # git check-ignore's status for a path it will not judge (e.g. beyond a symlink)
LINE_SUFFIX = re.compile(r"(.+?):(\d{1,9})(?:[:-]\d{1,9})?")  # path:line, path:line:column, path:first-last


@dataclass(frozen=True, slots=True)
class Workspace:
    root: Path

    @classmethod
    def open(cls, root: Path | str) -> Workspace:
        path = Path(root)
        if not path.is_dir():
            raise ToolError(f"tool root is not a directory: {root}")
        return cls(path.resolve())

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def resolve(self, path: str) -> Path:
        if not path.strip():
            raise ToolError("path is empty")
        try:
            resolved = (self.root / path).resolve()
        except RuntimeError:
            raise ToolError(f"cannot resolve path '{path}': a symlink loop") from None
        except (OSError, ValueError) as exc:
            raise ToolError(f"cannot resolve path '{path}': {getattr(exc, 'strerror', None) or exc}") from None
        if not resolved.is_relative_to(self.root):
            raise ToolError(f"path '{path}' is outside the repository root")
        return resolved

    def without_line(self, path: str) -> tuple[str, int | None]:
        """A path written with a line after it (`pkg/mod.py:15`, as search, the repo map and the lookup show a
        definition) that names no file: the path before the colon and the line. Else the path as given and None."""
        found = LINE_SUFFIX.fullmatch(path)
        if found is None or self.name_of(path) is None or os.path.lexists(self.root / path):
            return path, None
        return found.group(1), int(found.group(2))

    def name_of(self, path: str) -> str | None:
        """The path as written, made relative to the root without following symlinks; None if it is outside."""
        lexical = Path(os.path.normpath(self.root / path))
        return self.relative(lexical) if lexical.is_relative_to(self.root) else None

    def refusal(self, shown_as: str, rel: str) -> str | None:
        """Why tools may not touch the repo path rel (a name or a resolved path), or None."""
        if is_secret_path(rel):
            return f"path '{shown_as}' is a secret file; tools may not touch it"
        if ".git" in PurePosixPath(rel).parts:
            return f"path '{shown_as}' is inside .git; tools may not touch it"
        if is_harness_state(rel):
            return f"path '{shown_as}' is the harness's own state ({HARNESS_DIR}/); tools may not touch it"
        if rel != "." and self.is_ignored(rel):
            return f"path '{shown_as}' is ignored by .gitignore; tools may not touch it"
        return None

    def check_allowed(self, path: str, resolved: Path) -> str:
        rel = self.relative(resolved)
        for name in dict.fromkeys(n for n in (self.name_of(path), rel) if n is not None):
            reason = self.refusal(path, name)
            if reason:
                raise ToolError(reason)
        return rel

    def check_hard_links(self, path: str, info: os.stat_result) -> None:
        """Refuse a file whose inode a forbidden path in the repo shares (layers.repo says what is covered)."""
        if info.st_nlink <= 1:
            return
        key = (info.st_dev, info.st_ino)
        for peer in hard_link_peers(self.root, {key}).get(key, []):
            if is_hidden_name(peer) or self.is_ignored(peer):
                raise ToolError(f"path '{path}' is a hard link to a secret, ignored or harness file; "
                                "tools may not touch it")

    def open_file(self, path: str, rel: str, flags: int = os.O_RDONLY) -> BinaryIO:
        """The checked file `rel` opened once, no link followed on its way, and its hard links checked on the open
        descriptor: what is read is what was checked."""
        try:
            fd = open_in_root(self.root, rel, flags, make_dirs=bool(flags & os.O_CREAT))
        except RepoError as exc:
            raise ToolError(str(exc).replace(f"cannot open {rel}", f"cannot open {path}")) from None
        file = os.fdopen(fd, "rb+" if flags & os.O_RDWR else "rb")
        try:
            self.check_hard_links(path, os.fstat(fd))
        except BaseException:
            file.close()
            raise
        return file

    def read_handle(self, path: str) -> BinaryIO:
        resolved = self.resolve(path)
        rel = self.check_allowed(path, resolved)
        if not resolved.exists():
            raise ToolError(f"file not found: {path}")
        if not resolved.is_file():
            raise ToolError(f"not a regular file: {path}")
        return self.open_file(path, rel)

    def write_handle(self, path: str) -> tuple[BinaryIO, bool]:
        """The file at `path` opened for reading and writing, created (with its folders) if absent; and whether it
        existed."""
        resolved = self.resolve(path)
        rel = self.check_allowed(path, resolved)
        self.check_not_config(path, resolved)
        existed = os.path.lexists(resolved)
        if existed and not resolved.is_file():
            raise ToolError(f"not a regular file: {path}")
        return self.open_file(path, rel, os.O_RDWR | os.O_CREAT), existed

    def edit_handle(self, path: str) -> BinaryIO:
        resolved = self.resolve(path)
        rel = self.check_allowed(path, resolved)
        self.check_not_config(path, resolved)
        if not resolved.exists():
            raise ToolError(f"file not found: {path}")
        if not resolved.is_file():
            raise ToolError(f"not a regular file: {path}")
        return self.open_file(path, rel, os.O_RDWR)

    def check_not_config(self, path: str, resolved: Path) -> None:
        """No tool may rewrite what decides what tools and runs may do: a .gitignore (which files tools may touch),
        agentcache.yaml (the run's settings), or anything in agentcache's own config or cache dir."""
        for name in (resolved.name, PurePosixPath(path).name):
            if name.lower() == ".gitignore":
                raise ToolError(f"path '{path}' holds the ignore rules that keep files from tools; tools may not "
                                "change it")
            if name.lower() in CONFIG_NAMES:
                raise ToolError(f"path '{path}' is agentcache's configuration; tools may not change it (edit it "
                                "yourself, then `agentcache trust` if it widens what runs may do)")
        if is_own_state(resolved):
            raise ToolError(f"path '{path}' is inside agentcache's own config or cache dir; tools may not touch it")

    def directory(self, path: str) -> str:
        resolved = self.resolve(path)
        rel = self.check_allowed(path, resolved)
        if resolved.is_file():  # the 1.5B listed a module three times over, stuck on "not a directory"
            raise ToolError(f"{path} is a file, not a directory: read it with read_file")
        if not resolved.is_dir():
            raise ToolError(f"not a directory: {path}")
        return rel

    def files(self) -> list[str]:
        return list_files(self.root)

    def is_ignored(self, rel: str) -> bool:
        if is_git_worktree(self.root):
            result = git_run(self.root, "check-ignore", "-q", "--", rel)
            if result is not None and result.returncode != GIT_BEYOND_SYMLINK:
                return result.returncode == 0
        return self._walk_ignored(rel)

    def _walk_ignored(self, rel: str) -> bool:
        parts = PurePosixPath(rel).parts
        rules = []
        for depth in range(len(parts)):
            rules += read_gitignore(self.root, "/".join(parts[:depth]))
            here = "/".join(parts[: depth + 1])
            if is_ignored(rules, here, depth < len(parts) - 1):
                return True
        return False
