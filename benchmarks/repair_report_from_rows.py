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
SETTINGS = ("loss_type", "beta", "learning_rate", "epochs", "train_on")  # a variant's own, from its repair_meta


def roles(table: ResultsTable, stem: str, quant: str, reference: str) -> dict[str, str]:
    """Role -> agent name, from the agents present in the table."""
    agents = set(table.read()["agent"])
    before = f"{stem}@{quant}"
    for need in (before, reference):
        if need not in agents:
            raise QuantswarmError(f"no rows of {need} in {table.path}; agents there: {', '.join(sorted(agents))}")
    pattern = re.compile(rf"{re.escape(stem)}-(.+)-(lora|merged)@{re.escape(quant)}")
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
        return build(args)
    except (QuantswarmError, OSError, ValueError, KeyError, TypeError) as exc:
        print(f"repair_report_from_rows: {f'missing key {exc}' if isinstance(exc, KeyError) else exc}",
              file=sys.stderr)
        return 2


def _json_object(path: Path, what: str) -> dict:
    value = json.loads(path.read_text())
    if not isinstance(value, dict):
        raise QuantswarmError(f"{path}: {what} must be a JSON object, not {type(value).__name__}")
    return value


def training_settings(folder: Path) -> dict[str, dict]:
    """Variant -> its train result (history dropped) and its own settings (adapter-<variant>/repair_meta.json)."""
    if not folder.is_dir():
        raise QuantswarmError(f"--train-results {folder}: no such folder")
    training = {}
    for f in sorted(folder.glob("train_result-*.json")):
        variant = f.stem.removeprefix("train_result-")
        t = {k: v for k, v in _json_object(f, "a train result").items() if k != "history"}
        meta = folder / f"adapter-{variant}" / "repair_meta.json"
        if meta.exists():
            config = _json_object(meta, "repair_meta").get("config")
            missing = [k for k in SETTINGS if not isinstance(config, dict) or k not in config]
            if missing:
                raise QuantswarmError(f"{meta}: config lacks {', '.join(missing)}")
            t |= {k: config[k] for k in SETTINGS}
        training[variant] = t
    if not training:
        raise QuantswarmError(f"--train-results {folder}: no train_result-<variant>.json there")
    return training


def build(args: argparse.Namespace) -> int:
    table = ResultsTable(args.results)
    if not table.parts():
        raise QuantswarmError(f"{args.results}: no results table (Parquet parts) there")
    reference = args.reference or f"{args.stem}@F16"
    names = roles(table, args.stem, args.quant, reference)
    if reference == names["before"]:
        raise QuantswarmError(f"--reference {reference} is the degraded agent itself")
    training = training_settings(args.train_results) if args.train_results else {}
    pairs = _json_object(args.pairs_summary, "a pairs summary") if args.pairs_summary else {}
    train_on = {t.get("train_on") for t in training.values()} - {None}
    cfg = RepairConfig(agent=args.stem, quant=args.quant, data_dir=args.data_dir, out_dir=str(args.out),
                       eval_items=args.gsm8k_items, mmlu_items=args.mmlu_items,
                       **({"train_on": train_on.pop()} if len(train_on) == 1 else {}))
    limits = {TASKS[0]: args.gsm8k_items, TASKS[1]: args.mmlu_items}
    found: dict[str, dict] = {t: {} for t in TASKS}
    for task, n in limits.items():
        ids = [it.item_id for it in load_task(task).load_items(n, cfg.seed, data_dir=cfg.data_root)]
        base = outcomes(table, task, {r: (names[r], None) for r in ("before", "reference")}, ids)
        if len(base) < n:
            raise QuantswarmError(f"before and reference answered {len(base)} of the {n} {task} items drawn from "
                                  f"{args.data_dir}: is it the data the rows were made from (their data_source: "
                                  f"{sorted(set(table.read(agent=names['before'])['data_source']))[:3]})?")
        for role in names:
            if role not in ("before", "reference"):
                trio = {r: (names[r], None) for r in ("before", role, "reference")}
                found[task][role] = compare(outcomes(table, task, trio, ids), task, cfg.n_bootstrap, cfg.seed,
                                            after=role)
    report = RepairReport(agent=args.stem, quant=args.quant, models=names, gsm8k=found[TASKS[0]],
                          mmlu=found[TASKS[1]], pairs=pairs, training=training,
                          files={"results": str(args.results)}, verdict=verdict_all(found[TASKS[0]], found[TASKS[1]]))
    report.save(args.out)
    rows = table.read(agent=names["before"])
    write_summary(report, cfg, args.out / "summary.json", gpu=", ".join(sorted(set(rows["device"]))),
                  date=str(rows["timestamp"].min())[:10], settings_from_cfg=False,
                  data_dir=", ".join(sorted({str(Path(p).parent.parent) for p in rows["data_source"]})))
    print(report.verdict)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
