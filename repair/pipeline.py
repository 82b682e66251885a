"""``run_repair(cfg)``: the whole loop, from a reference GGUF to a before/after report.

1. Reference HF weights (``--hf-model``, or the agent GGUF dequantized by transformers), converted
   to an F16 GGUF and quantized to ``cfg.quant``: the degraded agent. The repaired model later takes
   the same path (HF -> F16 -> quant), so before and after differ only by the adapter.
2. The degraded agent answers GSM8K *train* items (``evals.runner``); its failures are mined.
3. Silver-bullet pairs: reference samples (then expert, then gold rationale), all verified.
4. DPO + LoRA (trl, peft) within the time budget.
5. Merge, convert, requantize; GGUF LoRA as well.
6. Before / after / reference on held-out test items and MMLU; the report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

from evals.eval_config import EvalConfig
from evals.ladder import quantize
from evals.runner import run_eval
from evals.task import load_task
from quantswarm.engine import open_engine
from quantswarm.errors import QuantswarmError
from quantswarm.loaders import load
from quantswarm.registry import inspect_gguf, resolve_model
from quantswarm.results import new_run_id
from repair.dpo_trainer import reference_hf, train_dpo
from repair.export import export_repaired, hf_to_gguf
from repair.mine import TRAIN_SPLIT, mine_failures
from repair.pairs import ChatTemplate, PairSet, Proposer, build_pairs
from repair.prove import RepairReport, prove, verdict
from repair.repair_config import RepairConfig


def _stage(log: Callable[[str], None], n: int, text: str) -> None:
    log(f"== repair {n}/6: {text}")


def degraded_agent(cfg: RepairConfig, base_dir: Path, stem: str, log: Callable[[str], None]) -> tuple[Path, Path]:
    """(F16 GGUF of the reference HF weights, that file quantized to ``cfg.quant``), cached in out_dir."""
    models = cfg.out / "models"
    f16 = models / f"{stem}-F16.gguf"
    if not f16.exists():
        hf_to_gguf(base_dir, f16, "f16", log=log)
    agent = models / f"{stem}-{cfg.quant}.gguf"
    if not agent.exists():
        log(f"quantizing {f16.name} to {cfg.quant}")
        quantize(f16, agent, cfg.quant)
    return f16, agent


def mine_and_pair(cfg: RepairConfig, agent_name: str, agent: Path, reference: Path,
                  log: Callable[[str], None]) -> PairSet:
    """Evaluate the degraded agent on train items, mine its failures, build and save verified pairs.

    Pairs already saved in ``<out_dir>/pairs`` (by an earlier run, or copied there to try another training
    configuration on the same pairs) are reused; delete that folder to rebuild them.
    """
    if (cfg.out / "pairs" / "pairs.jsonl").exists():
        pairs = PairSet.load(cfg.out / "pairs")
        log(f"reusing {len(pairs.pairs)} pairs from {cfg.out / 'pairs'} (delete it to mine and pair again)")
        return pairs
    task = load_task(cfg.task)
    run_eval(EvalConfig(models=[f"{agent_name}={agent}"], tasks=[cfg.task], limit=cfg.train_items,
                        split=TRAIN_SPLIT, seed=cfg.seed, backend=cfg.backend, parallel=cfg.parallel,
                        data_dir=cfg.data_root,
                        n_ctx=cfg.n_ctx, n_gpu_layers=cfg.n_gpu_layers, results=cfg.results,
                        max_tokens=cfg.max_tokens or None, run_id=new_run_id("repair-mine")))
    train = task.load_items(cfg.train_items, cfg.seed, data_dir=cfg.data_root, split=TRAIN_SPLIT)
    items = {it.item_id: it for it in load(task.dataset, TRAIN_SPLIT, data_dir=cfg.data_root)}
    failures = [f for f in mine_failures(cfg.results, agent_name, cfg.task, items=items)
                if f.item.item_id in {it.item_id for it in train}]
    log(f"{len(failures)} of {len(train)} train items failed for {agent_name}")
    if not failures:
        raise QuantswarmError(f"{agent_name} answered all {len(train)} train items correctly: nothing to repair; "
                              "raise --train-items or pick a lower --quant")
    if cfg.max_tokens:
        task = replace(task, generation=replace(task.generation, max_tokens=cfg.max_tokens))
    template = ChatTemplate(agent)
    engines, proposers = [], []
    try:
        for name, path in (("reference", str(reference)), ("expert", cfg.expert)):
            if not path:
                continue
            eng = open_engine(str(resolve_model(path)), backend=cfg.backend, n_ctx=cfg.n_ctx, parallel=cfg.parallel,
                              n_gpu_layers=cfg.n_gpu_layers, seed=cfg.seed)
            engines.append(eng)
            proposers.append(Proposer(name, eng, cfg.samples_k, cfg.sample_temperature, cfg.seed))
        pairs = build_pairs(failures, task, template, proposers, gold_fallback=cfg.gold_fallback,
                            max_length=cfg.max_length, workers=cfg.parallel, log=log)
    finally:
        for eng in engines:
            eng.close()
        template.close()
    pairs.save(cfg.out / "pairs")
    log(f"pairs: {json.dumps(pairs.summary())} -> {cfg.out / 'pairs'}")
    return pairs


def run_repair(cfg: RepairConfig, log: Callable[[str], None] = print) -> RepairReport:
    """Mine, pair, train, export and prove; writes everything under ``cfg.out_dir`` and returns the report."""
    t0 = time.monotonic()
    reference = resolve_model(cfg.agent)
    info = inspect_gguf(reference)
    stem = reference.name.removesuffix(".gguf")
    names = {"before": f"{stem}@{cfg.quant}", "after": f"{stem}-repaired@{cfg.quant}",
             "reference": f"{stem}@{info.file_type}"}
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "repair_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")

    _stage(log, 1, f"reference weights and the degraded agent ({cfg.quant})")
    base_dir = reference_hf(cfg, reference, log=log)
    _, agent = degraded_agent(cfg, base_dir, stem, log)

    _stage(log, 2, f"mining {names['before']} failures on {cfg.train_items} train items; building pairs")
    pairs = mine_and_pair(cfg, names["before"], agent, reference, log)

    _stage(log, 3, f"DPO + LoRA on {len(pairs.pairs)} pairs (budget {cfg.max_minutes:g} min)")
    train = train_dpo(cfg, pairs, base_dir, cfg.out / "adapter", log=log)
    train.save(cfg.out / "train_result.json")

    _stage(log, 4, "merge, convert to GGUF, requantize; GGUF LoRA")
    files = export_repaired(base_dir, cfg.out / "adapter", cfg.out / "export", stem, cfg.quant, log=log)

    _stage(log, 5, f"before / after / reference on {cfg.eval_items} test items and {cfg.mmlu_items} MMLU items")
    models = {"before": (names["before"], str(agent)), "after": (names["after"], str(files["quant"])),
              "reference": (names["reference"], str(reference))}
    gsm, mmlu = prove(cfg, models, new_run_id("repair-prove"), log=log)

    _stage(log, 6, "report")
    report = RepairReport(
        agent=stem, quant=cfg.quant, models={r: p for r, (_, p) in models.items()}, gsm8k=gsm, mmlu=mmlu,
        pairs=pairs.summary(), training={k: v for k, v in asdict(train).items()},
        files={"pairs": str(cfg.out / "pairs"), "adapter": str(cfg.out / "adapter"), "results": cfg.results,
               **{k: str(v) for k, v in files.items()}},
        verdict=verdict(gsm, mmlu))
    js, md = report.save(cfg.out)
    log(report.verdict)
    log(f"report: {md} ({time.monotonic() - t0:.0f}s in all)")
    return report
