"""Prompt files: YAML front matter (name, description, version) followed by a text body."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from layers.canonical import normalize_text
from layers.errors import PromptError

REQUIRED_KEYS = ("name", "description", "version")


@dataclass(frozen=True, slots=True)
class Prompt:
    name: str
    description: str
    version: str
    body: str


def read_text_file(path: Path, error: type[Exception] = PromptError) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{path}: not valid UTF-8") from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{problem} (line {mark.line + 1})" if mark else problem


def split_front_matter(text: str, source: Path) -> tuple[dict, str]:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").removeprefix("\ufeff").split("\n")
    if not lines or lines[0].strip() != "---":
        raise PromptError(f"{source}: missing front matter: the file must start with a '---' line")
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration:
        raise PromptError(f"{source}: front matter is not closed by a '---' line") from None
    try:
        meta = yaml.safe_load("\n".join(lines[1:end]))
    except yaml.YAMLError as exc:
        raise PromptError(f"{source}: invalid YAML front matter: {_yaml_problem(exc)}") from None
    if not isinstance(meta, dict):
        raise PromptError(f"{source}: front matter must be a YAML mapping")
    return meta, "\n".join(lines[end + 1 :])


def _required_str(meta: dict, key: str, source: Path) -> str:
    if key not in meta:
        raise PromptError(f"{source}: front matter lacks required key '{key}'")
    value = meta[key]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise PromptError(f"{source}: '{key}' must be a string (quote it), got {type(value).__name__}")
    if not str(value).strip():
        raise PromptError(f"{source}: '{key}' is empty")
    return str(value).strip()


def load_prompt(path: Path) -> Prompt:
    meta, body = split_front_matter(read_text_file(path), path)
    fields = {key: _required_str(meta, key, path) for key in REQUIRED_KEYS}
    if not body.strip():
        raise PromptError(f"{path}: prompt body is empty")
    return Prompt(body=normalize_text(body.lstrip("\n")), **fields)
