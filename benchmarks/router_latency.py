"""Router decision latency: compiled program vs uncompiled program vs TF-IDF baseline, in one run.

Prints decisions/s and p50/p95 decision latency and writes benchmarks/results/router_latency.{json,md}.

    .venv/bin/python benchmarks/router_latency.py --program benchmarks/results/router_cpu/programs/labels-labeled -n 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from tqdm import tqdm

from router.baselines import TfidfRouter
from router.labels import load_labeled, split_examples
from router.program import Router, RouterProgram, load_router, read_manifest
from router.router_config import RouterConfig
from router.router_lm import dspy_lm, resolve_router_model, start_router_server


def measure(name: str, router, texts: list[str]) -> dict:
    router.route(texts[0])  # warm-up
    lat, t0 = [], time.perf_counter()
    for text in tqdm(texts, desc=name, leave=False):
        lat.append(router.route(text).latency_ms)
    wall = time.perf_counter() - t0
    return {"router": name, "n": len(texts), "decisions_per_s": len(texts) / wall,
            "p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--program", required=True, help="compiled program dir")
    ap.add_argument("-n", type=int, default=20, help="decisions per router")
    ap.add_argument("--out", default="benchmarks/results/router_latency")
    args = ap.parse_args()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

    manifest = read_manifest(args.program)
    cfg = RouterConfig(**{k: v for k, v in manifest["config"].items() if k in RouterConfig.__dataclass_fields__})
    data = load_labeled(cfg)
    splits = split_examples(data.examples, cfg.split_seed, cfg.train_frac, cfg.dev_frac)
    texts = [ex.task for ex in (splits["test"] * (args.n // max(len(splits["test"]), 1) + 1))][: args.n]
    tfidf = TfidfRouter.load(Path(args.program) / "tfidf.json")
    model = resolve_router_model(manifest["router_model"])
    rows = [measure("tfidf-logreg", tfidf, texts)]
    with start_router_server(model, n_ctx=cfg.n_ctx, parallel=1) as engine:
        compiled = load_router(args.program, api_base=engine.url)
        uncompiled = Router(RouterProgram(data.swarm, max_chars=cfg.max_chars), data.swarm,
                            dspy_lm(engine.url, max_tokens=int(manifest["max_tokens"])))
        rows.append(measure(f"compiled ({manifest['optimizer']})", compiled, texts))
        rows.append(measure("uncompiled", uncompiled, texts))
    meta = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU (shared with other jobs)",
            "router_model": model.name, "program": args.program, "n": args.n}
    print(f"{'router':28} {'decisions/s':>12} {'p50 ms':>9} {'p95 ms':>9}")
    for r in rows:
        print(f"{r['router']:28} {r['decisions_per_s']:12.2f} {r['p50_ms']:9.2f} {r['p95_ms']:9.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    md = ["# Router decision latency", "", *(f"- {k}: {v}" for k, v in meta.items()), "",
          "| router | decisions/s | p50 ms | p95 ms |", "|---|---|---|---|"]
    md += [f"| {r['router']} | {r['decisions_per_s']:.2f} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
