"""Prove the repair: before (degraded), after (repaired, same quant) and reference on held-out items.

The three models are evaluated by ``evals.runner.run_eval`` on GSM8K *test* items and an MMLU
sample; every number here is derived from those results-table rows. The headline is the share of
the reference-vs-degraded gap that the repair recovers, with a paired bootstrap CI over items
(the same resampled items for all three models), plus an exact McNemar test of before vs after.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from evals.eval_config import EvalConfig
from evals.runner import run_eval
from evals.stats import paired
from evals.task import load_task
from quantswarm.errors import QuantswarmError
from quantswarm.results import ResultsTable
from repair.repair_config import RepairConfig

ROLES = ("before", "after", "reference")  # compare() reads these three columns (after = one deployment)
BASELINES = ("before", "reference")  # every other role of prove() is a deployment of a repaired agent


@dataclass
class Comparison:
    """Paired accuracies of before/after/reference on one task's common items."""

    task: str
    items: int
    accuracy: dict[str, float]  # role -> accuracy
    delta: float  # after - before
    delta_ci: tuple[float, float]
    gap: float  # reference - before
    share_recovered: float | None  # delta / gap (None when the reference is not better)
    share_ci: tuple[float, float] | None
    mcnemar_p: float  # exact, before vs after
    discordant: tuple[int, int]  # (before wrong & after right, before right & after wrong)
    gap_ci: tuple[float, float] = (float("nan"), float("nan"))  # reference - before, paired bootstrap
    over_reference: float = float("nan")  # after - reference
    over_reference_ci: tuple[float, float] = (float("nan"), float("nan"))  # paired bootstrap


@dataclass
class RepairReport:
    """The before/after report of one repair run."""

    agent: str
    quant: str
    models: dict[str, str]  # role -> GGUF path (+ LoRA)
    gsm8k: dict[str, Comparison]  # deployment (after_lora | after_merged) -> comparison
    mmlu: dict[str, Comparison]
    pairs: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    verdict: str = ""

    def save(self, folder: str | Path) -> tuple[Path, Path]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        js, md = folder / "report.json", folder / "report.md"
        js.write_text(json.dumps(asdict(self), indent=2, default=str) + "\n")
        md.write_text(self.markdown())
        return js, md

    def markdown(self) -> str:
        lines = [f"# DPO repair of {self.agent} at {self.quant}", "", self.verdict, "",
                 "| deploy | task | items | before | after | reference | after-before (95% CI) | gap recovered (95% CI)"
                 " | McNemar p | reference-before (95% CI) | after-reference (95% CI) |",
                 "|---|---|---|---|---|---|---|---|---|---|---|"]
        for deploy, c in [*self.gsm8k.items(), *self.mmlu.items()]:
            share = "n/a (reference not better)" if c.share_recovered is None else f"{c.share_recovered:+.1%}"
            if c.share_ci is not None:
                share += f" ({c.share_ci[0]:+.1%}, {c.share_ci[1]:+.1%})"
            elif c.share_recovered is not None:
                share += " (no CI: the gap's CI reaches 0)"
            lines.append(f"| {deploy} | {c.task} | {c.items} | {c.accuracy['before']:.1%} | "
                         f"{c.accuracy['after']:.1%} | "
                         f"{c.accuracy['reference']:.1%} | {c.delta:+.1%} ({c.delta_ci[0]:+.1%}, "
                         f"{c.delta_ci[1]:+.1%}) | {share} | {c.mcnemar_p:.3g} | {_with_ci(c.gap, c.gap_ci)} | "
                         f"{_with_ci(c.over_reference, c.over_reference_ci)} |")
        lines += ["", f"Pairs: {json.dumps(self.pairs)}", "",
                  f"Training: {json.dumps({k: v for k, v in self.training.items() if k != 'history'})}", ""]
        lines += [f"- {k}: `{v}`" for k, v in self.files.items()]
        return "\n".join(lines) + "\n"


def outcomes(table: ResultsTable, task: str, models: dict[str, tuple], item_ids: list[str],
             split: str = "test") -> pd.DataFrame:
    """Item × role table of primary-filter correctness on ``item_ids`` (those every model answered).

    ``models`` maps role -> (agent name, GGUF path[, GGUF LoRA]); rows are matched on agent *and* file hashes,
    so a rerun with a retrained model never mixes in the old file's rows. A path of ``None`` (the files are
    gone, e.g. a device run's rows brought back alone) matches the agent's rows of its one file; rows of
    several files under that agent are an error.
    """
    from evals.runner import model_identity

    cols = {}
    for role, (agent, path, *lora) in models.items():
        sha = None if path is None else model_identity(path, (lora or [None])[0])
        rows = table.read(agent=agent, task=task, split=split, **({"model_sha": sha} if sha else {}))
        if sha is None and rows["model_sha"].nunique() > 1:
            raise QuantswarmError(f"{agent} has rows of {rows['model_sha'].nunique()} model files on {task} in "
                                  f"{table.path}; name its GGUF so the rows can be told apart")
        rows = rows[rows["primary"] & rows["item_id"].isin(item_ids)]
        rows = rows.sort_values("timestamp").groupby("item_id").tail(1)
        if rows.empty:
            raise QuantswarmError(f"no {split} rows for {agent} on {task} in {table.path}")
        cols[role] = rows.set_index("item_id")["correct"].astype(bool)
    frame = pd.DataFrame(cols).dropna()
    if frame.empty:
        raise QuantswarmError(f"{', '.join(a for a, *_ in models.values())} answered no {task} item in common "
                              f"in {table.path}")
    return frame.astype(bool).sort_index()


def compare(frame: pd.DataFrame, task: str, n_boot: int = 2000, seed: int = 0, after: str = "after") -> Comparison:
    """Accuracies, after-before (evals.stats.paired: bootstrap CI, McNemar), share of the gap recovered;
    ``after`` names the column of the repaired deployment."""
    frame = frame.rename(columns={after: "after"})
    x = {r: frame[r].to_numpy(dtype=float) for r in ROLES}
    n = len(frame)
    acc = {r: float(x[r].mean()) for r in ROLES}
    d = paired(frame["before"].to_numpy(bool), frame["after"].to_numpy(bool), n_boot=n_boot, seed=seed)
    delta, gap = acc["after"] - acc["before"], acc["reference"] - acc["before"]
    # the gap, the share and after - reference need all three models resampled on the same items: one joint
    # paired bootstrap over items
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    boot = {r: x[r][idx].mean(axis=1) for r in ROLES}
    d_boot, g_boot = boot["after"] - boot["before"], boot["reference"] - boot["before"]
    share = share_ci = None
    if gap > 0:
        share = delta / gap
        # the ratio's percentile interval is a 95% CI only where (nearly) every resample has a gap: when the gap's
        # own CI reaches 0, some resamples divide by <= 0 and the interval is undefined (None)
        if (g_boot > 0).mean() >= 0.975:
            ok = g_boot > 0
            ratios = d_boot[ok] / g_boot[ok]
            share_ci = (float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5)))
    return Comparison(task, n, acc, delta, (d.low, d.high), gap, share, share_ci, d.p_mcnemar,
                      (d.wrong_to_right, d.right_to_wrong), _ci(g_boot), acc["after"] - acc["reference"],
                      _ci(boot["after"] - boot["reference"]))


def _with_ci(value: float, ci: tuple[float, float]) -> str:
    return f"{value:+.1%} ({ci[0]:+.1%}, {ci[1]:+.1%})"


def _ci(samples: np.ndarray) -> tuple[float, float]:
    return float(np.percentile(samples, 2.5)), float(np.percentile(samples, 97.5))


def verdict_all(gsm: dict[str, Comparison], mmlu: dict[str, Comparison]) -> str:
    """One honest sentence per deployment."""
    return " ".join(f"[{d}] " + verdict(c, mmlu.get(d)) for d, c in gsm.items())


def verdict(gsm: Comparison, mmlu: Comparison | None) -> str:
    """One honest sentence on what the numbers show (and do not show)."""
    if gsm.share_recovered is None:
        head = (f"No gap to recover on {gsm.task}: the reference scored {gsm.accuracy['reference']:.1%} vs "
                f"{gsm.accuracy['before']:.1%} for the degraded agent on {gsm.items} items.")
    else:
        sig = "significant" if gsm.delta_ci[0] > 0 else "not significant"
        ci = (f"95% CI {gsm.share_ci[0]:+.0%} to {gsm.share_ci[1]:+.0%}" if gsm.share_ci else
              f"no CI: the gap's own 95% CI, {gsm.gap_ci[0]:+.1%} to {gsm.gap_ci[1]:+.1%}, reaches 0")
        head = (f"The repair recovered {gsm.share_recovered:+.0%} of the {gsm.gap:.1%} gap on {gsm.task} "
                f"({ci}; after-before {gsm.delta:+.1%}, {sig}, {gsm.items} items).")
        if gsm.share_ci is None:
            head += " The gap is not significant, so its share is a poor yardstick."
    if gsm.over_reference_ci[0] > 0:
        head += (f" The repaired agent beats the reference by {gsm.over_reference:+.1%} (95% CI "
                 f"{gsm.over_reference_ci[0]:+.1%} to {gsm.over_reference_ci[1]:+.1%}): the training taught the "
                 "task, it did not only undo the quantization.")
    if mmlu is not None:
        head += (f" MMLU: {mmlu.accuracy['before']:.1%} -> {mmlu.accuracy['after']:.1%} "
                 f"({mmlu.delta:+.1%}, 95% CI {mmlu.delta_ci[0]:+.1%} to {mmlu.delta_ci[1]:+.1%}, "
                 f"{mmlu.items} items).")
    return head


def proof_limits(cfg: RepairConfig) -> dict[str, int]:
    """Task -> held-out items of the proof: ``cfg.eval_items`` of ``cfg.task``, ``cfg.mmlu_items`` of MMLU."""
    return {cfg.task: cfg.eval_items, **({cfg.mmlu_task: cfg.mmlu_items} if cfg.mmlu_items else {})}


def evaluate_deployment(cfg: RepairConfig, agent: str, path: str, lora: str | None, run_id: str,
                        progress: bool = True) -> None:
    """One model of the proof (a GGUF, optionally with a GGUF LoRA over it) on the proof's held-out items, into
    ``cfg.results``; rows already there with the same identity are kept, so ``prove`` after this only compares.
    Energy is not recorded: the proof's models (and the mining) share the device."""
    limits = proof_limits(cfg)
    run_eval(EvalConfig(models=[f"{agent}={path}"], tasks=list(limits), task_limits=limits, seed=cfg.seed,
                        backend=cfg.backend, parallel=cfg.parallel, replicas=cfg.replicas, n_ctx=cfg.n_ctx,
                        n_threads=cfg.n_threads, progress=progress,
                        n_gpu_layers=cfg.n_gpu_layers, results=cfg.results, max_tokens=cfg.max_tokens or None,
                        run_id=run_id, data_dir=cfg.data_root, loras={agent: lora} if lora else {},
                        shared_device=True))  # deployments are proven at once on one device


def prove(cfg: RepairConfig, models: dict[str, tuple], run_id: str,
          log: Callable[[str], None] = print, progress: bool = True,
          ) -> tuple[dict[str, Comparison], dict[str, Comparison]]:
    """Evaluate the models (role -> (agent, path[, lora])) on held-out items, each deployment against before and
    reference; returns ({deployment: GSM8K comparison}, {deployment: MMLU comparison})."""
    limits = proof_limits(cfg)
    tasks = list(limits)
    log(f"evaluating {', '.join(models)} on {', '.join(f'{t} ({limits[t]})' for t in tasks)}")
    if not cfg.data_dir:
        log("note: no data_dir set: the loaders' default data is used (see the data_source column)")
    specs = [(agent, path, (lora or [None])[0]) for agent, path, *lora in models.values()]
    if cfg.backend == "llama-server" and len(specs) > 1:
        # one llama-server per model, all at once: a small model leaves most of a GPU idle
        with ThreadPoolExecutor(len(specs)) as pool:
            for future in [pool.submit(evaluate_deployment, cfg, *s, run_id, progress) for s in specs]:
                future.result()
    else:
        for s in specs:
            evaluate_deployment(cfg, *s, run_id, progress)
    table = ResultsTable(cfg.results)
    out: list[dict[str, Comparison]] = []
    for t in tasks:
        ids = [it.item_id for it in load_task(t).load_items(limits[t], cfg.seed, data_dir=cfg.data_root)]
        frame = outcomes(table, t, models, ids)
        out.append({d: compare(frame, t, cfg.n_bootstrap, cfg.seed, after=d) for d in models if d not in BASELINES})
    return out[0], (out[1] if len(out) > 1 else {})
