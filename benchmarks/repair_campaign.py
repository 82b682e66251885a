"""DPO repair campaign: run the whole loop with a preset and keep the small artifacts in git.

    .venv/bin/python benchmarks/repair_campaign.py cpu          # SmolLM2-135M Q4_1 -> Q2_K, tiny counts
    .venv/bin/python benchmarks/repair_campaign.py gpu --agent qwen2.5-coder-0.5b-instruct-f16.gguf
    ... gpu --agent ... --name repair-gpu-B --set beta=0.3 --set learning_rate=2e-4   # a second configuration

Big files (GGUFs, HF weights, adapter) stay in ``runs/<name>`` (default name: ``repair-<preset>``); the report,
pair summary, pairs, training log and config are copied to ``benchmarks/results/<name>/``.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from quantswarm.errors import ConfigError  # noqa: E402
from repair.pipeline import run_repair  # noqa: E402
from repair.repair_config import RepairConfig, field_overrides  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PRESETS = {
    # 2-core CPU: prove the loop end to end, not the effect
    "cpu": dict(agent=str(Path.home() / ".cache/quantswarm/models/smollm2-135m-instruct-q4_1.gguf"), quant="Q2_K",
                train_items=4, eval_items=3, mmlu_items=3, samples_k=1, max_tokens=48, batch_size=2, grad_accum=1,
                max_steps=2, warmup_ratio=0.0, max_length=512, max_minutes=4, backend="llama-cpp-python", parallel=1),
    # one H100: the real-sized run (a strongly degraded 0.5B agent, a few hundred pairs, <= 5 min of DPO)
    # (all 1000 GSM8K test items: a gap of a few points needs that many for a paired CI that can see half of it)
    "gpu": dict(quant="Q2_K", train_items=400, eval_items=1000, mmlu_items=400, samples_k=2, batch_size=8,
                grad_accum=2, max_length=768, max_minutes=4, backend="llama-server", parallel=16, n_ctx=2048),
}
KEEP = ("report.md", "report.json", "train_result.json", "repair_config.json", "pairs/pairs_summary.json",
        "pairs/pairs.jsonl")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("preset", choices=sorted(PRESETS))
    ap.add_argument("--agent", help="GGUF at reference precision (overrides the preset)")
    ap.add_argument("--hf-model", default="", help="HF folder of the reference weights, if at hand")
    ap.add_argument("--name", default="", help="runs/<name> and benchmarks/results/<name> (default: repair-<preset>)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override one RepairConfig field (repeatable), e.g. --set beta=0.3")
    args = ap.parse_args()
    name = args.name or f"repair-{args.preset}"
    settings = dict(PRESETS[args.preset], out_dir=str(REPO / "runs" / name))
    try:
        settings.update(field_overrides(args.set))
    except ConfigError as exc:
        ap.error(str(exc))
    if args.agent:
        settings["agent"] = args.agent
    if args.hf_model:
        settings["hf_model"] = args.hf_model
    if "agent" not in settings:
        ap.error("--agent is required for this preset")
    cfg = RepairConfig(**settings)
    run_repair(cfg)
    dest = REPO / "benchmarks" / "results" / name
    dest.mkdir(parents=True, exist_ok=True)
    for rel in KEEP:
        src = cfg.out / rel
        if src.exists():
            shutil.copy2(src, dest / Path(rel).name)
    print(f"kept {', '.join(KEEP)} in {dest}")


if __name__ == "__main__":
    main()
