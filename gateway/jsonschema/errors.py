"""The one error of schema-to-grammar conversion: which keyword, where, and why."""

from __future__ import annotations

from collections.abc import Sequence


class SchemaError(ValueError):
    """A schema we cannot turn into a bounded grammar that only produces valid output.

    `keyword` is the JSON Schema keyword at fault (e.g. "maxLength") and `path` the keys and
    indices that lead to the schema holding it, so the API can name the exact parameter.
    """

    def __init__(self, reason: str, keyword: str | None = None, path: Sequence[str] = ()) -> None:
        self.reason = reason
        self.keyword = keyword
        self.path = tuple(path)
        where = "/" + "/".join(self.path) if self.path else "the schema's root"
        super().__init__(f"{reason} (at {where})")

    def under(self, prefix: Sequence[str]) -> SchemaError:
        """The same error for a schema that sits at `prefix` in the request."""
        return SchemaError(self.reason, self.keyword, (*prefix, *self.path))

    @property
    def param(self) -> str | None:
        """The request parameter at fault: the path, then the keyword (dot-separated)."""
        parts = [*self.path, *([self.keyword] if self.keyword else [])]
        return ".".join(parts) or None
