"""The held-out text of the KLD measurement, built reproducibly from the local datasets.

The importance matrix is trained on ``evals/calibration.txt`` (GSM8K *train* worked solutions). Measuring KLD on
that same text would favour the imatrix rungs, so ``llama-perplexity --kl-divergence`` reads ``evals/heldout.txt``
instead: the 285 MMLU *dev* questions with their choices and answers (57 subjects; prose and notation) and the 164
HumanEval prompts with their canonical solutions (code), interleaved (two MMLU questions, then one HumanEval
problem) so that the first chunks, all that a short measurement reads, hold both kinds. Neither set is in the
calibration text. MMLU dev is never scored (it supplies few-shot exemplars); HumanEval problems are scored by the
code task, so a KLD on this text overlaps that task's prompts (not its answers' correctness).

    python -m evals.heldout_text ../shared/data            # rewrites evals/heldout.txt, prints its sha256
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

HELDOUT = Path(__file__).parent / "heldout.txt"
SOURCES = ("mmlu/dev.jsonl", "humaneval/HumanEval.jsonl")


def build(data_dir: str | Path) -> str:
    """The held-out text from ``data_dir`` (the layout of ``../shared/data``); raises FileNotFoundError naming the
    missing file."""
    data_dir = Path(data_dir)
    for rel in SOURCES:
        if not (data_dir / rel).is_file():
            raise FileNotFoundError(f"{data_dir / rel}: missing; the held-out text is built from {', '.join(SOURCES)}")
    mmlu, code = [], []
    for line in (data_dir / SOURCES[0]).read_text().splitlines():
        q = json.loads(line)
        choices = "\n".join(f"{'ABCD'[i]}. {c}" for i, c in enumerate(q["choices"]))
        mmlu.append(f"{q['question']}\n{choices}\nAnswer: {'ABCD'[q['answer']]}")
    for line in (data_dir / SOURCES[1]).read_text().splitlines():
        h = json.loads(line)
        code.append(h["prompt"] + h["canonical_solution"])
    parts = []
    for i in range(max(-(-len(mmlu) // 2), len(code))):  # two questions, then one problem, until both run out
        parts += mmlu[2 * i: 2 * i + 2] + code[i: i + 1]
    return "\n\n".join(parts) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m evals.heldout_text DATA_DIR", file=sys.stderr)
        return 2
    text = build(argv[0])
    HELDOUT.write_text(text)
    print(f"{HELDOUT}: {len(text)} characters, sha256 {hashlib.sha256(text.encode()).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
