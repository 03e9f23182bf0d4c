"""Turn token byte pieces into text without ever emitting a broken UTF-8 character."""

from __future__ import annotations


def _incomplete_tail(buf: bytes) -> int:
    """Length of a trailing UTF-8 sequence that still lacks continuation bytes (0 if none)."""
    n = len(buf)
    for i in range(1, min(4, n) + 1):
        b = buf[n - i]
        if b & 0xC0 == 0x80:  # continuation byte: look further back for its lead byte
            continue
        need = 4 if b >= 0xF0 else 3 if b >= 0xE0 else 2 if b >= 0xC0 else 1
        return i if need > i else 0
    return 0


class IncrementalDetokenizer:
    """Holds back the bytes of a multi-byte character until all of them have arrived."""

    __slots__ = ("_pending", "_pieces")

    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = pieces
        self._pending = b""

    def push(self, token_id: int) -> str:
        """Add one token; return the text that is now complete."""
        buf = self._pending + self._pieces[token_id]
        if buf.isascii():
            self._pending = b""
            return buf.decode("ascii")
        cut = len(buf) - _incomplete_tail(buf)
        self._pending = buf[cut:]
        return buf[:cut].decode("utf-8", errors="replace")

    def flush(self) -> str:
        """At the end of a sequence: whatever is left, with U+FFFD for a broken character."""
        buf, self._pending = self._pending, b""
        return buf.decode("utf-8", errors="replace")
