"""How a planned step becomes llama_decode batches: slot order, gap fillers, logits rows."""

from __future__ import annotations

from dataclasses import dataclass

from batching.outputs import Filler, PrefillChunk, SchedulerOutput
from batching.sequence import Sequence
from batching.slots import SlotTable

MAX_FILLED_GAP = 16  # idle slots between busy ones filled with a throwaway token, at most


@dataclass(slots=True)
class BatchLayout:
    """Lays out the scheduler's plans; it reads the running sequences and never changes them."""

    slots: SlotTable
    max_call_tokens: int  # most tokens one llama_decode takes: the fillers fit under it
    max_seq_len: int
    fill_gaps: bool  # llama.cpp splits by runs of slot ids (a stream per slot)

    def lay_out(
        self, out: SchedulerOutput, running: list[Sequence], fill_gaps: bool = True
    ) -> None:
        """Order the batch by slot id and give every sampling sequence its logits row."""
        out.entries = sorted([*out.decode, *out.prefill], key=slot_of)
        if self.fill_gaps and fill_gaps:
            self._fill_gaps(out, running)
        row = 0
        for entry in out.entries:
            if isinstance(entry, Filler):
                continue
            if isinstance(entry, PrefillChunk):
                if entry.end < entry.seq.num_prompt_tokens:
                    continue
                out.sample_rows.append(row)
                out.sample_seqs.append(entry.seq)
                for fork in running:
                    if fork.parent is entry.seq and fork.is_fork_pending:
                        out.sample_rows.append(row)
                        out.sample_seqs.append(fork)
            else:
                out.sample_rows.append(row)
                out.sample_seqs.append(entry)
            row += 1

    def prompt_calls(
        self, out: SchedulerOutput, running: list[Sequence], each: bool = False
    ) -> list[SchedulerOutput]:
        """The prompt chunks of a planned step without its decodes, as llama_decode calls
        (without fillers: a throwaway token between two chunks would cut both into one-token
        passes). One call, or with `each` one per prompt that finishes, shortest first, and
        the chunks that do not finish in a last call."""
        groups = [out.prefill]
        if each:
            done = [c for c in out.prefill if c.end == c.seq.num_prompt_tokens]
            started = [c for c in out.prefill if c.end < c.seq.num_prompt_tokens]
            groups = [[c] for c in sorted(done, key=lambda c: c.end - c.start)]
            groups += [started] if started else []
        calls = []
        for i, group in enumerate(groups):
            call = SchedulerOutput(prefill=group, kv_ops=list(out.kv_ops) if i == 0 else [])
            self.lay_out(call, running, fill_gaps=False)
            calls.append(call)
        return calls

    def _fill_gaps(self, out: SchedulerOutput, running: list[Sequence]) -> None:
        """Put a Filler in every short gap of idle slots between the batch's slots.

        An idle slot that holds more than twice the cells of the batch's longest sequence
        gets none: llama.cpp sizes a ubatch's attention by its fullest stream, so such a
        filler would make every token of the pass attend over that slot's length, which can
        cost more than the extra pass it saves. A slot with no cell to spare gets none
        either (the runner would have to leave it out, and the ubatch count would be off).
        """
        if not out.entries or slot_of(out.entries[-1]) - slot_of(out.entries[0]) < len(out.entries):
            return  # the slots are contiguous (the common case): no gap to fill
        budget = self.max_call_tokens - out.num_tokens
        longest = max([s.num_tokens for s in out.decode] + [c.end for c in out.prefill], default=0)
        entries: list[Sequence | PrefillChunk | Filler] = []
        last = None
        for entry in out.entries:
            slot = slot_of(entry)
            gap = range(last + 1, slot) if last is not None else range(0)
            if 0 < len(gap) <= min(MAX_FILLED_GAP, budget) and all(
                self._cells_of(s, running) <= min(2 * longest, self.max_seq_len - 2) for s in gap
            ):
                entries += [Filler(s) for s in gap]
                budget -= len(gap)
            entries.append(entry)
            last = slot
        out.entries = entries

    def _cells_of(self, slot_id: int, running: list[Sequence]) -> int:
        """KV cells an idle slot holds: its cached prefix, or a waiting sequence's tokens."""
        for seq in running:
            if seq.slot_id == slot_id:
                return seq.num_computed_tokens
        return len(self.slots.slots[slot_id].cached)


def slot_of(entry: Sequence | PrefillChunk | Filler) -> int:
    if isinstance(entry, Filler):
        return entry.slot_id
    seq = entry.seq if isinstance(entry, PrefillChunk) else entry
    return seq.slot_id or 0
