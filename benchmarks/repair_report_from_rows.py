"""A repair run's report rebuilt from its results-table rows alone (no GGUF needed), e.g. after a device session
ended before the run's own comparison step.

Roles come from the agent names that ``benchmarks/gpu_campaign.py`` gives: before = ``STEM@QUANT``, reference =
``STEM@F16`` (or ``--reference``), and every ``STEM-<variant>-<lora|merged>@QUANT`` is a deployment. Each
deployment is compared with before and reference on the items all three answered (a deployment whose proof was
cut short is compared on fewer items, and the table says how many). Statistics: ``repair.prove.compare``.
Writes report.md, report.json and summary.json into ``--out``.

    python benchmarks/repair_report_from_rows.py RESULTS --stem qwen15-F16 --quant Q2_K --data-dir ../shared/data \\
        --pairs-summary pairs/pairs_summary.json --train-results DIR --out DIR
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from evals.task import load_task
from quantswarm.errors import QuantswarmError
from quantswarm.results import ResultsTable
from repair.pipeline import write_summary
from repair.prove import RepairReport, compare, outcomes, verdict_all
from repair.repair_config import RepairConfig

TASKS = ("gsm8k_cot_zeroshot", "mmlu_logprob")


def roles(table: ResultsTable, stem: str, quant: str, reference: str) -> dict[str, str]:
    """Role -> agent name, from the agents present in the table."""
    agents = set(table.read()["agent"])
    before = f"{stem}@{quant}"
    for need in (before, reference):
        if need not in agents:
            raise QuantswarmError(f"no rows of {need} in {table.path}; agents there: {', '.join(sorted(agents))}")
    pattern = re.compile(rf"{re.escape(stem)}-(\w+)-(lora|merged)@{re.escape(quant)}")
    deploys = {f"{m[1]}_{m[2]}": a for a in sorted(agents) if (m := pattern.fullmatch(a))}
    if not deploys:
        raise QuantswarmError(f"no deployment rows ({stem}-<variant>-<lora|merged>@{quant}) in {table.path}")
    return {"before": before, **deploys, "reference": reference}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--stem", required=True)
    ap.add_argument("--quant", required=True)
    ap.add_argument("--reference", default="", help="reference agent name (default STEM@F16)")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--gsm8k-items", type=int, default=1000)
    ap.add_argument("--mmlu-items", type=int, default=1000)
    ap.add_argument("--pairs-summary", type=Path)
    ap.add_argument("--train-results", type=Path,
                    help="folder of train_result-<variant>.json (and adapter-<variant>/repair_meta.json)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    try:
        table = ResultsTable(args.results)
        names = roles(table, args.stem, args.quant, args.reference or f"{args.stem}@F16")
        cfg = RepairConfig(agent=args.stem, quant=args.quant, data_dir=args.data_dir, out_dir=str(args.out),
                           eval_items=args.gsm8k_items, mmlu_items=args.mmlu_items)
        limits = {TASKS[0]: args.gsm8k_items, TASKS[1]: args.mmlu_items}
        found: dict[str, dict] = {t: {} for t in TASKS}
        for task, n in limits.items():
            ids = [it.item_id for it in load_task(task).load_items(n, cfg.seed, data_dir=cfg.data_root)]
            for role in names:
                if role in ("before", "reference"):
                    continue
                trio = {r: (names[r], None) for r in ("before", role, "reference")}
                frame = outcomes(table, task, trio, ids)
                found[task][role] = compare(frame, task, cfg.n_bootstrap, cfg.seed, after=role)
        training = {}
        for f in sorted(args.train_results.glob("train_result-*.json")) if args.train_results else []:
            variant = f.stem.removeprefix("train_result-")
            t = {k: v for k, v in json.loads(f.read_text()).items() if k != "history"}
            meta = args.train_results / f"adapter-{variant}" / "repair_meta.json"  # the variant's own settings
            if meta.exists():
                t |= {k: json.loads(meta.read_text())["config"][k] for k in ("loss_type", "beta", "learning_rate",
                                                                               "epochs")}
            training[variant] = t
        pairs = json.loads(args.pairs_summary.read_text()) if args.pairs_summary else {}
    except (QuantswarmError, OSError, ValueError) as exc:
        print(f"repair_report_from_rows: {exc}", file=sys.stderr)
        return 2
    report = RepairReport(agent=args.stem, quant=args.quant, models=names, gsm8k=found[TASKS[0]],
                          mmlu=found[TASKS[1]], pairs=pairs, training=training,
                          files={"results": str(args.results)}, verdict=verdict_all(found[TASKS[0]], found[TASKS[1]]))
    report.save(args.out)
    rows = table.read(agent=names["before"])
    write_summary(report, cfg, args.out / "summary.json", gpu=str(rows["device"].iloc[0]),
                  date=str(rows["timestamp"].min())[:10])
    print(report.verdict)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
