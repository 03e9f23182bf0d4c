"""How llama.cpp cuts one llama_decode batch into ubatches, each a full pass over the weights.

With a KV stream per sequence (kv_unified off) llama.cpp splits with split_equal(n_ubatch,
sequential=true): a ubatch gathers sequences whose ids follow each other in batch order
(seq_id == previous + 1) and takes the same number of tokens from each, at most n_ubatch in
all. A decode step whose sequences are not in consecutive slot order therefore runs one pass
per run of consecutive ids. With one unified stream it cuts the batch into n_ubatch pieces.
"""

from __future__ import annotations


def count_ubatches(runs: list[tuple[int, int]], n_ubatch: int, sequential: bool) -> int:
    """Ubatches of a batch given as (seq_id, n_tokens) runs in batch order, one per sequence."""
    return len(ubatch_sizes(runs, n_ubatch, sequential))


def ubatch_sizes(runs: list[tuple[int, int]], n_ubatch: int, sequential: bool) -> list[int]:
    """Token counts of the ubatches llama.cpp cuts that batch into, in order."""
    if not sequential:
        total = sum(n for _, n in runs)
        return [min(n_ubatch, total - start) for start in range(0, total, n_ubatch)]
    left = [[seq_id, n] for seq_id, n in runs if n > 0]
    sizes = []
    while left:
        group = [left[0]]
        for run in left[1:]:
            if run[0] == group[-1][0] + 1:
                group.append(run)
                if len(group) > n_ubatch:
                    break
        rounds = min(min(n for _, n in group), max(1, n_ubatch // len(group)))
        for run in group:
            run[1] -= rounds
        left = [run for run in left if run[1] > 0]
        sizes.append(rounds * len(group))
    return sizes
