"""How the shell commands print: aligned tables for people, JSON for scripts.

``--json`` prints exactly what the API answered (or, for commands that compute something,
one documented object), indented and with a trailing newline, so ``jq`` and
``json.loads`` read it as is. Tables leave out what does not fit a line; ``show`` prints
one field per line.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TextIO


def print_json(value: Any, out: TextIO | None = None) -> None:
    stream = sys.stdout if out is None else out
    stream.write(json.dumps(value, indent=2, sort_keys=False) + "\n")


def text(value: Any) -> str:
    """A cell: lists joined by commas, booleans as yes/no, None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(text(item) for item in value) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{key}={text(item)}" for key, item in value.items())
    return str(value)


Column = tuple[str, Callable[[Mapping[str, Any]], Any]]


def table(rows: Iterable[Mapping[str, Any]], columns: Sequence[Column],
          out: TextIO | None = None, empty: str = "(none)") -> None:
    stream = sys.stdout if out is None else out
    cells = [[text(pick(row)) for _, pick in columns] for row in rows]
    if not cells:
        stream.write(empty + "\n")
        return
    headers = [title for title, _ in columns]
    widths = [max(len(headers[i]), *(len(line[i]) for line in cells))
              for i in range(len(headers))]
    for line in [headers, *cells]:
        stream.write("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
                     .rstrip() + "\n")


def fields(document: Mapping[str, Any], names: Sequence[str] | None = None,
           out: TextIO | None = None) -> None:
    """``name: value`` lines, in the document's order (or ``names``' order)."""
    stream = sys.stdout if out is None else out
    keys = [key for key in (names or list(document)) if key in document]
    width = max((len(key) for key in keys), default=0)
    for key in keys:
        stream.write(f"{key.ljust(width)}  {text(document[key])}\n")


def field(name: str) -> Callable[[Mapping[str, Any]], Any]:
    return lambda row: row.get(name)
