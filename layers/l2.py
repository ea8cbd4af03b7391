"""L2 builder: repo tree, doc files and skills as ordered chunks, cut to a token budget.

Chunks, in this order: one "tree" block (key "."), one "doc" block per root AGENTS.md,
SPEC.md, CLAUDE.md, README* (in that order), one "skill" block per file under the skills
folder (default "skills/", sorted by path), then one "map" block per source file outline that
the repo map keeps within map_tokens (layers.repomap). Within docs, skills and map, files clean
in git come before files with uncommitted changes. Binary, undecodable and private-key files are
skipped; an unreadable file raises RepoError.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from layers.block import Block, Layer
from layers.canonical import normalize_text
from layers.errors import RepoError
from layers.repo import dirty_paths, list_files, open_repo, read_text, safe_paths
from layers.repomap import MAP_TOKENS, map_blocks
from layers.tokens import TiktokenCounter, TokenCounter

DOC_NAMES = ("agents.md", "spec.md", "claude.md")
README_NAMES = ("readme.md", "readme", "readme.rst", "readme.txt")
KIND_ORDER = ("tree", "doc", "skill", "map")


@dataclass(frozen=True, slots=True)
class L2Config:
    """skills_dir is repo-relative; map_tokens caps the repo map (0: no map); token_budget caps the summed
    tokens of all L2 blocks."""

    skills_dir: str = "skills"
    max_tree_entries: int = 500
    token_budget: int | None = None
    map_tokens: int = MAP_TOKENS


def render_tree(paths: Iterable[str], max_entries: int) -> str:
    ordered = safe_paths(list(paths))
    shown = ordered[:max_entries]
    lines = shown + ([f"... {len(ordered) - len(shown)} more"] if len(ordered) > len(shown) else [])
    return normalize_text("\n".join(lines))


def doc_paths(paths: Iterable[str]) -> list[str]:
    priority = {name: i for i, name in enumerate(DOC_NAMES + README_NAMES)}
    docs = [p for p in paths if "/" not in p and p.lower() in priority]
    return sorted(docs, key=lambda p: (priority[p.lower()], p))


def skill_paths(paths: Iterable[str], skills_dir: str) -> list[str]:
    prefix = PurePosixPath(skills_dir).as_posix().strip("/") + "/"
    return sorted(p for p in paths if p.startswith(prefix))


def _file_chunks(root: Path, kind: str, paths: list[str], dirty: set[str], listed: set[str]) -> list[Block]:
    blocks = []
    for rel in sorted(paths, key=lambda p: p in dirty):
        text = read_text(root, rel, listed)
        if text is not None:
            blocks.append(Block(Layer.L2, kind, rel, normalize_text(text).encode("utf-8")))
    return blocks


def l2_chunks(root: Path, config: L2Config, counter: TokenCounter | None = None) -> list[Block]:
    paths = list_files(root)
    dirty = dirty_paths(root)
    tree = Block(Layer.L2, "tree", ".", render_tree(paths, config.max_tree_entries).encode("utf-8"))
    docs = _file_chunks(root, "doc", doc_paths(paths), dirty, set(paths))
    skills = _file_chunks(root, "skill", skill_paths(paths, config.skills_dir), dirty, set(paths))
    if config.map_tokens <= 0:
        return [tree, *docs, *skills]
    outlines = map_blocks(root, paths, dirty, config.map_tokens, counter or TiktokenCounter())
    return [tree, *docs, *skills, *outlines]


def _marker(dropped_lines: int, total_lines: int, dropped: list[Block]) -> str:
    text = f"... [truncated to fit the token budget: {dropped_lines} of {total_lines} lines dropped"
    if dropped:
        text += "; chunks dropped: " + ", ".join(f"{b.kind}:{b.key}" for b in dropped)
    return text + "]\n"


def _cut(block: Block, budget: int, dropped: list[Block], counter: TokenCounter) -> Block | None:
    lines = block.text.splitlines(keepends=True)

    def candidate(keep: int) -> str:
        return "".join(lines[:keep]) + _marker(len(lines) - keep, len(lines), dropped)

    if counter.count(candidate(0)) > budget:
        return None
    low, high = 0, len(lines)
    while low < high:
        mid = (low + high + 1) // 2
        if counter.count(candidate(mid)) <= budget:
            low = mid
        else:
            high = mid - 1
    return replace(block, content=candidate(low).encode("utf-8"))


def fit_to_budget(blocks: list[Block], budget: int, counter: TokenCounter) -> list[Block]:
    counts = [counter.count(b.text) for b in blocks]
    used = 0
    for i, count in enumerate(counts):
        if used + count > budget:
            break
        used += count
    else:
        return list(blocks)
    for j in range(i, -1, -1):
        cut = _cut(blocks[j], budget - sum(counts[:j]), list(blocks[j + 1 :]), counter)
        if cut is not None:
            return [*blocks[:j], cut]
    raise RepoError(f"token budget {budget} is too small to hold even the truncation marker")


def build_l2(repo: Path | str, config: L2Config | None = None, counter: TokenCounter | None = None) -> list[Block]:
    config = config or L2Config()
    needs_counter = config.token_budget is not None or config.map_tokens > 0
    counter = counter or (TiktokenCounter() if needs_counter else None)
    blocks = l2_chunks(open_repo(repo), config, counter)
    if config.token_budget is None:
        return blocks
    return fit_to_budget(blocks, config.token_budget, counter)
