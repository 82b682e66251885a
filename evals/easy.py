"""The "easy" task family: one-step problems a 135M model can solve, generated from a seed and checked by code.

Kinds: one-step arithmetic, unit conversion, string reversal, and short format-following (a word in capitals).
Each item's gold answer is computed, never written by hand. ``generate(n, seed)`` is deterministic for a seed; the
shipped files ``data/easy/{train,test}.jsonl`` are ``write_split`` of seeds 1 and 2.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = ("apple", "river", "planet", "garden", "window", "silver", "dragon", "pencil", "forest", "candle", "rocket",
         "bridge", "orange", "yellow", "castle", "monkey", "guitar", "winter", "summer", "butter", "ladder", "mirror",
         "pocket", "rabbit", "saddle", "tunnel", "violet", "wallet", "cotton", "marble")
UNITS = (("meters", "centimeters", 100), ("kilograms", "grams", 1000), ("hours", "minutes", 60),
         ("minutes", "seconds", 60), ("kilometers", "meters", 1000), ("days", "hours", 24), ("feet", "inches", 12),
         ("dollars", "cents", 100))
KINDS = ("arithmetic", "unit_conversion", "reverse", "uppercase")


def _item(kind: str, rng: random.Random) -> tuple[str, str]:
    if kind == "arithmetic":
        a, b = rng.randint(2, 60), rng.randint(2, 40)
        op = rng.choice("+-*")
        gold = {"+": a + b, "-": a - b, "*": a * b}[op]
        return f"What is {a} {op} {b}? Answer with the number only.", str(gold)
    if kind == "unit_conversion":
        big, small, factor = rng.choice(UNITS)
        n = rng.randint(2, 12)
        return f"How many {small} are in {n} {big}? Answer with the number only.", str(n * factor)
    word = rng.choice(WORDS)
    if kind == "reverse":
        return f"Reverse the letters of the word '{word}'. Answer with the reversed word only.", word[::-1]
    return f"Write the word '{word}' in capital letters. Answer with that word only.", word.upper()


def generate(n: int, seed: int) -> list[dict]:
    """``n`` items, kinds in turn, as JSONL rows {idx, kind, question, answer}."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        question, answer = _item(kind, rng)
        rows.append({"idx": i, "kind": kind, "question": question, "answer": answer})
    return rows


def write_split(path: str | Path, n: int, seed: int) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("".join(json.dumps(r) + "\n" for r in generate(n, seed)))
    return p


if __name__ == "__main__":  # regenerate the shipped files
    root = Path(__file__).resolve().parent.parent / "data" / "easy"
    write_split(root / "train.jsonl", 400, seed=1)
    write_split(root / "test.jsonl", 400, seed=2)
