"""Path safety for tools: every path resolves inside the repo root, and neither its name nor what it resolves to
is a secret, ignored, inside .git or the harness's own `.agentcache/`, or a hard link to such a file."""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from agentcache.tools.base import ToolError
from layers.repo import (
    HARNESS_DIR,
    PRIVATE_KEY_MARKER,
    hard_link_peers,
    is_git_worktree,
    is_harness_state,
    is_hidden_name,
    is_ignored,
    is_secret_path,
    list_files,
    parse_gitignore,
)

GIT_BEYOND_SYMLINK = 128  # git check-ignore's status for a path it will not judge (e.g. beyond a symlink)


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

    def check_hard_links(self, path: str, resolved: Path) -> None:
        """Refuse a file whose inode a forbidden path in the repo shares (layers.repo says what is covered)."""
        info = resolved.stat()
        if info.st_nlink <= 1:
            return
        key = (info.st_dev, info.st_ino)
        for peer in hard_link_peers(self.root, {key}).get(key, []):
            if is_hidden_name(peer) or self.is_ignored(peer):
                raise ToolError(f"path '{path}' is a hard link to a secret, ignored or harness file; "
                                "tools may not touch it")

    def readable_file(self, path: str) -> Path:
        resolved = self.resolve(path)
        self.check_allowed(path, resolved)
        if not resolved.exists():
            raise ToolError(f"file not found: {path}")
        if not resolved.is_file():
            raise ToolError(f"not a regular file: {path}")
        self.check_hard_links(path, resolved)
        return resolved

    def writable_file(self, path: str) -> Path:
        resolved = self.resolve(path)
        self.check_allowed(path, resolved)
        self.check_not_ignore_rules(path, resolved)
        if resolved.exists() and not resolved.is_file():
            raise ToolError(f"not a regular file: {path}")
        if resolved.exists():
            self.check_hard_links(path, resolved)
            if PRIVATE_KEY_MARKER in resolved.read_bytes():
                raise ToolError(f"path '{path}' holds a private key; tools may not overwrite it")
        return resolved

    def editable_file(self, path: str) -> Path:
        resolved = self.readable_file(path)
        self.check_not_ignore_rules(path, resolved)
        return resolved

    def check_not_ignore_rules(self, path: str, resolved: Path) -> None:
        """A .gitignore decides what tools may touch, so no tool may rewrite one."""
        if resolved.name == ".gitignore" or PurePosixPath(path).name == ".gitignore":
            raise ToolError(f"path '{path}' holds the ignore rules that keep files from tools; tools may not change it")

    def directory(self, path: str) -> str:
        resolved = self.resolve(path)
        rel = self.check_allowed(path, resolved)
        if not resolved.is_dir():
            raise ToolError(f"not a directory: {path}")
        return rel

    def files(self) -> list[str]:
        return list_files(self.root)

    def is_ignored(self, rel: str) -> bool:
        if is_git_worktree(self.root):
            result = subprocess.run(["git", "check-ignore", "-q", "--", rel], cwd=self.root,
                                    capture_output=True, check=False)
            if result.returncode != GIT_BEYOND_SYMLINK:
                return result.returncode == 0
        return self._walk_ignored(rel)

    def _walk_ignored(self, rel: str) -> bool:
        parts = PurePosixPath(rel).parts
        rules = []
        for depth in range(len(parts)):
            base = "/".join(parts[:depth])
            gitignore = self.root / base / ".gitignore"
            if gitignore.is_file() and not gitignore.is_symlink():
                rules += parse_gitignore(gitignore.read_text("utf-8", errors="replace"), base)
            here = "/".join(parts[: depth + 1])
            if is_ignored(rules, here, depth < len(parts) - 1):
                return True
        return False
