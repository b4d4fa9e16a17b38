"""Strict JSON request bodies, checked against a small declarative schema.

Lenient parsing is how injection and confusion bugs start, so a body must be UTF-8, one
JSON object, no deeper than :data:`MAX_DEPTH`, without duplicate keys, NaN/Infinity or NUL
characters, and with only the fields its route declares (each of the declared type).
Every failure is a 400 whose ``field`` names the offending field (``hostnames[2]``,
``upstream.url``). The same schema produces the OpenAPI request body, so the document and
the validation cannot drift apart.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aegis.admin._errors import ApiError, invalid

MAX_DEPTH = 16
#: What a PEM certificate / private key field must contain (the OpenAPI document says so
#: too, so a generated client or fuzzer does not send what is refused anyway).
PEM_CERTIFICATE = "-----BEGIN CERTIFICATE-----"
# ("[ ]", not " ": no response, this document included, ever contains the words of a key
# header, so a leak check can search every response for them.)
PEM_PRIVATE_KEY = "-----BEGIN [A-Z0-9 ]*PRIVATE[ ]KEY-----"

Kind = Literal["string", "integer", "number", "boolean", "array", "object"]


@dataclass(frozen=True)
class Field:
    """One allowed field. ``items`` types array elements; ``schema`` types a nested object."""

    kind: Kind
    required: bool = False
    nullable: bool = False
    description: str = ""
    max_length: int | None = None  # characters of a string, elements of an array
    min_length: int | None = None  # characters of a string (empty strings refused: 1)
    pattern: str | None = None  # a regular expression a string must contain (re.search)
    pattern_code: str = "invalid_format"  # the error code when ``pattern`` is not found
    enum: tuple[str, ...] | None = None
    items: Field | None = None
    schema: ObjectSchema | None = None

    def json_schema(self) -> dict[str, Any]:
        result: dict[str, Any] = {"type": [self.kind, "null"] if self.nullable else self.kind}
        if self.description:
            result["description"] = self.description
        if self.max_length is not None:
            result["maxLength" if self.kind == "string" else "maxItems"] = self.max_length
        if self.min_length is not None:
            result["minLength"] = self.min_length
        if self.pattern is not None:
            result["pattern"] = self.pattern
        if self.enum is not None:
            result["enum"] = list(self.enum)
        if self.items is not None:
            result["items"] = self.items.json_schema()
        if self.schema is not None:
            result.update(self.schema.json_schema())
        return result

    def check(self, value: Any, path: str) -> Any:
        if value is None:
            if self.nullable:
                return None
            raise invalid(path, f"{path} must not be null", "wrong_type")
        if not _is_kind(value, self.kind):
            raise invalid(path, f"{path} must be of type {self.kind}", "wrong_type")
        if self.max_length is not None and isinstance(value, str | list) and (
            len(value) > self.max_length
        ):
            raise invalid(path, f"{path} is longer than {self.max_length}", "too_long")
        if self.min_length is not None and isinstance(value, str) and (
            len(value) < self.min_length
        ):
            raise invalid(path, f"{path} must not be empty" if self.min_length == 1
                          else f"{path} is shorter than {self.min_length}", "too_short")
        if self.pattern is not None and isinstance(value, str) and not re.search(
            self.pattern, value
        ):
            raise invalid(path, f"{path} is not in the expected format", self.pattern_code)
        if self.enum is not None and value not in self.enum:
            raise invalid(path, f"{path} must be one of {', '.join(self.enum)}", "invalid_choice")
        if self.items is not None:
            return [self.items.check(item, f"{path}[{index}]") for index, item in enumerate(value)]
        if self.schema is not None:
            return self.schema.check(value, path + ".")
        return value


def _is_kind(value: Any, kind: Kind) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "array":
        return isinstance(value, list)
    return isinstance(value, dict)


@dataclass(frozen=True)
class ObjectSchema:
    """The fields a JSON object may carry; anything else is refused (``unknown_field``)."""

    fields: Mapping[str, Field] = field(default_factory=dict)

    def check(self, value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        for name in value:
            if name not in self.fields:
                raise invalid(prefix + name, f"unknown field {prefix + name}", "unknown_field")
        result: dict[str, Any] = {}
        for name, spec in self.fields.items():
            if name not in value:
                if spec.required:
                    raise invalid(prefix + name, f"{prefix + name} is required", "missing_field")
                continue
            result[name] = spec.check(value[name], prefix + name)
        return result

    def json_schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "additionalProperties": False,
            "required": [name for name, spec in self.fields.items() if spec.required],
            "properties": {name: spec.json_schema() for name, spec in self.fields.items()},
        }


def parse_json_body(raw: bytes, schema: ObjectSchema) -> dict[str, Any]:
    """Decode and validate a request body. @raise ApiError: 400 naming the problem."""
    if not raw.strip():
        raise ApiError(400, "missing_body", "a JSON object body is required")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_encoding", "the body is not valid UTF-8") from None
    if text.startswith("\ufeff"):
        raise ApiError(400, "invalid_json", "the body must not start with a byte order mark")
    if _max_depth(text) > MAX_DEPTH:
        raise ApiError(400, "too_deep", f"JSON nested deeper than {MAX_DEPTH} levels")
    try:
        value = json.loads(
            text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants
        )
    except ApiError:
        raise
    except (ValueError, RecursionError) as exc:
        # json's messages name a position only, never content: safe to show.
        message = exc.msg if isinstance(exc, json.JSONDecodeError) else "malformed"
        raise ApiError(400, "invalid_json", f"the body is not valid JSON ({message})") from None
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    _refuse_nul(value, "")
    return schema.check(value)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise invalid(key, f"field {key} appears twice", "duplicate_field")
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    raise ApiError(400, "invalid_json", f"{name} is not allowed in JSON")


def _refuse_nul(value: Any, path: str) -> None:
    if isinstance(value, str):
        if "\x00" in value:
            raise invalid(path or None, "NUL characters are not allowed", "nul_character")
    elif isinstance(value, dict):
        for key, item in value.items():
            child = f"{path}.{key}" if path else key
            if "\x00" in key:
                raise invalid(None, "NUL characters are not allowed", "nul_character")
            _refuse_nul(item, child)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _refuse_nul(item, f"{path}[{index}]")


def _max_depth(text: str) -> int:
    """Nesting depth of ``text`` counted before parsing, so deep input never recurses."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_DEPTH:
                return deepest
        elif char in "]}":
            depth -= 1
    return deepest
