"""Which padded sequence length did each optimizer step of a repair training feed attention? (CPU, seconds)

Builds ``repair.dpo_trainer``'s trl ``DPOTrainer`` (same ``RepairConfig`` batch, accumulation, epochs, max_length
and seed, so the same data order and padding) over a tiny random Qwen2 model that carries the real tokenizer, and
reads the shape of every micro-batch's ``input_ids`` from the trainer's own dataloader (no training). Used to test
a training failure against torch's cuDNN attention bug (NaN query gradients when the masked sequence length is 64
past a multiple of 128, pytorch/pytorch#196678): which steps had such a length.

    python benchmarks/repair_batch_lengths.py PAIRS_DIR --tokenizer-gguf MODEL.gguf [--set batch_size=8 ...]

Prints one line per optimizer step (its micro-batches' (rows, length) and length % 128) and writes
``--out`` (JSON) when given.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from quantswarm.errors import QuantswarmError  # noqa: E402
from repair.pairs import PairSet  # noqa: E402
from repair.repair_config import RepairConfig, field_overrides  # noqa: E402

# the H200 campaign's repair training (benchmarks/gpu_campaign.py, RPO variant)
CAMPAIGN = {"loss_type": "sigmoid,sft", "beta": 0.1, "learning_rate": 5e-5, "epochs": 2.0, "batch_size": 8,
            "grad_accum": 2, "max_length": 1024, "warmup_ratio": 0.1, "seed": 0}


def tiny_base(tokenizer_gguf: Path, dest: Path) -> Path:
    """A 1-layer random Qwen2 with the GGUF's tokenizer, saved as an HF folder."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_gguf.parent, gguf_file=tokenizer_gguf.name)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                         max_position_embeddings=4096, tie_word_embeddings=True))
    model.save_pretrained(dest)
    tok.save_pretrained(dest)
    return dest


def step_lengths(cfg: RepairConfig, pairs: PairSet, base: Path, work: Path) -> list[dict]:
    """[{step, epoch, micro_batches: [[rows, length], ...]}] in training order: the trainer's own train dataloader
    (accelerate's seedable sampler: the order depends on the seed and the epoch only), its micro-batches grouped
    by ``grad_accum`` per optimizer step as ``Trainer`` does; trl's preference collator right-pads chosen and
    rejected rows to the longest, and that ``input_ids`` tensor is what the model's attention gets."""
    import math

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOTrainer

    from repair.dpo_trainer import dpo_args, lora_config

    data = pairs.to_dataset().select_columns(["prompt", "chosen", "rejected"])
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(base), ref_model=None, args=dpo_args(cfg, work),
                         train_dataset=data, processing_class=AutoTokenizer.from_pretrained(base),
                         peft_config=lora_config(cfg))
    loader = trainer.get_train_dataloader()
    out, step = [], 0
    for epoch in range(math.ceil(cfg.epochs)):
        loader.set_epoch(epoch)
        shapes = [list(batch["input_ids"].shape) for batch in loader]
        for i in range(0, len(shapes), cfg.grad_accum):
            step += 1
            out.append({"step": step, "epoch": epoch, "micro_batches": shapes[i:i + cfg.grad_accum]})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pairs", type=Path, help="folder with pairs.jsonl and pairs_summary.json")
    ap.add_argument("--tokenizer-gguf", type=Path, required=True, help="GGUF whose tokenizer the training used")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a RepairConfig training field (default: the H200 campaign's)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    try:
        over = CAMPAIGN | field_overrides(args.set)
        cfg = replace(RepairConfig(agent=str(args.tokenizer_gguf), precision="fp32", attention="eager"), **over)
        if not args.tokenizer_gguf.is_file():
            raise QuantswarmError(f"no GGUF at {args.tokenizer_gguf}")
        pairs = PairSet.load(args.pairs)
    except (QuantswarmError, OSError, ValueError, TypeError) as exc:
        print(f"repair_batch_lengths: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        base = tiny_base(args.tokenizer_gguf, Path(tmp) / "base")
        steps = step_lengths(cfg, pairs, base, Path(tmp) / "work")
    for s in steps:
        marks = ", ".join(f"{r}x{n} (%128 = {n % 128}{' <- cuDNN bug length' if n % 128 == 64 else ''})"
                          for r, n in s["micro_batches"])
        print(f"step {s['step']:3d}: {marks}")
    if args.out:
        args.out.write_text(json.dumps({"config": over, "pairs": len(pairs.pairs), "steps": steps}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
