"""benchmarks/repair_batch_lengths.py reads the padded length of every micro-batch from trl's own dataloader,
grouped per optimizer step as the Trainer does, without training."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import repair_batch_lengths  # noqa: E402


def test_lengths_per_step_from_the_trainers_dataloader(smollm2, tmp_path):
    from transformers import AutoTokenizer

    from repair.pairs import Pair, PairSet

    pairs = [Pair(item_id=f"i{k}", prompt=f"Q{k}: what is {k} + {k}?", chosen=" " + "two " * (k + 1),
                  rejected=" no", source="reference", gold=str(2 * k)) for k in range(5)]
    folder = tmp_path / "pairs"
    PairSet(pairs).save(folder)
    out = tmp_path / "lengths.json"
    rc = repair_batch_lengths.main([str(folder), "--tokenizer-gguf", str(smollm2), "--set", "batch_size=2",
                                    "--set", "grad_accum=2", "--set", "epochs=1", "--out", str(out)])
    assert rc == 0
    steps = json.loads(out.read_text())["steps"]
    # 5 pairs, batch 2 -> micro-batches of 2, 2, 1 pairs (chosen + rejected rows each); grad-accum 2 -> 2 steps
    assert [s["step"] for s in steps] == [1, 2]
    assert sorted(r for s in steps for r, _ in s["micro_batches"]) == [2, 4, 4]
    # every micro-batch is padded to its longest prompt + chosen (+ EOS) row
    tok = AutoTokenizer.from_pretrained(smollm2.parent, gguf_file=smollm2.name)
    longest = max(len(tok(p.prompt + p.chosen)["input_ids"]) for p in pairs)
    assert max(n for s in steps for _, n in s["micro_batches"]) in (longest, longest + 1, longest + 2)


def test_bad_overrides_are_one_line_errors(tmp_path, capsys):
    rc = repair_batch_lengths.main([str(tmp_path), "--tokenizer-gguf", str(tmp_path / "x.gguf"), "--set", "nope=1"])
    assert rc == 2 and "expected KEY=VALUE with KEY one of" in capsys.readouterr().err
