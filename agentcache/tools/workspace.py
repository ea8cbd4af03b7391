"""Path safety for tools: every path argument resolves inside the repo root, never to a secret or ignored file."""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from agentcache.tools.base import ToolError
from layers.repo import is_git_worktree, is_ignored, is_secret_path, list_files, parse_gitignore


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
        except (OSError, RuntimeError, ValueError) as exc:
            raise ToolError(f"cannot resolve path '{path}': {exc}") from None
        if not resolved.is_relative_to(self.root):
            raise ToolError(f"path '{path}' is outside the repository root")
        return resolved

    def check_allowed(self, path: str, resolved: Path) -> str:
        rel = self.relative(resolved)
        for name in (PurePosixPath(path).as_posix(), rel):
            if is_secret_path(name):
                raise ToolError(f"path '{path}' is a secret file; tools may not touch it")
        if ".git" in PurePosixPath(rel).parts:
            raise ToolError(f"path '{path}' is inside .git; tools may not touch it")
        if rel != "." and self.is_ignored(rel):
            raise ToolError(f"path '{path}' is ignored by .gitignore; tools may not touch it")
        return rel

    def readable_file(self, path: str) -> Path:
        resolved = self.resolve(path)
        self.check_allowed(path, resolved)
        if not resolved.exists():
            raise ToolError(f"file not found: {path}")
        if not resolved.is_file():
            raise ToolError(f"not a regular file: {path}")
        return resolved

    def writable_file(self, path: str) -> Path:
        resolved = self.resolve(path)
        self.check_allowed(path, resolved)
        if resolved.exists() and not resolved.is_file():
            raise ToolError(f"not a regular file: {path}")
        return resolved

    def directory(self, path: str) -> str:
        resolved = self.resolve(path)
        rel = self.check_allowed(path, resolved)
        if not resolved.is_dir():
            raise ToolError(f"not a directory: {path}")
        return rel

    def files(self) -> list[str]:
        return [rel for rel in list_files(self.root) if not is_secret_path(self.relative((self.root / rel).resolve()))]

    def is_ignored(self, rel: str) -> bool:
        if is_git_worktree(self.root):
            result = subprocess.run(["git", "check-ignore", "-q", "--", rel], cwd=self.root,
                                    capture_output=True, check=False)
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
