"""Router decisions under concurrent load: where does the time of one decision go?

The H200 serving campaign measured 397 ms per routing decision at 5 clients and 680 ms at 20, against 66 ms for the
same program alone. This separates the router LM's own time from the time spent in Python around it, in one run:
for each concurrency C, C threads route the same held-out tasks (the swarm's ``asyncio.to_thread`` does the same)
through

* ``dspy``: the compiled program (DSPy ChatAdapter + litellm), as the gateway and the bus worker call it;
* ``http``: the very chat requests that program sent (captured from the LM's history), posted straight to the same
  llama-server with httpx — the router LM's own latency at that concurrency, without DSPy or litellm.

``dspy − http`` at equal C is the Python overhead per decision, and how it grows with C says whether threads queue
on the interpreter (the GIL) rather than on the LM. The router LM runs in its own llama-server (``--parallel``
slots, like the swarm's router agent) with nothing else on it.

Writes ``summary.json`` (per C and path: p50/p95/mean ms, decisions/s) and ``table.md`` to ``--out``.

    .venv/bin/python benchmarks/router_under_load.py \\
        --program benchmarks/results/gpu/2026-11-30-h200-campaign/router-programs/labeled-agent-name@smollm2 \\
        --labels benchmarks/results/gpu/2026-11-30-h200-campaign/labels.jsonl --n 40 --concurrency 1,5,20 \\
        --out runs/router-under-load
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def stats(lat_ms: list[float], wall_s: float) -> dict:
    a = np.array(lat_ms)
    return {"n": len(lat_ms), "p50_ms": round(float(np.percentile(a, 50)), 1),
            "p95_ms": round(float(np.percentile(a, 95)), 1), "mean_ms": round(float(a.mean()), 1),
            "decisions_per_s": round(len(lat_ms) / wall_s, 2)}


def run_at(c: int, fn, items: list) -> dict:
    """``fn`` over ``items`` with ``c`` threads; per-call wall ms and the block's decisions/s."""
    def timed(x) -> float:
        t = time.perf_counter()
        fn(x)
        return (time.perf_counter() - t) * 1000

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=c) as pool:
        lat = list(pool.map(timed, items))
    return stats(lat, time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--program", required=True, help="compiled router program folder")
    ap.add_argument("--labels", required=True, help="the router's labels JSONL (its held-out tasks are routed)")
    ap.add_argument("--data-dir", help="benchmark data folder (default: $QUANTSWARM_DATA, else shipped items)")
    ap.add_argument("--n", type=int, default=40, help="decisions per concurrency and path")
    ap.add_argument("--concurrency", type=_ints, default=[1, 5, 20], help="threads deciding at once, e.g. 1,5,20")
    ap.add_argument("--parallel", type=int, default=8, help="slots of the router LM's llama-server")
    ap.add_argument("--n-gpu-layers", type=int, default=-1)
    ap.add_argument("--out", default="runs/router-under-load")
    args = ap.parse_args(argv)
    if args.n < 1 or not args.concurrency or min(args.concurrency) < 1 or args.parallel < 1:
        ap.error("--n, --parallel and every --concurrency value must be >= 1")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

    from quantswarm.energy import device_label
    from router.program import load_router, manifest_router_model, read_manifest
    from router.router_lm import start_router_server
    from serving.routed_workload import routed_workload

    manifest = read_manifest(args.program)
    items = routed_workload(args.labels, args.program, args.n, seed=0, data_dir=args.data_dir,
                            allow_code_execution=True)
    texts = [next(m["content"] for m in reversed(it.messages) if m["role"] == "user") for it in items]
    model = manifest_router_model(manifest)
    rows = []
    with start_router_server(model, n_ctx=4096 * args.parallel, parallel=args.parallel,
                             n_gpu_layers=args.n_gpu_layers) as engine:
        router = load_router(args.program, api_base=engine.url)
        router.route(texts[0])  # warm-up
        lm = router.lm
        start = len(lm.history)
        for t in texts:  # the requests the program sends, captured once, sequentially
            router.route(t)
        bodies = []
        for h in lm.history[start:]:
            kw = dict(h.get("kwargs") or {})
            kw.update(kw.pop("extra_body", None) or {})  # litellm sends extra_body's keys (the grammar) top-level
            bodies.append({"messages": h["messages"], **{k: v for k, v in kw.items()
                                                          if k in ("max_tokens", "temperature", "grammar", "stop")}})
        if len(bodies) != len(texts):
            raise SystemExit(f"captured {len(bodies)} LM calls for {len(texts)} decisions; cannot replay them")
        client = httpx.Client(base_url=engine.url, timeout=120, limits=httpx.Limits(max_connections=64))

        def post(body: dict) -> None:
            r = client.post("/v1/chat/completions", json=body)
            r.raise_for_status()

        for c in args.concurrency:
            for path, fn, xs in (("dspy", router.route, texts), ("http", post, bodies)):
                r = {"concurrency": c, "path": path, **run_at(c, fn, xs)}
                rows.append(r)
                print(f"C={c:3d} {path:5s} p50 {r['p50_ms']:8.1f} ms  p95 {r['p95_ms']:8.1f} ms  "
                      f"{r['decisions_per_s']:7.2f}/s", flush=True)
        client.close()
    by = {(r["concurrency"], r["path"]): r for r in rows}
    table = [{"C": c, "dspy p50 / p95 ms": f"{by[c, 'dspy']['p50_ms']} / {by[c, 'dspy']['p95_ms']}",
              "http p50 / p95 ms": f"{by[c, 'http']['p50_ms']} / {by[c, 'http']['p95_ms']}",
              "Python overhead (mean dspy - mean http) ms": round(by[c, "dspy"]["mean_ms"] - by[c, "http"]["mean_ms"],
                                                                  1)}
             for c in args.concurrency]
    meta = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "device": device_label(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores", "program": args.program,
            "router_model": model.name, "parallel": args.parallel, "n": args.n}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps({"meta": meta, "rows": rows, "table": table}, indent=2))
    from quantswarm.text_table import format_table, markdown_table

    (out / "table.md").write_text("# Router decisions under concurrent load\n\n" + "\n".join(
        f"- {k}: {v}" for k, v in meta.items()) + "\n\n" + markdown_table(table))
    print(format_table(table))
    print(f"-> {out / 'summary.json'}, {out / 'table.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
