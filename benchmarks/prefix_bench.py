"""How long the scheduler takes to ask the free slots what they hold (CPU only, no model).

python benchmarks/prefix_bench.py [--slots 64] [--prefix 1000] [--repeat 20]

Times `SlotTable.cached_len` for a queue of `--slots` waiting prompts against as many free slots,
which is what ranking the queue costs in one step while slots are free (the scheduler asks again
for the head's budget and for `acquire`). Two cases: every prompt and every slot shares a long
prefix (a system prompt, the worst case), and distinct prompts. Token ids are fresh ints, as
the tokenizer returns them: list comparisons then cannot shortcut on identity.
"""

from __future__ import annotations

import argparse
import random
import time

from batching.slots import SlotTable


def fresh(tokens: list[int]) -> list[int]:
    return [int(str(t)) for t in tokens]


def time_ranking(table: SlotTable, prompts: list[list[int]], repeat: int) -> float:
    """Milliseconds to ask for every prompt's cached length once."""
    start = time.perf_counter()
    for _ in range(repeat):
        for prompt in prompts:
            table.cached_len(prompt)
    return (time.perf_counter() - start) / repeat * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--slots", type=int, default=64)
    ap.add_argument("--prefix", type=int, default=1000, help="shared prefix length in tokens")
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    rng = random.Random(0)
    prefix = [rng.randrange(32000) for _ in range(args.prefix)]
    table = SlotTable(args.slots)
    for _ in range(args.slots):
        table.acquire([])
    for slot_id in range(args.slots):
        table.release(slot_id, fresh(prefix) + [rng.randrange(32000) for _ in range(160)])
    shared = [fresh(prefix) + [rng.randrange(32000) for _ in range(32)] for _ in range(args.slots)]
    distinct = [[rng.randrange(32000) for _ in range(args.prefix + 32)] for _ in range(args.slots)]
    n = args.slots
    for name, prompts in ((f"shared {args.prefix}-token prefix", shared), ("distinct", distinct)):
        ms = time_ranking(table, prompts, args.repeat)
        print(f"{name:28s} {n} waiting x {n} free slots: {ms:7.2f} ms", flush=True)


if __name__ == "__main__":
    main()
