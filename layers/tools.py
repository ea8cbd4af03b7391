"""Tool specs and their registry, loaded from prompts/tools/*.yaml and rendered for L1.

A spec may list raw parameters (`raw: [content]`): string parameters the call carries as ``` blocks after its JSON
(layers.raw). L1 shows each with a description that says so, and without them in `required`.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from layers.canonical import canonical_json, normalize_text
from layers.errors import PromptError
from layers.prompts import read_text_file
from layers.raw import FENCE

TOOL_NAME = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]
    raw: tuple[str, ...] = ()  # parameters written as ``` blocks after the call, in this order

    def to_dict(self) -> dict[str, Any]:
        """The spec as the model is shown it: a raw parameter's description says where it goes."""
        return {"name": self.name, "description": self.description, "parameters": self.shown_parameters()}

    def shown_parameters(self) -> dict[str, Any]:
        if not self.raw:
            return self.parameters
        properties = dict(self.parameters["properties"])
        for number, name in enumerate(self.raw):
            which = f"the {ORDINALS[number]} {FENCE} block" if len(self.raw) > 1 else f"a {FENCE} block"
            where = f"Not in the JSON arguments: write it as {which} after the call."
            described = f"{properties[name].get('description', '')} {where}".strip()
            properties[name] = {**properties[name], "description": described}
        required = [name for name in self.parameters.get("required", []) if name not in self.raw]
        return {**self.parameters, "properties": properties, "required": required}

    def json_parameters(self) -> dict[str, Any]:
        """The schema of the call's JSON arguments: the raw parameters left out."""
        if not self.raw:
            return self.parameters
        properties = {k: v for k, v in self.parameters["properties"].items() if k not in self.raw}
        required = [name for name in self.parameters.get("required", []) if name not in self.raw]
        return {**self.parameters, "properties": properties, "required": required}


ORDINALS = ("first", "second", "third", "fourth")


def _check_raw(raw: Any, parameters: dict[str, Any], source: Path) -> tuple[str, ...]:
    """`raw:` as a tuple: required string parameters, at most len(ORDINALS); their blocks come in this order."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(name, str) for name in raw) or len(set(raw)) != len(raw):
        raise PromptError(f"{source}: 'raw' must be a list of distinct parameter names")
    if len(raw) > len(ORDINALS):
        raise PromptError(f"{source}: at most {len(ORDINALS)} raw parameters")
    properties = parameters.get("properties", {})
    for name in raw:
        if not isinstance(properties.get(name), dict) or properties[name].get("type") != "string":
            raise PromptError(f"{source}: raw parameter '{name}' must be a string parameter")
        if name not in parameters.get("required", []):
            raise PromptError(f"{source}: raw parameter '{name}' must be required (its block always follows)")
    return tuple(raw)


def _check_spec(data: Any, source: Path) -> ToolSpec:
    if not isinstance(data, dict):
        raise PromptError(f"{source}: a tool spec must be a YAML mapping")
    for key in ("name", "description", "parameters"):
        if key not in data:
            raise PromptError(f"{source}: tool spec lacks required key '{key}'")
    name, description, parameters = data["name"], data["description"], data["parameters"]
    if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
        raise PromptError(f"{source}: tool name must match {TOOL_NAME.pattern}, got {name!r}")
    if name != source.stem:
        raise PromptError(f"{source}: tool name '{name}' does not match the file name")
    if not isinstance(description, str) or not description.strip():
        raise PromptError(f"{source}: 'description' must be a non-empty string")
    if not isinstance(parameters, dict) or parameters.get("type") != "object":
        raise PromptError(f"{source}: 'parameters' must be a JSON Schema with type: object")
    unknown = set(data) - {"name", "description", "parameters", "raw"}
    if unknown:
        raise PromptError(f"{source}: unknown keys in a tool spec: {', '.join(sorted(unknown))}")
    raw = _check_raw(data.get("raw"), parameters, source)
    return ToolSpec(name, normalize_text(description).strip(), parameters, raw)


def load_tool_spec(path: Path) -> ToolSpec:
    try:
        data = yaml.safe_load(read_text_file(path))
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PromptError(f"{path}: invalid YAML: {problem}") from None
    return _check_spec(data, path)


class ToolRegistry:
    def __init__(self, specs: Iterable[ToolSpec] = ()) -> None:
        self._specs: dict[str, ToolSpec] = {}
        for spec in specs:
            if spec.name in self._specs:
                raise PromptError(f"duplicate tool name '{spec.name}'")
            self._specs[spec.name] = spec

    @classmethod
    def from_dir(cls, tools_dir: Path) -> ToolRegistry:
        if not tools_dir.is_dir():
            raise PromptError(f"{tools_dir}: tools directory not found")
        return cls(load_tool_spec(p) for p in sorted(tools_dir.glob("*.yaml"), key=lambda p: p.name))

    def names(self) -> list[str]:
        return sorted(self._specs)

    def get(self, name: str) -> ToolSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise PromptError(f"unknown tool '{name}' (known: {', '.join(self.names())})") from None

    def __iter__(self) -> Iterator[ToolSpec]:
        return (self._specs[name] for name in self.names())

    def __len__(self) -> int:
        return len(self._specs)

    def render(self) -> str:
        try:
            return canonical_json([spec.to_dict() for spec in self]) + "\n"
        except (TypeError, ValueError) as exc:
            raise PromptError(f"tool schemas are not canonical JSON: {exc}") from None
