"""A deterministic ModelRunner for engine and scheduler tests: no model file, no llama.cpp.

It keeps every slot's KV cells as a list (one cell per position, shared between slots after a
"cp" op, as llama.cpp's unified cache does), checks that each batch puts every token at the
next position of a slot that holds exactly the sequence's earlier tokens, and derives each
logits row from the slot's cells alone: the model is a pure function of the token history, so a
wrong cache edit changes the text.
"""

from __future__ import annotations

import itertools
import zlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from batching.info import ModelInfo
from batching.outputs import Filler, KvOp, PrefillChunk, SchedulerOutput
from batching.sampling_state import Logits

BOS, EOS = 1, 2
EURO_HEAD, EURO_TAIL, E_ACUTE = 10, 11, 12  # b"\xe2\x82" + b"\xac" == "€".encode()
N_VOCAB = 64

NextToken = Callable[[list[int]], int]


def make_pieces(n_vocab: int = N_VOCAB) -> list[bytes]:
    """One distinct ASCII word per token (b" w17"), control tokens empty, a few multi-byte."""
    pieces = [f" w{t}".encode() for t in range(n_vocab)]
    pieces[0] = pieces[BOS] = pieces[EOS] = b""
    pieces[EURO_HEAD], pieces[EURO_TAIL] = "€".encode()[:2], "€".encode()[2:]
    pieces[E_ACUTE] = "é".encode()
    return pieces


def hashed_next(history: list[int], n_vocab: int = N_VOCAB) -> int:
    """The default model: a token that depends on the whole history, never a control token."""
    return 3 + zlib.crc32(np.asarray(history, np.int32).tobytes()) % (n_vocab - 3)


def split_equal(seq_ids: list[int], n_ubatch: int) -> int:
    """How many ubatches llama.cpp's split_equal(n_ubatch, sequential=true) cuts a batch into.

    Token by token, as llama.cpp does it: each ubatch first picks, scanning the unused tokens
    in batch order, sequences whose ids each follow the previously picked one; then it takes one
    unused token from every picked sequence per round, while every one has a token left and the
    ubatch stays within n_ubatch tokens.
    """
    used = [False] * len(seq_ids)
    count = 0
    while not all(used):
        picked: list[int] = []
        for i, s in enumerate(seq_ids):
            if not used[i] and s not in picked and (not picked or s == picked[-1] + 1):
                picked.append(s)
                if len(picked) > n_ubatch:
                    break
        unused = {s: [i for i, t in enumerate(seq_ids) if t == s and not used[i]] for s in picked}
        rounds = 0
        while all(len(unused[s]) > rounds for s in picked):
            for s in picked:
                used[unused[s][rounds]] = True
            rounds += 1
            if (rounds + 1) * len(picked) > n_ubatch:
                break
        count += 1
    return count


@dataclass(frozen=True, slots=True)
class Batch:
    """What one forward call computed: (slot_id, pos, token) per token, and the prompt part."""

    tokens: list[tuple[int, int, int]]
    num_decode: int
    num_prefill: int


class FakeRunner:
    """ModelRunner whose next token is `next_token(history of the slot)`."""

    def __init__(
        self,
        n_ctx: int = 256,
        n_slots: int = 4,
        n_cells: int | None = None,
        next_token: NextToken | None = None,
        peak: float = 10.0,
        n_ubatch: int = 512,
    ) -> None:
        self.info = ModelInfo(
            path=Path("fake"),
            model_id="fake",
            n_ctx=n_ctx,
            n_ctx_train=n_ctx,
            n_slots=n_slots,
            n_vocab=N_VOCAB,
            bos_id=BOS,
            eos_id=EOS,
            add_bos=True,
            bos_text="<s>",
            eos_text="</s>",
            chat_template=None,
            quantization="F32",
            description="fake",
        )
        self.pieces = make_pieces()
        self.eog_ids = frozenset({EOS})
        # computed at once, but it stands for a GPU runner so that the engine's hand-off of
        # outputs once the next decode has started (Engine.step) is what the tests see
        self.decodes_async = True
        self.n_cells = n_cells  # None: room for everything
        self.next_token = next_token or hashed_next
        self.peak = peak  # the model's token leads the others' N(0, 1) logits by this much
        self.cells: dict[int, list[tuple[int, int]]] = defaultdict(list)  # slot -> (cell, token)
        self.batches: list[Batch] = []  # successful forwards only
        self.kv_ops: list[KvOp] = []
        self.cleared: list[int] = []
        self.num_full = 0  # forwards answered with 1
        self.grammars: list[FakeGrammar] = []
        self.n_ubatch = n_ubatch
        self.ubatches: list[int] = []  # llama.cpp's ubatch count of each successful forward
        self.num_fillers = 0  # throwaway tokens written (and removed) so far
        self._ids = itertools.count()
        self._rows: Logits = np.zeros((0, N_VOCAB), np.float32)

    # -- what tests read -----------------------------------------------------------------

    def tokens_of(self, slot_id: int) -> list[int]:
        return [t for _, t in self.cells[slot_id]]

    def num_cells_used(self) -> int:
        return len({c for cells in self.cells.values() for c, _ in cells})

    @property
    def num_prefill_tokens(self) -> int:
        return sum(b.num_prefill for b in self.batches)

    # -- ModelRunner -----------------------------------------------------------------------

    def tokenize(self, text: str, add_bos: bool, parse_special: bool) -> list[int]:
        ids = [int(w[1:]) for w in text.split()]
        return [BOS, *ids] if add_bos else ids

    def apply_kv_ops(self, ops: list[KvOp]) -> None:
        for op in ops:
            self.kv_ops.append(op)
            if op.kind == "rm":
                self.cells[op.dst] = self.cells[op.dst][: op.pos]
            elif op.kind == "cp":
                src = self.cells[op.src]
                assert len(src) >= op.pos, f"cp of {op.pos} cells from a slot holding {len(src)}"
                self.cells[op.dst] = src[: op.pos]
            else:
                raise AssertionError(f"unknown KV op {op.kind!r}")

    def clear_slot(self, slot_id: int) -> None:
        self.cleared.append(slot_id)
        self.cells[slot_id] = []

    def forward(self, out: SchedulerOutput) -> int:
        """Like llama_decode: 0, or 1 with nothing changed when the cells would not fit."""
        planned: list[tuple[int, int, int]] = []
        rows: list[int] = []  # slot of each logits row, in batch order
        seen: set[int] = set()
        fillers: list[int] = []
        assert len(out.entries) == len(out.decode) + len(out.prefill) + out.num_fillers
        for entry in out.entries:
            if isinstance(entry, Filler):  # a throwaway token at the slot's next position
                assert entry.slot_id not in seen
                seen.add(entry.slot_id)
                fillers.append(entry.slot_id)
                planned.append((entry.slot_id, len(self.cells[entry.slot_id]), 0))
            elif isinstance(entry, PrefillChunk):
                slot = entry.seq.slot_id
                assert slot is not None and slot not in seen and entry.start < entry.end
                seen.add(slot)
                self._check_history(slot, entry.seq.prompt_ids[: entry.start])
                planned += [
                    (slot, p, entry.seq.prompt_ids[p]) for p in range(entry.start, entry.end)
                ]
                if entry.end == entry.seq.num_prompt_tokens:
                    rows.append(slot)
            else:
                assert entry.slot_id is not None and entry.slot_id not in seen
                seen.add(entry.slot_id)
                self._check_history(entry.slot_id, entry.prompt_ids + entry.output_ids[:-1])
                planned.append((entry.slot_id, entry.num_tokens - 1, entry.output_ids[-1]))
                rows.append(entry.slot_id)
        if self.n_cells is not None and fillers:  # like the runner: fillers only where room is
            planned = [t for t in planned if t[0] not in fillers]
            fillers = []
        if self.n_cells is not None and self.num_cells_used() + len(planned) > self.n_cells:
            self.num_full += 1
            return 1
        for slot, pos, token in planned:
            assert pos == len(self.cells[slot])
            self.cells[slot].append((next(self._ids), token))
        n_real = len(planned) - len(fillers)
        self.batches.append(Batch(planned, len(out.decode), n_real - len(out.decode)))
        self.ubatches.append(split_equal([slot for slot, _, _ in planned], self.n_ubatch))
        self.num_fillers += len(fillers)
        for slot in fillers:  # removed after the decode, as the real runner does
            self.cells[slot].pop()
        self._rows = np.zeros((len(rows), N_VOCAB), np.float32)
        for i, slot in enumerate(rows):
            self._rows[i] = self._row(self.tokens_of(slot))
        return 0

    def logits(self) -> Logits:
        return self._rows

    def make_grammar(self, gbnf: str) -> FakeGrammar:
        """A grammar "only 5 7" allows tokens 5 and 7; anything else does not parse."""
        words = gbnf.split()
        if not words or words[0] != "only":
            raise ValueError("the grammar does not parse")
        grammar = FakeGrammar({int(w) for w in words[1:]})
        self.grammars.append(grammar)
        return grammar

    def close(self) -> None:
        pass

    # -- internals -------------------------------------------------------------------------

    def _check_history(self, slot_id: int, expected: list[int]) -> None:
        held = self.tokens_of(slot_id)
        assert held == expected, f"slot {slot_id} holds {held}, the sequence needs {expected}"

    def _row(self, history: list[int]) -> Logits:
        """Small noise keyed by the history, and a clear winner: the model's next token."""
        key = zlib.crc32(np.asarray(history, np.int32).tobytes())
        row = np.random.default_rng(key).standard_normal(N_VOCAB).astype(np.float32)
        row[self.next_token(history)] += self.peak
        return row


class FakeGrammar:
    """Allows a fixed set of tokens; records what it was told to accept."""

    def __init__(self, allowed: set[int]) -> None:
        self.allowed = allowed
        self.accepted: list[int] = []
        self.is_closed = False

    def allows(self, token_id: int) -> bool:
        return token_id in self.allowed

    def mask(self, row: Logits) -> None:
        forbidden = np.ones(row.shape[0], bool)
        forbidden[list(self.allowed)] = False
        row[forbidden] = -np.inf

    def accept(self, token_id: int) -> None:
        assert token_id in self.allowed
        self.accepted.append(token_id)

    def close(self) -> None:
        self.is_closed = True
