"""How long the scheduler takes to ask the free slots what they hold (CPU only, no model).

python benchmarks/prefix_bench.py [--slots 64] [--prefix 1000] [--history 8000] [--repeat 10]

Times `SlotTable.cached_len` for a queue of `--slots` waiting prompts against as many free slots,
which is what ranking the queue costs in one step while slots are free (the scheduler asks again
for the head's budget and in `acquire`). The cases:
- shared prefix: every prompt and every slot shares a `--prefix`-token system prompt;
- distinct: nothing shared;
- short header: a 20-token chat-template header shared, then `--prefix` distinct tokens;
- follow-ups: prompt i continues the `--history`-token conversation slot i holds.
Token ids are fresh ints, as the tokenizer returns them: list comparisons then cannot shortcut
on identity.
"""

from __future__ import annotations

import argparse
import random
import time

from batching.slots import SlotTable


def fresh(tokens: list[int]) -> list[int]:
    return [int(str(t)) for t in tokens]


def time_ranking(held: list[list[int]], prompts: list[list[int]], repeat: int) -> float:
    """Milliseconds to ask for every prompt's cached length once, with the free slots holding
    `held` (one token list per slot)."""
    table = SlotTable(len(held))
    for _ in held:
        table.acquire([])
    for slot_id, tokens in enumerate(held):
        table.release(slot_id, tokens)
    start = time.perf_counter()
    for _ in range(repeat):
        for prompt in prompts:
            table.cached_len(prompt)
    return (time.perf_counter() - start) / repeat * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--slots", type=int, default=64)
    ap.add_argument("--prefix", type=int, default=1000, help="shared prefix length in tokens")
    ap.add_argument("--history", type=int, default=8000, help="follow-ups' history in tokens")
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    rng = random.Random(0)
    n = args.slots

    def draw(k: int) -> list[int]:
        return [rng.randrange(32000) for _ in range(k)]

    prefix, header = draw(args.prefix), draw(20)
    histories = [draw(args.history) for _ in range(n)]
    cases = {
        f"shared {args.prefix}-token prefix": (
            [fresh(prefix) + draw(160) for _ in range(n)],
            [fresh(prefix) + draw(32) for _ in range(n)],
        ),
        "distinct": (
            [draw(args.prefix + 160) for _ in range(n)],
            [draw(args.prefix + 32) for _ in range(n)],
        ),
        "short header": (
            [fresh(header) + draw(args.prefix + 160) for _ in range(n)],
            [fresh(header) + draw(args.prefix + 32) for _ in range(n)],
        ),
        f"follow-ups of {args.history}": (histories, [fresh(h) + draw(50) for h in histories]),
    }
    for name, (held, prompts) in cases.items():
        ms = time_ranking(held, prompts, args.repeat)
        print(f"{name:28s} {n} waiting x {n} free slots: {ms:7.2f} ms", flush=True)


if __name__ == "__main__":
    main()
