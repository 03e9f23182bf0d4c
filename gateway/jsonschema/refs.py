"""`$ref` inside one schema document: `#`, `#/$defs/Name`, `#/definitions/Name`, any pointer."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from gateway.jsonschema.errors import SchemaError


def resolve(root: Any, ref: Any, path: tuple[str, ...]) -> tuple[Any, tuple[str, ...]]:
    """The schema `ref` points at inside `root`, and its path (for error messages)."""
    if not isinstance(ref, str):
        raise SchemaError("$ref must be a string", "$ref", path)
    if not ref.startswith("#"):
        raise SchemaError(
            f"$ref {ref[:100]!r} points outside the schema; only local refs (#/...) are supported",
            "$ref",
            path,
        )
    pointer = ref[1:]
    if pointer and not pointer.startswith("/"):
        raise SchemaError(f"$ref {ref[:100]!r}: anchors are not supported", "$ref", path)
    node, target = root, []
    for raw in pointer.split("/")[1:] if pointer else []:
        key = unquote(raw).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            raise SchemaError(f"$ref {ref[:100]!r} points at nothing", "$ref", path)
        target.append(key)
    return node, tuple(target)
