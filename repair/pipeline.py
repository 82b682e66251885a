"""``run_repair(cfg)``: the whole loop, from a reference GGUF to a before/after report.

1. The degraded agent: the reference GGUF quantized to ``cfg.quant`` by llama-quantize. The weights the LoRA is
   trained on: that quantized GGUF dequantized by transformers (``train_on=quantized``: the adapter learns to
   correct the quantization error in place), or the reference's (``train_on=reference``).
2. The degraded agent answers GSM8K *train* items (``evals.runner``); its complete wrong traces are mined.
3. Silver-bullet pairs: reference samples verified by the task's primary filter (then expert; gold rationale
   only when asked).
4. DPO (+ NLL on chosen with ``loss_type=sigmoid,sft``: RPO) + LoRA (trl, peft) within the time budget.
5. Deploy: the adapter as a GGUF LoRA over the unchanged quantized GGUF; merged and requantized.
6. Before / after (each deployment) / reference on held-out test items and MMLU; the report.
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
from quantswarm.loaders import load
from quantswarm.registry import inspect_gguf, resolve_model
from quantswarm.results import new_run_id
from repair.checks import check_failures, check_pairs, check_schedule_for, schedule_warning
from repair.dpo_trainer import dequantize_gguf, train_dpo, train_dtype
from repair.export import export_repaired
from repair.mine import TRAIN_SPLIT, mine_failures
from repair.pairs import ChatTemplate, PairSet, Proposer, build_pairs
from repair.prove import RepairReport, prove, verdict_all
from repair.repair_config import RepairConfig


def _stage(log: Callable[[str], None], n: int, text: str) -> None:
    log(f"== repair {n}/6: {text}")


def degraded_agent(cfg: RepairConfig, reference: Path, stem: str, log: Callable[[str], None]) -> Path:
    """The reference GGUF quantized to ``cfg.quant`` (llama-quantize), cached in out_dir."""
    agent = cfg.out / "models" / f"{stem}-{cfg.quant}.gguf"
    if not agent.exists():
        agent.parent.mkdir(parents=True, exist_ok=True)
        log(f"quantizing {reference.name} to {cfg.quant}")
        quantize(reference, agent, cfg.quant)
    return agent


def training_weights(cfg: RepairConfig, reference: Path, agent: Path, log: Callable[[str], None]) -> Path:
    """HF folder of the weights the LoRA trains on: ``hf_model``, else the quantized agent's (``train_on=
    quantized``) or the reference's GGUF dequantized by transformers (cached in out_dir)."""
    if cfg.hf_model:
        return Path(cfg.hf_model)
    src = agent if cfg.train_on == "quantized" else reference
    dest = cfg.out / f"{cfg.train_on}-hf"
    if (dest / "config.json").exists() and (dest / "model.safetensors").exists():
        return dest
    return dequantize_gguf(src, dest, train_dtype(cfg.precision), log=log)


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
                        replicas=cfg.replicas, n_threads=cfg.n_threads,
                        shared_device=True,  # the campaign proves beside the mining
                        data_dir=cfg.data_root,
                        n_ctx=cfg.n_ctx, n_gpu_layers=cfg.n_gpu_layers, results=cfg.results,
                        max_tokens=cfg.max_tokens or None, run_id=new_run_id("repair-mine")))
    train = task.load_items(cfg.train_items, cfg.seed, data_dir=cfg.data_root, split=TRAIN_SPLIT)
    items = {it.item_id: it for it in load(task.dataset, TRAIN_SPLIT, data_dir=cfg.data_root)}
    failures = [f for f in mine_failures(cfg.results, agent_name, cfg.task, items=items)
                if f.item.item_id in {it.item_id for it in train}]
    log(f"{len(failures)} of {len(train)} train items failed for {agent_name}")
    check_failures(len(failures), len(train), agent_name)
    if cfg.max_tokens:
        task = replace(task, generation=replace(task.generation, max_tokens=cfg.max_tokens))
    engines, proposers, template = [], [], None
    try:
        for name, path in (("reference", str(reference)), ("expert", cfg.expert)):
            if not path:
                continue
            eng = open_engine(str(resolve_model(path)), backend="llama-server", n_ctx=cfg.n_ctx,
                              parallel=cfg.parallel, n_gpu_layers=cfg.n_gpu_layers, seed=cfg.seed,
                              n_threads=cfg.n_threads, **({"replicas": cfg.replicas} if cfg.replicas > 1 else {}))
            engines.append(eng)
            proposers.append(Proposer(name, eng, cfg.samples_k, cfg.sample_temperature, cfg.seed))
        template = ChatTemplate(engines[0].url)  # the reference shares the agent's template and tokenizer
        pairs = build_pairs(failures, task, template, proposers, gold_fallback=cfg.gold_fallback,
                            max_length=cfg.max_length, workers=cfg.parallel * cfg.replicas, log=log)
    finally:
        for eng in engines:
            eng.close()
        if template is not None:
            template.close()
    check_pairs(len(pairs.pairs), len(failures))
    pairs.save(cfg.out / "pairs")
    log(f"pairs: {json.dumps(pairs.summary())} -> {cfg.out / 'pairs'}")
    return pairs


def announce_schedule(cfg: RepairConfig, n_pairs: int, log: Callable[[str], None]) -> None:
    """Refuse a schedule that trains nothing (no step with a learning rate above 0); say how many steps train."""
    sched = check_schedule_for(cfg, n_pairs)
    log(sched.describe())
    warning = schedule_warning(sched)
    if warning:
        log(warning)


def run_repair(cfg: RepairConfig, log: Callable[[str], None] = print) -> RepairReport:
    """Mine, pair, train, export and prove; writes everything under ``cfg.out_dir`` and returns the report."""
    t0 = time.monotonic()
    reference = resolve_model(cfg.agent)
    info = inspect_gguf(reference)
    stem = reference.name.removesuffix(".gguf")
    names = {"before": f"{stem}@{cfg.quant}", "after_lora": f"{stem}-repaired-lora@{cfg.quant}",
             "after_merged": f"{stem}-repaired-merged@{cfg.quant}", "reference": f"{stem}@{info.file_type}"}
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "repair_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")

    _stage(log, 1, f"the degraded agent ({cfg.quant}) and the weights to train on ({cfg.train_on})")
    agent = degraded_agent(cfg, reference, stem, log)
    base_dir = training_weights(cfg, reference, agent, log)

    _stage(log, 2, f"mining {names['before']} failures on {cfg.train_items} train items; building pairs")
    pairs = mine_and_pair(cfg, names["before"], agent, reference, log)

    _stage(log, 3, f"DPO + LoRA on {len(pairs.pairs)} pairs (budget {cfg.max_minutes:g} min)")
    announce_schedule(cfg, len(pairs.pairs), log)
    train = train_dpo(cfg, pairs, base_dir, cfg.out / "adapter", log=log)
    train.save(cfg.out / "train_result.json")

    _stage(log, 4, f"deploy: {cfg.deploy}")
    files = export_repaired(base_dir, cfg.out / "adapter", cfg.out / "export", stem, cfg.quant,
                            merged=cfg.deploy in ("merged", "both"), log=log)

    _stage(log, 5, f"before / after / reference on {cfg.eval_items} test items and {cfg.mmlu_items} MMLU items")
    models: dict[str, tuple] = {"before": (names["before"], str(agent))}
    if cfg.deploy in ("lora", "both"):
        models["after_lora"] = (names["after_lora"], str(agent), str(files["lora"]))
    if cfg.deploy in ("merged", "both"):
        models["after_merged"] = (names["after_merged"], str(files["quant"]))
    models["reference"] = (names["reference"], str(reference))
    gsm, mmlu = prove(cfg, models, new_run_id("repair-prove"), log=log)

    _stage(log, 6, "report")
    report = RepairReport(
        agent=stem, quant=cfg.quant, models={r: " + ".join(m[1:]) for r, m in models.items()}, gsm8k=gsm, mmlu=mmlu,
        pairs=pairs.summary(), training={k: v for k, v in asdict(train).items()},
        files={"pairs": str(cfg.out / "pairs"), "adapter": str(cfg.out / "adapter"), "results": cfg.results,
               **{k: str(v) for k, v in files.items()}},
        verdict=verdict_all(gsm, mmlu))
    js, md = report.save(cfg.out)
    write_summary(report, cfg, cfg.out / "summary.json")
    log(report.verdict)
    log(f"report: {md} ({time.monotonic() - t0:.0f}s in all)")
    return report


def write_summary(report: RepairReport, cfg: RepairConfig, path: Path, gpu: str | None = None,
                  date: str | None = None, data_dir: str | None = None, settings_from_cfg: bool = True) -> dict:
    """``summary.json``: the headline per deployment, and at top level the best deployment: among those proven on
    every GSM8K item, the one whose after-before CI has the highest lower bound. ``gpu``, ``date`` and
    ``data_dir`` default to this machine's device, today and ``cfg``'s data folder (give them for rows measured
    elsewhere); a deployment's loss type, beta and
    learning rate come from ``report.training`` and, with ``settings_from_cfg``, else from ``cfg`` (else None)."""
    from quantswarm.energy import device_label

    deploys = {}
    for d, c in report.gsm8k.items():
        m = report.mmlu.get(d)
        trained = report.training.get(d.removeprefix("after_").rsplit("_", 1)[0], {})  # rpo_lora -> rpo
        settings = {k: trained.get(k, getattr(cfg, k) if settings_from_cfg else None)
                    for k in ("loss_type", "beta", "learning_rate")}
        deploys[d.removeprefix("after_")] = {
            "gap_recovered": c.share_recovered, "gap_recovered_ci": c.share_ci, "gsm8k_delta": c.delta,
            "gsm8k_delta_ci": c.delta_ci, "mcnemar_p": c.mcnemar_p, "accuracy": c.accuracy,
            "gap": c.gap, "gap_ci": c.gap_ci, "over_reference": c.over_reference,
            "over_reference_ci": c.over_reference_ci,
            "mmlu_delta": m.delta if m else None, "mmlu_delta_ci": m.delta_ci if m else None,
            "mmlu_accuracy": m.accuracy if m else None, "n_gsm8k": c.items, "n_mmlu": m.items if m else 0,
            **settings}
    full = max((v["n_gsm8k"] for v in deploys.values()), default=0)
    best = max((d for d in deploys if deploys[d]["n_gsm8k"] == full),
               key=lambda d: deploys[d]["gsm8k_delta_ci"][0], default=None)
    top = deploys[best] if best else {}
    summary = {
        "agent": f"{report.agent}@{report.quant}", "deploy": best,
        **{k: top[k] for k in ("gap_recovered", "gap_recovered_ci", "mmlu_delta") if k in top},
        "train_seconds": report.training.get("seconds") if "seconds" in report.training else
        {k: v.get("seconds") for k, v in report.training.items() if isinstance(v, dict)},
        "n_gsm8k": top.get("n_gsm8k", 0), "n_mmlu": top.get("n_mmlu", 0),
        "pairs_by_source": report.pairs.get("by_source", {}), "train_on": cfg.train_on,
        **{k: top.get(k) for k in ("loss_type", "beta", "learning_rate")},
        "data_dir": data_dir or cfg.data_dir or "(loaders' default)", "gpu": gpu or device_label(),
        "date": date or time.strftime("%Y-%m-%d"), "deploys": deploys,
    }
    path.write_text(json.dumps(summary, indent=2, default=float) + "\n")
    return summary
