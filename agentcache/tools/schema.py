"""Argument checking against the JSON Schema subset the tool specs use: object, properties, required, types, bounds."""
from __future__ import annotations

from typing import Any

from agentcache.tools.base import ToolError

TYPE_NAMES = {str: "string", bool: "boolean", int: "integer", float: "number", list: "array", dict: "object",
              type(None): "null"}


ARTICLES = {"integer": "an integer", "array": "an array", "object": "an object"}


def json_type(value: Any) -> str:
    return TYPE_NAMES.get(type(value), type(value).__name__)


def has_type(value: Any, expected: str) -> bool:
    actual = json_type(value)
    return actual == expected or (expected == "number" and actual == "integer")


def check_value(key: str, value: Any, schema: dict[str, Any]) -> None:
    expected = schema.get("type")
    if expected is not None and not has_type(value, expected):
        raise ToolError(f"argument '{key}' must be {ARTICLES.get(expected, 'a ' + expected)}, got {json_type(value)}")
    if "minimum" in schema and value < schema["minimum"]:
        raise ToolError(f"argument '{key}' must be >= {schema['minimum']}, got {value}")
    if "maximum" in schema and value > schema["maximum"]:
        raise ToolError(f"argument '{key}' must be <= {schema['maximum']}, got {value}")
    if "enum" in schema and value not in schema["enum"]:
        raise ToolError(f"argument '{key}' must be one of {schema['enum']}, got {value!r}")


def check_arguments(arguments: Any, schema: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(arguments, dict):
        raise ToolError(f"arguments must be a JSON object, got {json_type(arguments)}")
    properties: dict[str, Any] = schema.get("properties", {})
    for key in schema.get("required", []):
        if key not in arguments:
            raise ToolError(f"missing required argument '{key}'")
    for key, value in arguments.items():
        if key in properties:
            check_value(key, value, properties[key])
        elif schema.get("additionalProperties", True) is False:
            raise ToolError(f"unexpected argument '{key}' (allowed: {', '.join(sorted(properties)) or 'none'})")
    return arguments
